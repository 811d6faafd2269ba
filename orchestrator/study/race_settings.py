"""A stage's `race:` setting: race the stage's groups of seeds and stop the ones that are clearly
worse (the rule: `orchestrator.planning.race_rule`; the README's *Racing over seeds*)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Race(BaseModel):
    """`race: {first: 10, factor: 2, alpha: 0.05, min_seeds: 3, test: t}`"""

    model_config = ConfigDict(extra="forbid")

    first: int = Field(ge=1, description="The first rung: the reported iteration (epoch) of the first comparison.")
    factor: float = Field(2.0, gt=1, description="Rungs at first, first x factor, first x factor^2, ...")
    alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="The race's one-sided error level over all its rungs: the chance that it eliminates a group "
        "that is not worse. Rung k tests at alpha / (zeta(3) k^3), which sums to alpha.",
    )
    min_seeds: int = Field(3, ge=2, description="A group is never eliminated on fewer paired seeds than this.")
    test: Literal["t", "wilcoxon"] = Field(
        "t", description="t: the seed-paired one-sided t-test; wilcoxon: the signed-rank test (needs more seeds)."
    )
