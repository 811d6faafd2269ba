"""References resolved against the records of finished stages: which upstream trials a reference
selects (best, top[K], all, trials[VARIANT]), the values it takes from them, and a stage's
trials once its references are replaced (the syntax is in `orchestrator.study.references`)."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

from orchestrator.planning.expand import StagePlan
from orchestrator.planning.inputs import resolve_inputs
from orchestrator.planning.trials import TrialSpec, trial_id
from orchestrator.study.references import Ref, RefError, parse, set_path, walk

SUCCESS = "done"


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
            raise RefError(f"{ref.text}: trial {trial['name']} has no config key {ref.field[len('config.') :]!r}")
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
                    raise RefError(
                        f"{ref.text}: none of the {len(ok)} successful trial(s) of {what}stage "
                        f"{ref.stage!r} reported a finite value of its select metric {select['metric']!r}"
                    )
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
            label = (
                ref.stage
                if ref.selector == "best"
                else f"{ref.stage}.{ref.selector}"
                + (f"[{ref.k}]" if ref.k else f"[{ref.variant}]" if ref.variant else "")
            )
            lineage[label] = {
                "stage": ref.stage,
                "trial_id": trial["trial_id"],
                "trial": trial["name"],
                # the checkpoint this trial used: the newest one for `.latest_checkpoint`
                "checkpoint": trial.get(ref.field if ref.field == "latest_checkpoint" else "checkpoint"),
            }
        out.append((resolved, lineage, id_config))
    return out


def resolve_spec(spec: TrialSpec, records: dict[str, dict], module, study_dir: Path) -> list[TrialSpec]:
    """One planned trial with its references replaced by upstream results: one trial per
    combination of fan-out choices (raises RefError)."""
    out = []
    for resolved, lineage, id_config in expand(spec.config, records):
        tid = trial_id(spec.trainable, id_config, spec.seed)
        out.append(
            TrialSpec(
                spec.stage,
                spec.trainable,
                spec.variant,
                spec.seed,
                resolved,
                spec.grid,
                tid,
                resolve_inputs(resolved, module, study_dir),
                lineage,
            )
        )
    return out


def check_distinct(new: TrialSpec, seen: dict[str, TrialSpec]) -> None:
    """Two trials of a stage that are one trial once references are resolved: an error (e.g.
    ${pre.best} in one variant and ${pre.top[1]} in another: the same upstream trial, so the same
    config and seed; two trials in one folder would overwrite each other's checkpoints)."""
    if new.id in seen:
        used = ", ".join(sorted(f"{v['trial']}" for v in new.upstream.values())) or "the same inputs"
        raise RefError(
            f"trials {seen[new.id].name} and {new.name} are the same trial once references are "
            f"resolved (same config and seed; both use {used}); make the variants differ"
        )
    seen[new.id] = new


def resolve_stage(sp: StagePlan, records: dict[str, dict], study_dir: Path) -> StagePlan:
    """The stage with its references replaced by upstream results (raises RefError)."""
    trials: list[TrialSpec] = []
    seen: dict[str, TrialSpec] = {}
    for spec in sp.trials:
        for new in resolve_spec(spec, records, sp.trainable.settings, study_dir):
            check_distinct(new, seen)
            trials.append(new)
    return dataclasses.replace(sp, trials=trials, fan_out=1, resolved=True)
