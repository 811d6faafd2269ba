"""The syntax of references from one stage's config to an earlier stage's results (resolved when
that stage has finished, by `orchestrator.planning.references`).

A reference is a whole string value `${STAGE.SELECTOR[.FIELD]}`:

| selector | trials | needs `select` on STAGE |
|---|---|---|
| `best` | the stage's best successful trial | yes |
| `trials[VARIANT]` | the best successful trial of that variant (the only one if one seed) | if several |
| `top[K]` | fan-out: one downstream trial per each of the K best | yes |
| `all` | fan-out: one downstream trial per successful trial | no |

FIELD is `checkpoint` (default: the checkpoint of the trial's best epoch by the select metric;
its latest one when the stage has no `select`), `latest_checkpoint` (the newest, what a resumed
trial would continue from), `trial_id`, `metric` (its best value of the select metric over
every epoch) or `config.KEY` (a value of its resolved config).
Fan-out references to the same STAGE and selector in one config move together (the encoder
and its hidden size come from the same trial); different ones are crossed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

REF_RE = re.compile(
    r"^\$\{(?P<stage>[A-Za-z0-9][A-Za-z0-9_.-]*?)\."
    r"(?P<selector>best|all|top\[(?P<k>[0-9]+)\]|trials\[(?P<variant>[A-Za-z0-9][A-Za-z0-9_.-]*)\])"
    r"(?:\.(?P<field>checkpoint|latest_checkpoint|trial_id|metric|config\.[A-Za-z0-9_][A-Za-z0-9_.]*))?\}$"
)


@dataclass(frozen=True)
class Ref:
    text: str
    stage: str
    selector: str  # best | all | top | trials
    k: int | None
    variant: str | None
    field: str  # checkpoint | latest_checkpoint | trial_id | metric | config.KEY

    @property
    def fan_out(self) -> bool:
        return self.selector in ("all", "top")

    @property
    def group(self) -> tuple:
        """References with the same group resolve from the same upstream trial."""
        return (self.stage, self.selector, self.k, self.variant)


class RefError(ValueError):
    pass


def looks_like_ref(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def parse(value: str) -> Ref:
    m = REF_RE.match(value.strip())
    if not m:
        raise RefError(
            f"bad reference {value!r}: expected ${{STAGE.best|all|top[K]|trials[VARIANT]"
            "[.checkpoint|.latest_checkpoint|.trial_id|.metric|.config.KEY]}} as the whole value"
        )
    selector = m["selector"].split("[")[0]
    return Ref(value, m["stage"], selector, int(m["k"]) if m["k"] else None, m["variant"], m["field"] or "checkpoint")


def walk(config: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """(key path, string) for every string in a nested config that looks like a reference."""
    if isinstance(config, dict):
        for k, v in config.items():
            yield from walk(v, path + (k,))
    elif isinstance(config, list):
        for i, v in enumerate(config):
            yield from walk(v, path + (i,))
    elif looks_like_ref(config):
        yield path, config


def set_path(config: dict, path: tuple, value: Any) -> None:
    target = config
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
