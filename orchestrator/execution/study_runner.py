"""Run a study on Ray: its stages in dependency order, each one Tuner (`stage_runner`), a stage
run only when the stages it needs have finished (and passed their gates), its references then
resolved against their results.

Re-running a study: a stage whose record says `complete` is skipped without starting Ray; Ray
starts with the first stage that runs. The outcome (`StudyOutcome`) carries every stage's
record; the result tables are written from them afterwards (`orchestrator.analysis`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.fs as pafs
from pyarrow import ArrowException
from rich.console import Console
from rich.markup import escape

from orchestrator.errors import Problem, UserError
from orchestrator.execution import gates, shipping
from orchestrator.execution.budget_guard import BudgetGuard
from orchestrator.execution.lease import DriverLease, refuse_if_held
from orchestrator.execution.live_status import StudyStatus
from orchestrator.execution.notify import Notifier
from orchestrator.execution.ray_start import RunOptions, init_ray, preload_pays
from orchestrator.execution.stage_runner import StudyRun, run_stage
from orchestrator.execution.study_folder import git_commit, prepare_storage, stored_meta, study_store
from orchestrator.execution.study_schedule import skipped_record, stage_line
from orchestrator.execution.study_tune import run_schedule
from orchestrator.planning import budget, code
from orchestrator.planning.expand import Plan, StagePlan
from orchestrator.planning.references import resolve_stage, successful
from orchestrator.planning.resources import ClusterShape, trial_charge
from orchestrator.planning.view import plan_rows
from orchestrator.storage.records import load_stage_record, save_stage_record
from orchestrator.storage.relocation import recorded_location, relocated
from orchestrator.storage.store import Store
from orchestrator.study.references import RefError


@dataclass
class StudyOutcome:
    """What a run of a study left: every stage's record (None: not reached), in study order."""

    store: Store
    records: dict[str, dict | None]
    interrupted: bool
    budget: str | None = None  # why the spend cap stopped the study

    EXIT_BUDGET = 3

    @property
    def ended(self) -> list[dict]:
        """The records of the stages that ran, were skipped or gated."""
        return [r for r in self.records.values() if r]

    def conclude(self, console: Console) -> int:
        """Say how the run ended; the exit code: 3 stopped by the budget, 130 interrupted, 1 when a
        trial failed or a stage failed or was skipped, else 0 (a gated stage is a decision of the
        study, not a failure)."""
        if self.budget:
            console.print(
                f"[yellow]stopped by the budget[/]: {escape(self.budget)}; `orchestrator resume {self.store.uri} "
                "--budget USD` raises the cap and continues (finished trials are kept, stopped ones continue "
                "from their last checkpoint)"
            )
            return self.EXIT_BUDGET
        if self.interrupted:
            console.print(
                "[yellow]interrupted[/]: run the same command again (or `orchestrator resume "
                f"{self.store.uri}`) to continue; finished trials are kept"
            )
            return 130
        failed = sum(t["status"] == "error" for r in self.ended for t in r.get("trials", {}).values())
        skipped = [r["stage"] for r in self.ended if r.get("state") in ("skipped", "failed")]
        if failed:
            console.print(
                f"[red]{failed} trial(s) failed[/]; their errors are in the table; `--retry-errored` runs them again"
            )
        if skipped:
            console.print(f"[red]stage(s) failed or skipped[/]: {', '.join(skipped)} (see above)")
        gated = [r["stage"] for r in self.ended if r.get("state") == "gated"]
        if gated:
            console.print(f"[yellow]stage(s) gated[/]: {', '.join(gated)}: a gate upstream did not pass (see above)")
        return 1 if failed or skipped else 0


def run_study(plan: Plan, study_text: str, options: RunOptions, console: Console) -> StudyOutcome:
    """Run (or continue) a study."""
    store = study_store(plan, options.storage)
    cap = budget.cap_of(
        plan.study.budget,
        plan.doc.file,
        gpu_price=options.gpu_price,
        usd=options.budget_usd,
        gpu_hours=options.budget_gpu_hours,
        stored=options.stored_cap,
        uses_gpus=budget.uses_gpus(plan),
    )
    _refuse_actors_without_gpus(plan, options)
    shipping.check(shipping.sources(plan, plan.order), plan.doc.file)  # too large: refused before anything starts
    records = _open_folder(plan, store, study_text, (cap, options), console)
    lease = DriverLease(store, console)
    lease.acquire()
    try:
        return _run_folder(plan, store, options, console, (records, cap))
    finally:
        lease.release()


