"""What `plan` shows: trials per stage, resources, packing on the cluster, and a time (and cost)
estimate from declared trial times or the measured ones of earlier studies."""

from __future__ import annotations

import math
import statistics

from rich.console import Console
from rich.table import Table

from orchestrator.planning import race_rule
from orchestrator.planning.costs import NO_PRICES, Prices
from orchestrator.planning.expand import Plan, StagePlan
from orchestrator.planning.resources import ClusterShape, concurrency, effective_resources, trial_charge
from orchestrator.storage.records import load_records, open_study

SHOWN_ROWS = 50  # trials listed per stage in the terminal


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def measured_minutes(history: list[str]) -> dict[str, float]:
    """Median wall time of successful trials per trainable, in minutes, from earlier studies."""
    durations: dict[str, list[float]] = {}
    for run in history:
        for record in load_records(open_study(run)).values():
            for t in record.get("trials", {}).values():
                if t.get("status") == "done" and t.get("duration_s"):
                    durations.setdefault(record["trainable"], []).append(t["duration_s"] / 60)
    return {k: statistics.median(v) for k, v in durations.items()}


def plan_rows(
    plan: Plan, shape: ClusterShape, measured: dict[str, float] | None = None, prices: Prices = NO_PRICES
) -> dict:
    """Everything `plan` shows, as plain data (`plan --json`).

    Time per trial: the stage's `expected_trial_minutes`, else the median measured in earlier
    studies of the same trainable (`--history`)."""
    out = {
        "study": plan.study.name,
        "cluster": {
            "cpus": shape.cpus,
            "gpus": shape.gpus,
            "name": shape.name,
            "nodes": [list(n) for n in shape.node_list],
        },
        "stages": [_stage_row(plan.stages[name], shape, measured or {}, prices) for name in plan.order],
    }
    est = [s["estimate"] for s in out["stages"]]
    if est and all(est):
        out["estimate"] = {
            "wall_minutes": sum(e["wall_minutes"] for e in est),
            "gpu_hours": sum(e["gpu_hours"] for e in est),
            "cpu_hours": sum(e["cpu_hours"] for e in est),
            "cost_usd": sum(e["cost_usd"] for e in est) if prices.priced else None,
        }
    return out


def _stage_row(sp: StagePlan, shape: ClusterShape, measured: dict[str, float], prices: Prices) -> dict:
    """One stage of `plan_rows`: its trials, resources, packing and estimate."""
    res, note = effective_resources(sp.resources, shape)
    conc = min(concurrency(res, shape, sp.stage.max_concurrent), sp.num_trials)
    waves = math.ceil(sp.num_trials / conc) if conc else None
    minutes = sp.stage.expected_trial_minutes or measured.get(sp.stage.trainable)
    source = "declared" if sp.stage.expected_trial_minutes else "measured" if minutes else None
    charges = [trial_charge(res, sp.trainable, t.config) for t in sp.trials]
    estimate = None
    if minutes and waves:
        # every trial charged what it holds and starts (a trial's Ray Data actors too), as the
        # budget charges it when it runs; a planned row stands for `per_row` trials (fan-out,
        # search samples)
        per_row = sp.num_trials / len(sp.trials) if sp.trials else 0.0
        gpu_hours = sum(c["gpu"] for c in charges) * per_row * minutes / 60
        cpu_hours = sum(c["cpu"] for c in charges) * per_row * minutes / 60
        estimate = {
            "wall_minutes": waves * minutes,
            "gpu_hours": gpu_hours,
            "cpu_hours": cpu_hours,
            "trial_minutes": minutes,
            "source": source,
            "cost_usd": prices.usd(gpu_hours, cpu_hours),
        }
    rows = [
        {
            "trial_id": t.id,
            "name": t.name,
            "variant": t.variant,
            "seed": t.seed,
            "differs": _differs(t, sp),
            "charged": charge,
        }
        for t, charge in zip(sp.trials, charges)
    ]
    return {
        "stage": sp.name,
        "trainable": sp.stage.trainable,
        "needs": sp.stage.needs,
        "trials": sp.num_trials,
        "resources": res,
        "started": _started(res, charges),
        "note": note,
        "concurrent": conc,
        "waves": waves,
        "search": sp.describe_search(),
        "num_samples": sp.stage.search.num_samples if sp.stage.search else 1,
        "select": sp.stage.select.model_dump() if sp.stage.select else None,
        "race": sp.stage.race.model_dump() if sp.stage.race else None,
        "gates": [g.describe() for g in sp.stage.gates],
        "estimate": estimate,
        "rows": rows,
    }


