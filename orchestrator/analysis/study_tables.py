"""All tables of a study from its stored records: trials, seed aggregates, paired comparisons."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from orchestrator.analysis import seed_stats, trials_table


@dataclass
class StudyTables:
    trials: pd.DataFrame
    records: dict[str, dict]
    aggregated: dict[str, pd.DataFrame] = field(default_factory=dict)
    paired: dict[str, pd.DataFrame] = field(default_factory=dict)
    budget: str | None = None  # spent against the study's cap (planning.budget.budget_text)

    @property
    def selects(self) -> dict[str, dict]:
        return {name: r.get("select") for name, r in self.records.items() if r.get("select")}


def build(
    records: dict[str, dict],
    metrics: list[str] | None = None,
    group_by: list[str] | None = None,
    baseline: str | None = None,
    stage: str | None = None,
    within_seed: str | None = None,
) -> StudyTables:
    """Every table of the chosen stages; `within_seed` overrides each stage's own setting."""
    chosen = {n: r for n, r in records.items() if r and (stage is None or n == stage)}
    trials = trials_table.build_table(list(chosen.values()))
    out = StudyTables(trials, chosen)
    for name, record in chosen.items():
        rows = trials[trials["stage"] == name] if not trials.empty else trials
        if rows.empty:
            continue
        keep = {"stage", "variant", "seed", "status"}  # keys stay even when empty (no variants)
        rows = rows[[c for c in rows.columns if c in keep or rows[c].notna().any()]]
        stage_metrics = [m for m in (metrics or seed_stats.default_metrics(rows)) if m in rows.columns]
        if metrics and not stage_metrics:
            continue
        how = within_seed or record.get("within_seed") or "separate"
        agg = seed_stats.aggregate(rows, stage_metrics, group_by, how)
        if agg.empty:  # no successful trial in this stage: nothing to aggregate or compare
            continue
        out.aggregated[name] = agg
        base = baseline or (record.get("compare") or {}).get("baseline")
        if base and base in set(rows["variant"].dropna()):
            out.paired[name] = seed_stats.paired(rows, base, stage_metrics, group_by, how)
    return out