def _open_folder(plan: Plan, store: Store, study_text: str, run: tuple, console: Console) -> dict[str, dict | None]:
    """The study's folder made ready for this run, after every check (the same study, nobody else
    running it, the budget) passed with nothing written; its stage records, in today's place
    (a folder that was moved: see `orchestrator/storage/relocation.py`)."""
    cap, options = run
    try:
        meta = stored_meta(plan, store)  # the same study, or a one-line error; nothing written yet
        refuse_if_held(store)
        records = {name: load_stage_record(store, name) for name in plan.order}
        todo = [name for name in plan.order if not _stage_done(records[name], options.retry_errored)]
        current = code.identities(plan)
        for line in code.check_unchanged(
            (meta or {}).get("code"),
            current,
            [plan.stages[n].stage.trainable for n in todo],
            plan.doc.file,
            options.allow_code_change,
        ):
            console.print(f"[yellow]note[/]: {escape(line)}")
        moved_from = recorded_location(meta, records)
        moved = moved_from is not None and moved_from.rstrip("/") != store.uri.rstrip("/")
        if moved:
            records = relocated(records, moved_from, store.uri)
            console.print(
                f"[yellow]note[/]: this study was run in {escape(moved_from)}; it continues here, in "
                f"{escape(store.uri)}, reading and writing only here"
            )
        if cap is not None:
            console.print(_check_budget(plan, cap, (store, records), options), markup=False, highlight=False)
        prepare_storage(plan, store, study_text, current)
        for name, record in records.items() if moved else ():
            if record is not None:
                save_stage_record(store, name, record)
    except (OSError, ArrowException) as exc:
        raise UserError(Problem(store.uri, f"cannot use this storage: {' '.join(str(exc).split())[:300]}")) from None
    return records


def _run_folder(plan: Plan, store: Store, options: RunOptions, console: Console, state: tuple) -> StudyOutcome:
    """The stages of a study whose folder is ready, with its notifier and spend guard."""
    records, cap = state
    todo = [name for name in plan.order if not _stage_done(records[name], options.retry_errored)]
    notifier = Notifier(plan.study.notify, plan.study.name, store.uri, console)
    guard = BudgetGuard(cap, store, records, console, notifier) if cap is not None else None
    if guard is not None:
        guard.save()  # the cap in force, for status, results and resume
    try:
        for name in plan.order:
            if name not in todo:
                console.print(f"[dim]stage {name}: complete in storage, skipped[/]")
        if _legacy_experiments(store, todo):  # interrupted by a release that ran one Tuner per stage
            outcome = _run_stages(plan, store, options, console, (records, todo, notifier, guard))
        else:
            outcome = _run_together(plan, store, options, console, (records, todo, notifier, guard))
    finally:
        if todo:
            notifier.send("study_end", _study_line(plan, records, store), storage=store.uri)
        notifier.close()
    return outcome


def _legacy_experiments(store: Store, todo: list[str]) -> bool:
    """Whether a stage still to run has a Tune experiment of its own (`<stage>/experiment_state-*`:
    the per-stage runs of releases before 2026-12-05), which only a per-stage Tuner restores."""
    for name in todo:
        selector = pafs.FileSelector(store.path(name), allow_not_found=True)
        if any(i.base_name.startswith("experiment_state") for i in store.fs.get_file_info(selector)):
            return True
    return False


