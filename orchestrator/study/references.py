"""References from one stage's config to an earlier stage's results, resolved at run time.

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

import copy
import math
import re
from dataclasses import dataclass
from typing import Any, Iterator

REF_RE = re.compile(
    r"^\$\{(?P<stage>[A-Za-z0-9][A-Za-z0-9_.-]*?)\."
    r"(?P<selector>best|all|top\[(?P<k>[0-9]+)\]|trials\[(?P<variant>[A-Za-z0-9][A-Za-z0-9_.-]*)\])"
    r"(?:\.(?P<field>checkpoint|latest_checkpoint|trial_id|metric|config\.[A-Za-z0-9_][A-Za-z0-9_.]*))?\}$"
)
SUCCESS = "done"


@dataclass(frozen=True)
class Ref:
    text: str
    stage: str
    selector: str          # best | all | top | trials
    k: int | None
    variant: str | None
    field: str             # checkpoint | latest_checkpoint | trial_id | metric | config.KEY

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
    return Ref(value, m["stage"], selector, int(m["k"]) if m["k"] else None, m["variant"],
               m["field"] or "checkpoint")


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


def successful(record: dict) -> list[dict]:
    return [t for t in record["trials"].values() if t["status"] == SUCCESS]


def ranked(record: dict, trials: list[dict]) -> list[dict]:
    """Best first by the select metric; trials without a finite value are left out (NaN sorts
    arbitrarily); equal values in name order, so a ranking never depends on finishing order."""
    select = record.get("select")
    if not select:
        return sorted(trials, key=lambda t: t["name"])
    sign = -1.0 if select["mode"] == "max" else 1.0
    scored = [t for t in trials if isinstance(t.get("best"), (int, float)) and math.isfinite(t["best"])]
    return sorted(scored, key=lambda t: (sign * t["best"], t["name"]))


def candidates(ref: Ref, record: dict) -> list[dict]:
    """The upstream trials a reference resolves to (one, or several for fan-out)."""
    ok = successful(record)
    if ref.selector == "all":
        return sorted(ok, key=lambda t: t["name"])
    if ref.selector == "trials":
        ok = [t for t in ok if t["variant"] == ref.variant]
    ordered = ranked(record, ok)
    if ref.selector == "top":
        return ordered[: ref.k]
    return ordered[:1]


def field_value(ref: Ref, trial: dict) -> Any:
    if ref.field in ("checkpoint", "latest_checkpoint"):
        if not trial.get(ref.field):
            raise RefError(f"{ref.text}: trial {trial['name']} has no checkpoint")
        return trial[ref.field]
    if ref.field == "trial_id":
        return trial["trial_id"]
    if ref.field == "metric":
        return trial.get("best")
    value: Any = dict(trial.get("config", {}), seed=trial.get("seed"))
    for part in ref.field.split(".")[1:]:
        if not isinstance(value, dict) or part not in value:
            raise RefError(f"{ref.text}: trial {trial['name']} has no config key {ref.field[len('config.'):]!r}")
        value = value[part]
    return value


def expand(config: dict, records: dict[str, dict]) -> list[tuple[dict, dict, dict]]:
    """Resolve every reference in `config`.

    Returns one (resolved config, lineage, id-config) per combination of fan-out choices:
    lineage = {group label: {stage, trial_id, trial, checkpoint}}; id-config is the config with
    each reference replaced by `ref:<upstream trial id>:<field>` (what the trial id hashes).
    Raises RefError when an upstream stage has no successful trial to offer.
    """
    refs = [(path, parse(text)) for path, text in walk(config)]
    if not refs:
        return [(copy.deepcopy(config), {}, copy.deepcopy(config))]
    groups: dict[tuple, list[dict]] = {}
    for _, ref in refs:
        if ref.group not in groups:
            found = candidates(ref, records[ref.stage])
            if not found:
                what = f"variant {ref.variant!r} of " if ref.variant else ""
                ok = [t for t in successful(records[ref.stage]) if not ref.variant or t["variant"] == ref.variant]
                select = records[ref.stage].get("select")
                if ok and select:
                    raise RefError(f"{ref.text}: none of the {len(ok)} successful trial(s) of {what}stage "
                                   f"{ref.stage!r} reported a finite value of its select metric {select['metric']!r}")
                raise RefError(f"{ref.text}: {what}stage {ref.stage!r} has no successful trial")
            groups[ref.group] = found
    combos: list[dict[tuple, dict]] = [{}]
    for group, trials in groups.items():
        combos = [{**c, group: t} for c in combos for t in trials]
    out = []
    for combo in combos:
        resolved, id_config = copy.deepcopy(config), copy.deepcopy(config)
        lineage = {}
        for path, ref in refs:
            trial = combo[ref.group]
            set_path(resolved, path, field_value(ref, trial))
            set_path(id_config, path, f"ref:{trial['trial_id']}:{ref.field}")
            label = ref.stage if ref.selector == "best" else f"{ref.stage}.{ref.selector}" + (
                f"[{ref.k}]" if ref.k else f"[{ref.variant}]" if ref.variant else "")
            lineage[label] = {"stage": ref.stage, "trial_id": trial["trial_id"], "trial": trial["name"],
                              "checkpoint": trial.get("checkpoint")}
        out.append((resolved, lineage, id_config))
    return out
