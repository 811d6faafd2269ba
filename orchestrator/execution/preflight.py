"""`preflight FILE`: run every trial of a study for a few steps on tiny data, on this machine's
CPU, before any GPU-hour is spent (the seeds' "test everything before expensive training").

Each trial runs in this process, without Ray, through its trainable's `train` with a
`LocalSession`, on a config shrunk by the trainable's `preflight(config, workdir)` hook in
`trainables/inputs/<name>.py` (e.g. one epoch on the first windows; without a hook: one epoch
if the trainable has `epochs`). Stages run in dependency order and references resolve to the
pre-flight results of upstream stages, so a chain is exercised end to end (an encoder produced
by pretraining is loaded by fine-tuning). Sampled search keys take a representative value.

Data files that are not on this machine (they may live on the cluster or in S3) are stood in
for by synthetic data of the same shape (OHLC windows of the same length, text triples, BEIR
folders), and hub models by the offline MiniLM, and the outcome says so; `validate` on the
cluster checks the real files.

A failing trial is reported by name with its error in one line; the traceback goes to
`<workdir>/<stage>/<trial id>/error.txt`. Exit code 0 when every trial passed, 1 otherwise.
"""

from __future__ import annotations

import copy
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

import trainables
from orchestrator.planning.expand import Plan, StagePlan
from orchestrator.planning.references import resolve_stage, successful
from orchestrator.planning.trials import deep_merge
from orchestrator.study.references import RefError
from orchestrator.study.search_space import representative


@dataclass
class Outcome:
    stage: str
    name: str
    trial_id: str
    ok: bool
    seconds: float
    detail: str


def shrink(trainable: trainables.Trainable, config: dict, workdir: Path) -> dict:
    """The trial's config for a pre-flight run: its trainable's `preflight` overrides, or one
    epoch when it has `epochs`."""
    hook = getattr(trainable.inputs, "preflight", None)
    if hook is not None:
        return {**config, **hook(config, workdir)}
    model = trainable.config_model
    if "epochs" in (model.model_fields if model is not None else config):
        return {**config, "epochs": 1}
    return dict(config)


def _is_stand_in(before, after) -> bool:
    """A file input replaced by synthetic data (files not on this machine)."""
    if isinstance(before, list) and isinstance(after, list):
        return any(_is_stand_in(b, a) for b, a in zip(before, after))
    from trainables.configs.contrastive_isotropy import OFFLINE_MINILM

    return (
        isinstance(before, str)
        and isinstance(after, str)
        and before != after
        and (after.startswith("synthetic:") or after == OFFLINE_MINILM)
        and not before.startswith("synthetic:")
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def run_trial(sp: StagePlan, spec, workdir: Path) -> tuple[Outcome, dict | None]:
    from trainables.runtime.session import LocalSession

    folder = workdir / sp.name / spec.id
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(copy.deepcopy(spec.run_config or spec.config), seed=spec.seed)
    if sp.search_space:
        config = deep_merge(config, {k: representative(v) for k, v in sp.search_space.items()})
    started = time.perf_counter()
    try:
        before = dict(config)
        config = shrink(sp.trainable, config, folder)
        stand_in = sorted(k for k, v in config.items() if _is_stand_in(before.get(k), v))
        select = sp.stage.select.model_dump() if sp.stage.select else None
        session = LocalSession(folder, checkpoint_every=1, keep=1, select=select)
        sp.trainable.recipe().train(config, session)
    except Exception as exc:  # noqa: BLE001 - every failure of a trial is the finding to report
        (folder / "error.txt").write_text(traceback.format_exc())
        return Outcome(sp.name, spec.name, spec.id, False, time.perf_counter() - started, _one_line(exc)), None
    seconds = time.perf_counter() - started
    metrics = session.metrics[-1] if session.metrics else {}
    if metrics.get("diverged"):
        return Outcome(sp.name, spec.name, spec.id, False, seconds, "diverged (non-finite loss)"), None
    best = session.selection.best
    if session.selection.active and best is None:
        return Outcome(
            sp.name,
            spec.name,
            spec.id,
            False,
            seconds,
            f"never reported its select metric {session.selection.metric!r}",
        ), None
    ckpts = session.checkpoints()
    latest = str(ckpts[-1]) if ckpts else None
    chosen = str(session.best_checkpoint) if session.best_checkpoint else latest
    record = {
        "trial_id": spec.id,
        "name": spec.name,
        "variant": spec.variant,
        "seed": spec.seed,
        "status": "done",
        "config": spec.config,
        "metrics": metrics,
        "best": best,
        "checkpoint": chosen,
        "latest_checkpoint": latest,
    }
    note = f"; {', '.join(stand_in)}: not on this machine, synthetic data stood in" if stand_in else ""
    return Outcome(sp.name, spec.name, spec.id, True, seconds, f"{len(session.metrics)} report(s){note}"), record


def preflight(plan: Plan, console: Console, workdir: str | None = None) -> int:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="preflight-"))
    root.mkdir(parents=True, exist_ok=True)
    console.print(
        f"pre-flight of study {plan.study.name!r}: {plan.num_trials} trial(s), tiny data, CPU, outputs in {root}"
    )
    records: dict[str, dict] = {}
    outcomes: list[Outcome] = []
    for name in plan.order:
        sp = plan.stages[name]
        blocked = [d for d in sp.stage.needs if not successful(records[d])]
        if blocked:
            reason = f"skipped: upstream stage {blocked[0]!r} has no passing trial"
            outcomes += [Outcome(name, s.name, s.id, False, 0.0, reason) for s in sp.trials]
            records[name] = {"trials": {}, "select": None}
            continue
        try:
            sp = resolve_stage(sp, records, plan.study_dir) if sp.has_refs else sp
        except RefError as exc:
            outcomes += [Outcome(name, s.name, s.id, False, 0.0, f"reference: {exc}") for s in sp.trials]
            records[name] = {"trials": {}, "select": None}
            continue
        trials = {}
        for spec in sp.trials:
            outcome, record = run_trial(sp, spec, root)
            outcomes.append(outcome)
            mark = "[green]ok  [/]" if outcome.ok else "[red]FAIL[/]"
            console.print(f"{mark} {escape(outcome.name)}  [dim]{outcome.seconds:.1f}s[/]  {escape(outcome.detail)}")
            if record:
                trials[spec.id] = record
        records[name] = {
            "trials": trials,
            "select": sp.stage.select.model_dump() if sp.stage.select else None,
            "state": "complete",
        }
    failed = [o for o in outcomes if not o.ok]
    if failed:
        console.print(f"[red]pre-flight failed[/]: {len(failed)} of {len(outcomes)} trial(s):")
        for o in failed:
            console.print(f"  {escape(o.name)}: {escape(o.detail)}")
            if (root / o.stage / o.trial_id / "error.txt").exists():
                console.print(f"    [dim]traceback: {root / o.stage / o.trial_id / 'error.txt'}[/]")
        return 1
    console.print(f"[green]pre-flight passed[/]: {len(outcomes)} trial(s) in {sum(o.seconds for o in outcomes):.1f}s")
    return 0