def _run_together(plan: Plan, store: Store, options: RunOptions, console: Console, state: tuple) -> StudyOutcome:
    """The stages still to run as one experiment (`study_tune.run_schedule`); Ray starts only
    when a stage can run (a re-run whose stages are complete, or skipped before they start, starts
    none)."""
    records, todo, notifier, guard = state
    runnable = _skip_what_cannot_run(plan, store, console, (records, todo))
    if guard is not None and not guard.stopped and runnable:
        reached = guard.reached()
        if reached:
            guard.stop(f"the cap is reached before the study starts: {reached}", interrupt=False)
    if guard is not None and guard.stopped:
        return StudyOutcome(store, records, interrupted=True, budget=guard.stopped)
    if not runnable:
        return StudyOutcome(store, records, interrupted=False)
    run = _start(plan, plan.stages[runnable[0]], store, options, console, runnable)
    run.notifier, run.guard = notifier, guard
    for name in todo:
        if name not in runnable:
            run.status.stage(name, records[name]["state"])
    schedule = run_schedule(run, records, runnable)
    left = [name for name in runnable if schedule.stages[name].state not in ("complete", "gated", "skipped", "failed")]
    return StudyOutcome(store, records, interrupted=bool(left), budget=guard.stopped if guard else None)


def _skip_what_cannot_run(plan: Plan, store: Store, console: Console, state: tuple) -> list[str]:
    """Record the stages that cannot run because of how the stages they need ended (gated,
    skipped, no successful trial); the stages that may run."""
    records, todo = state
    runnable: list[str] = []
    for name in todo:
        if any(dep in runnable for dep in plan.stages[name].stage.needs):
            runnable.append(name)  # decided when what it needs has run
            continue
        _, reason = ready_stage(plan, name, records)
        if reason is None or not all(
            (records.get(dep) or {}).get("state") in ("complete", "gated", "skipped", "failed")
            for dep in plan.stages[name].stage.needs
        ):
            runnable.append(name)
            continue
        state_ = "gated" if reason.startswith("gated") else "skipped"
        records[name] = skipped_record(plan.stages[name], reason, state_)
        save_stage_record(store, name, records[name])
        console.print(f"[yellow]stage {name} {state_}[/]: {escape(reason)}")
    return runnable


def _run_stages(plan: Plan, store: Store, options: RunOptions, console: Console, state: tuple) -> StudyOutcome:
    """The stages still to run, in order, one Tuner each: a study whose interrupted stages have
    per-stage experiments (releases before 2026-12-05) continues as it ran."""
    records, todo, notifier, guard = state
    run: StudyRun | None = None  # Ray starts with the first stage that runs
    skips: list[tuple[str, str]] = []  # skipped before the live status existed
    for name in todo:
        reached = guard.reached() if guard is not None and not guard.stopped else None
        if reached:
            guard.stop(f"the cap is reached before stage {name}: {reached}", interrupt=False)
        if guard is not None and guard.stopped:
            return StudyOutcome(store, records, interrupted=True, budget=guard.stopped)
        sp, reason = ready_stage(plan, name, records)
        if reason:
            state = "gated" if reason.startswith("gated") else "skipped"
            records[name] = skipped_record(plan.stages[name], reason, state)
            save_stage_record(store, name, records[name])
            if run is None:
                skips.append((name, state))
            else:
                run.status.stage(name, state)
            console.print(f"[yellow]stage {name} {state}[/]: {escape(reason)}")
            continue
        if run is None:
            run = _start(plan, sp, store, options, console, todo)
            run.notifier, run.guard = notifier, guard
            for skipped, state in skips:
                run.status.stage(skipped, state)
        records[name] = run_stage(run, sp, records[name])
        if records[name]["state"] == "interrupted":  # Ctrl-C, or the cap (then the next stage is not started)
            return StudyOutcome(store, records, interrupted=True, budget=guard.stopped if guard else None)
        notifier.send("stage_end", stage_line(records[name]), stage=name, storage=store.uri)
        if sp.stage.gates and records[name]["state"] == "complete":
            records[name]["gates"] = gates.evaluate(records[name], sp.stage.gates)
            save_stage_record(store, name, records[name])
            for g in records[name]["gates"]:
                colour = "green" if g["passed"] else "yellow"
                console.print(f"[{colour}]gate[/] {name}: {escape(g['text'])}")
                notifier.send(
                    "gate", f"gate of stage {name} {'passed' if g['passed'] else 'FAILED'}: {g['text']}", stage=name
                )
    return StudyOutcome(store, records, interrupted=False)