def _started(res: dict, charges: list[dict]) -> dict | None:
    """What the stage's trials start besides themselves, per trial at most (None: nothing)."""
    extra = {k: max((c[k] - res[k] for c in charges), default=0.0) for k in ("cpu", "gpu")}
    return extra if extra["cpu"] > 1e-9 or extra["gpu"] > 1e-9 else None


def _differs(trial, sp: StagePlan) -> dict:
    """The trial's values of the config keys that differ between the stage's trials."""
    return {k: trial.config.get(k) for k in sp.differing}


def render_plan(plan: Plan, shape: ClusterShape, data: dict, console: Console) -> None:
    """Print the plan from its data (`plan_rows`)."""
    where = f"cluster {shape.name} ({len(shape.node_list)} node(s), fully scaled): " if shape.name else "a cluster of "
    console.print(
        f"[bold]study {data['study']}[/]: {plan.num_trials} trials on {where}{shape.cpus:g} CPUs, {shape.gpus:g} GPUs"
    )
    for stage in data["stages"]:
        _render_stage(stage, console)
    if data.get("estimate"):
        e = data["estimate"]
        cost = f", ${e['cost_usd']:.2f}" if e.get("cost_usd") is not None else ""
        console.print(
            f"\n[bold]total estimate[/]: {e['wall_minutes']:.1f} min wall, {e['gpu_hours']:.2f} GPU-hours, "
            f"{e['cpu_hours']:.2f} CPU-hours{cost}"
        )
    elif plan.num_trials:
        console.print(
            "\n[dim]time estimate: set `expected_trial_minutes` on a stage, or pass `--history RUN_DIR` "
            "of an earlier study of the same trainable[/]"
        )


def _render_stage(stage: dict, console: Console) -> None:
    """One stage of `plan`: its header, notes, search, selection, gates, trials and estimate."""
    res = stage["resources"]
    workers = f" ({res['workers']} data-parallel workers)" if res.get("workers", 1) > 1 else ""
    needs = f", needs {', '.join(stage['needs'])}" if stage["needs"] else ""
    console.print(
        f"\n[bold]stage {stage['stage']}[/] ({stage['trainable']}{needs}): {stage['trials']} trials, "
        f"{res['cpu']:g} CPU + {res['gpu']:g} GPU each{workers}, {stage['concurrent']} at once, "
        f"{stage['waves']} wave(s)"
    )
    if stage["note"]:
        console.print(f"  [yellow]note[/]: {stage['note']}")
    if stage["started"]:
        started = stage["started"]
        console.print(
            f"  each trial also starts up to {started['cpu']:g} CPU + {started['gpu']:g} GPU of actors "
            "(charged for its whole run, in the estimate and the budget)"
        )
    if stage["search"]:
        console.print(f"  search x{stage['num_samples']}: " + ", ".join(f"{k}={v}" for k, v in stage["search"].items()))
    if stage["select"]:
        console.print(f"  best = {stage['select']['mode']} {stage['select']['metric']}")
    if stage.get("race"):
        r = stage["race"]
        console.print(
            f"  race: groups of seeds compared from epoch {r['first']} (x{r['factor']:g} per rung), "
            f"{race_rule.test_name(r['test'])}, alpha {r['alpha']:g} over all rungs, "
            f"at least {r['min_seeds']} paired seeds; the estimate assumes every trial runs to its end"
        )
    for gate in stage["gates"]:
        console.print(f"  gate: {gate} (stages that need {stage['stage']} run only if it holds)")
    table = Table(header_style="bold", box=None, pad_edge=False)
    differs = list(stage["rows"][0]["differs"]) if stage["rows"] else []
    for col in ["trial id", "variant", "seed", *differs]:
        table.add_column(col)
    for row in stage["rows"][:SHOWN_ROWS]:
        cells = [_fmt(row["differs"].get(k)) for k in differs]
        table.add_row(row["trial_id"], row["variant"] or "-", str(row["seed"]), *cells)
    console.print(table)
    if len(stage["rows"]) > SHOWN_ROWS:  # a terminal table of 20,000 rows takes rich ~12 s to lay out
        console.print(f"  ... and {len(stage['rows']) - SHOWN_ROWS:,} more trials (`plan --json` lists every one)")
    if stage["estimate"]:
        e = stage["estimate"]
        cost = f", ${e['cost_usd']:.2f}" if e.get("cost_usd") is not None else ""
        console.print(
            f"  estimate: {e['wall_minutes']:.1f} min wall, {e['gpu_hours']:.2f} GPU-hours{cost} "
            f"({e['trial_minutes']:.2f} min per trial, {e['source']})"
        )