def _refuse_actors_without_gpus(plan: Plan, options: RunOptions) -> None:
    """On an in-process Ray without GPUs, trials whose actors ask for GPUs (a `retrieval_eval`
    stage's `worker_gpus`) would wait for them forever: refuse before anything starts. (A
    trial's own GPUs are dropped with a note instead: the trial itself runs on the CPU.)"""
    if options.cluster or ClusterShape.local().gpus > 0:
        return
    for sp in plan.stages.values():
        for t in sp.trials:
            if trial_charge({"cpu": 0.0, "gpu": 0.0}, sp.trainable, t.config)["gpu"] > 0:
                raise UserError(
                    Problem(
                        plan.doc.file,
                        f"trial {t.name} starts actors that ask for GPUs (worker_gpus), and this machine has none; "
                        "set worker_gpus: 0 here, or run on a cluster with GPUs (--address)",
                        f"stages.{sp.name}.config",
                    )
                )


def _check_budget(plan: Plan, cap: budget.Cap, state: tuple[Store, dict], options: RunOptions) -> str:
    """Refuse a run whose estimate crosses the cap (see budget.check_start); else the line to
    print. The estimate is of this machine (an in-process Ray), or of the declared resources on
    a cluster (`--address`: its shape is known only once connected)."""
    shape = ClusterShape.local() if not options.cluster else ClusterShape(cpus=1e6, gpus=1e6)
    if options.num_cpus and not options.cluster:
        shape = ClusterShape(float(options.num_cpus), shape.gpus)
    rows = plan_rows(plan, shape, {}, cap.prices)
    store, records = state
    spent = budget.spent_so_far(store, records)
    return budget.check_start(cap, rows, records, plan.doc.file, options.over_budget, spent)


def _study_line(plan: Plan, records: dict[str, dict | None], store: Store) -> str:
    """How the run ended, in one line: per stage its state and counts, and where the results are."""
    parts = [stage_line(r).removeprefix("stage ") for r in records.values() if r]
    interrupted = any(r and r.get("state") == "interrupted" for r in records.values())
    head = "interrupted" if interrupted else "ended"
    return f"study {plan.study.name} {head}: " + "; ".join(parts) + f". Results: {store.uri}"


def _start(
    plan: Plan, first: StagePlan, store: Store, options: RunOptions, console: Console, todo: list[str]
) -> StudyRun:
    """Start (or connect to) Ray for the stages still to run; an in-process Ray preloads the
    trial code into its workers when the first stage keeps them all busy."""
    modules = [
        "ray.tune",
        "orchestrator.execution.trial",
        # the built-ins only: a user's trainable reaches the workers through the runtime_env
        *sorted({plan.stages[n].trainable.recipe_name for n in todo if plan.stages[n].trainable.source is None}),
    ]
    ship = shipping.sources(plan, todo)
    for line in shipping.check(ship, plan.doc.file):
        console.print(f"[dim]ships to every Ray worker (runtime_env py_modules): {escape(line)}[/]")
    shape = init_ray(options, console, modules if preload_pays(first, options) else [], shipping.runtime_env(ship))
    status = StudyStatus(store, plan.study.name, console)
    return StudyRun(
        plan, store, shape, options, status, console, git_commit(plan.study_dir), code=code.identities(plan)
    )


def _stage_done(record: dict | None, retry_errored: bool) -> bool:
    if not record or record.get("state") != "complete":
        return False
    return not (retry_errored and any(t["status"] == "error" for t in record["trials"].values()))


def ready_stage(plan: Plan, name: str, records: dict[str, dict | None]) -> tuple[StagePlan | None, str | None]:
    """The stage to run (references resolved), or the reason it cannot run."""
    sp = plan.stages[name]
    for dep in sp.stage.needs:
        record = records.get(dep)
        if record and record.get("state") == "gated":
            return None, f"gated: it needs stage {dep!r}, which was not run ({record.get('reason')})"
        if gates.failed(record):
            return None, f"gated: stage {dep!r} did not pass its gate " + "; ".join(
                g["text"] for g in gates.failed(record)
            )
        if not record or record.get("state") != "complete":
            state = record.get("state") if record else "not run"
            return None, f"it needs stage {dep!r}, which is {state}"
        if not successful(record):
            return None, f"it needs stage {dep!r}, which has no successful trial"
    if not sp.has_refs:
        return sp, None
    try:
        return resolve_stage(sp, records, plan.study_dir), None
    except RefError as exc:
        return None, str(exc)
