"""Run a study on Ray Tune: one Tuner per stage, stages in dependency order.

Why one Tuner per stage (and not one for the whole study): each stage has its own trainable,
metric, scheduler (ASHA / PBT act on one metric) and resources, and its own experiment folder
that Tune can restore on its own. A stage's trials are the grid of its `TrialSpec`s (plus
search samples); the trial folder is the trial id, so storage paths are stable across runs.

Re-running a study: a stage whose record says `complete` is skipped without starting Ray; an
interrupted stage is restored with `Tuner.restore` (finished trials kept, unfinished ones
resumed from their last checkpoint, errored ones retried with `--retry-errored`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from pyarrow import ArrowException
from rich.console import Console
from rich.markup import escape

import trainables
from orchestrator.execution import gates
from orchestrator.analysis import trials_table as results
from orchestrator.analysis import study_tables
from orchestrator.study import trackers
from orchestrator.analysis.rendering import aggregate_markdown, paired_markdown
from orchestrator.errors import Problem, UserError
from orchestrator.planning.expand import ClusterShape, Plan, StagePlan, concurrency, effective_resources, trial_id
from orchestrator.storage.store import Store

STUDY_FILE = "study.yaml"
STUDY_META = "study.json"

# Stage recorders of the current driver, looked up by the (picklable) proxies that Tune stores
# in its experiment state; a restored experiment thus reports to this run's recorder.
_LIVE_RECORDERS: dict[str, object] = {}


@dataclass
class RunOptions:
    storage: str | None = None
    address: str | None = None
    max_concurrent: int | None = None
    retry_errored: bool = False
    dashboard: bool = False
    num_cpus: int | None = None
    num_gpus: int | None = None


def spec_hash(plan: Plan) -> str:
    """Identity of the study's content (storage location and description excluded, and how the
    tables group seeds: `within_seed` changes no trial, and studies stored before it existed
    must keep their hash)."""
    data = plan.study.model_dump(exclude={"storage", "description"})
    for stage in data["stages"].values():
        stage.pop("within_seed", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit(folder: Path) -> dict | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True, timeout=5)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def study_store(plan: Plan, storage: str | None) -> Store:
    return Store(storage or plan.study.storage).child(plan.study.name)


def prepare_storage(plan: Plan, store: Store, study_text: str) -> dict:
    """Record the study in its storage, or check that the stored one is the same study."""
    digest = spec_hash(plan)
    if store.exists(STUDY_META):
        meta = json.loads(store.read_text(STUDY_META))
        if meta.get("spec_hash") != digest:
            raise UserError(Problem(
                plan.doc.file,
                f"storage {store.uri} holds study {plan.study.name!r} run from a different study file "
                f"(content hash {meta.get('spec_hash')} != {digest}); give the study a new name or use "
                "--storage to run it elsewhere (nothing was changed)", "name"))
        meta.setdefault("runs", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        meta = {"name": plan.study.name, "spec_hash": digest, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "study_file": os.path.abspath(plan.doc.file), "git": git_commit(plan.study_dir),
                "runs": [time.strftime("%Y-%m-%dT%H:%M:%S%z")],
                "stages": {name: [t.id for t in sp.trials] for name, sp in plan.stages.items()}}
        store.write_text(study_text, STUDY_FILE)
    store.write_text(json.dumps(meta, indent=1, default=str), STUDY_META)
    return meta


def _stage_done(record: dict | None, retry_errored: bool) -> bool:
    if not record or record.get("state") != "complete":
        return False
    return not (retry_errored and any(t["status"] == "error" for t in record["trials"].values()))


def _keep_credentials_out_of_ray() -> None:
    """Stop Ray Tune from copying AWS credentials into every trial's runtime_env.

    Tune propagates AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the driver's environment
    as runtime_env variables, and Ray's runtime-env agent writes runtime_envs to its log in
    plain text. Trials do not need it: on a local Ray they inherit the driver's environment
    through the raylet, and cluster nodes should use their instance role or their own
    environment. (Checked by tests/test_s3_storage.py, which greps Ray's logs for the secret.)
    """
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = {
        name for name in class_cache.ENV_VARS_TO_PROPAGATE if not name.startswith("AWS_")
    }


def preload_pays(sp: StagePlan, options: RunOptions) -> bool:
    """Whether the first stage keeps every worker Ray prestarts busy (Ray starts one per CPU
    core, up to its CPU count), so that preloading torch into them wastes no memory on idle
    ones (~0.4 GB each: a 32-core pod running 4 GPU trials would hold 28 idle)."""
    cores = os.cpu_count() or 1
    prestarted = min(options.num_cpus or cores, cores)
    limit = options.max_concurrent or sp.stage.max_concurrent or sp.num_trials
    busy = min(limit, sp.num_trials) * sp.resources.workers
    per_cpu = int((options.num_cpus or cores) // max(sp.resources.cpu, 0.01))
    return min(busy, per_cpu) >= prestarted


@contextlib.contextmanager
def _warm_local_workers(preload: list[str]):
    """Let the first trials of an in-process Ray start on warm worker processes.

    Ray starts worker processes when the driver connects, but gives an actor such a worker
    only if the actor has no runtime_env of its own; Tune gives every trial actor one, made of
    environment variables it copies from the driver (PL_DISABLE_FORK and the variables in
    `ENV_VARS_TO_PROPAGATE`). In an in-process Ray the workers are children of this process
    and inherit its environment anyway, so the copy is dropped (the variables are set here
    instead). With `preload`, Ray's `preload_python_modules` setting makes every worker import
    those modules (the trial code, torch included) before it accepts work, so the prestarted
    ones do that while Ray finishes starting and Tune sets up. Measured in bench/README.md
    (issue 9).
    """
    from ray.tune.execution import class_cache

    for name, value in class_cache.DEFAULT_ENV_VARS.items():
        os.environ.setdefault(name, value)
    class_cache.DEFAULT_ENV_VARS = {}
    class_cache.ENV_VARS_TO_PROPAGATE = set()
    # read by the raylet when ray.init starts it; not left behind for other Rays of this process
    before = os.environ.get("RAY_preload_python_modules")
    if preload and before is None:   # a user's own setting wins
        os.environ["RAY_preload_python_modules"] = ",".join(preload)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_preload_python_modules", None)


def init_ray(options: RunOptions, console: Console, preload: list[str] = ()) -> ClusterShape:
    """Connect to the given Ray cluster or start one in-process; `preload`: modules the
    workers of an in-process Ray import before they accept work."""
    import ray

    _keep_credentials_out_of_ray()
    started = time.perf_counter()

    # Tune logs every failed trial's traceback at ERROR; the terminal gets our one line per
    # trial instead, and the traceback stays in the trial's folder (error.txt) and the table.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    address = options.address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        pass_through = "connected to the running Ray"
    elif address:
        ray.init(address=address, log_to_driver=False)
        pass_through = f"connected to Ray at {address}"
    else:
        # address="local": always a new in-process Ray. Without it ray.init() attaches to any
        # cluster `ray start` left on this machine (/tmp/ray/ray_current_cluster), even a dead one.
        with _warm_local_workers(preload):
            ray.init(address="local", num_cpus=options.num_cpus, num_gpus=options.num_gpus,
                     include_dashboard=options.dashboard, dashboard_host="127.0.0.1", log_to_driver=False,
                     configure_logging=True, logging_level="ERROR")
        pass_through = "started a local Ray" + (" (dashboard http://127.0.0.1:8265)" if options.dashboard else "")
    res = ray.cluster_resources()
    nodes = tuple((float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
                  for n in ray.nodes() if n.get("Alive"))
    shape = ClusterShape(cpus=float(res.get("CPU", 0)), gpus=float(res.get("GPU", 0)), nodes=nodes)
    console.print(f"[dim]{pass_through}: {shape.cpus:g} CPUs, {shape.gpus:g} GPUs "
                  f"({time.perf_counter() - started:.1f} s)[/]")
    node = getattr(ray._private.worker, "_global_node", None)
    if not address and node is not None and getattr(node, "metrics_export_port", None):
        console.print(f"[dim]study metrics (Prometheus format): http://127.0.0.1:{node.metrics_export_port}/metrics[/]")
    return shape


def run_study(plan: Plan, study_text: str, options: RunOptions, console: Console) -> int:
    """Run (or continue) a study. Returns the process exit code."""
    store = study_store(plan, options.storage)
    try:
        prepare_storage(plan, store, study_text)
    except (OSError, ArrowException) as exc:
        raise UserError(Problem(store.uri, f"cannot use this storage: {' '.join(str(exc).split())[:300]}")) from None
    records = {name: results.load_stage_record(store, name) for name in plan.order}
    todo = [name for name in plan.order if not _stage_done(records[name], options.retry_errored)]
    for name in plan.order:
        if name not in todo:
            console.print(f"[dim]stage {name}: complete in storage, skipped[/]")
    interrupted = False
    # Ray starts with the first stage that runs: a study whose remaining stages are all skipped
    # (an upstream stage failed or was gated) finishes without it.
    shape = status = None
    skips: list[tuple[str, str]] = []   # skipped before the live status existed
    for name in todo:
        sp, reason = ready_stage(plan, name, records)
        if reason:
            state = "gated" if reason.startswith("gated") else "skipped"
            records[name] = skipped_record(plan.stages[name], reason, state)
            results.save_stage_record(store, name, records[name])
            if status is None:
                skips.append((name, state))
            else:
                status.stage(name, state)
            console.print(f"[yellow]stage {name} {state}[/]: {escape(reason)}")
            continue
        if shape is None:
            from orchestrator.execution.recorder import StudyStatus

            modules = ["ray.tune", "orchestrator.execution.trial",
                       *sorted({trainables.TRAINABLES[plan.stages[n].stage.trainable] for n in todo})]
            shape = init_ray(options, console, modules if preload_pays(sp, options) else [])
            status = StudyStatus(store, plan.study.name, console)
            for skipped, state in skips:
                status.stage(skipped, state)
        records[name] = run_stage(plan, sp, store, shape, options, status, console, records[name])
        if records[name]["state"] == "interrupted":
            interrupted = True
            break
        if sp.stage.gates and records[name]["state"] == "complete":
            records[name]["gates"] = gates.evaluate(records[name], sp.stage.gates)
            results.save_stage_record(store, name, records[name])
            for g in records[name]["gates"]:
                colour = "green" if g["passed"] else "yellow"
                console.print(f"[{colour}]gate[/] {name}: {escape(g['text'])}")
    done = [r for r in records.values() if r]
    table = write_and_show_tables(store, done, console)
    if interrupted:
        console.print("[yellow]interrupted[/]: run the same command again (or `orchestrator resume "
                      f"{store.uri}`) to continue; finished trials are kept")
        return 130
    failed = int((table["status"] == "error").sum()) if not table.empty else 0
    skipped = [r["stage"] for r in done if r.get("state") in ("skipped", "failed")]
    if failed:
        console.print(f"[red]{failed} trial(s) failed[/]; their errors are in the table; "
                      "`--retry-errored` runs them again")
    if skipped:
        console.print(f"[red]stage(s) failed or skipped[/]: {', '.join(skipped)} (see above)")
    gated = [r["stage"] for r in done if r.get("state") == "gated"]
    if gated:  # a decision the study made, not a failure: exit 0
        console.print(f"[yellow]stage(s) gated[/]: {', '.join(gated)}: a gate upstream did not pass (see above)")
    return 1 if failed or skipped else 0


def write_and_show_tables(store: Store, done: list[dict], console: Console):
    """Write every table of the study to storage and print one per stage; returns the trial table."""
    tables = study_tables.build({r["stage"]: r for r in done})
    results.write_tables(store, tables.trials, markdown=False)  # results.md: every table, below
    write_summary_tables(store, tables)
    for record in done:  # one table per stage: their columns differ
        if not record.get("trials"):
            continue
        stage_table = results.build_table([record])
        results.write_tables(store, stage_table, f"tables/{record['stage']}")
        console.print(f"\n[bold]{record['stage']}[/]")
        print_table(stage_table, console)
        agg = tables.aggregated.get(record["stage"])
        if agg is not None and (agg["n"] > 1).any():
            console.print(f"[bold]{record['stage']}: over seeds[/] (mean ± 95% CI)")
            console.print(aggregate_markdown(agg.drop(columns=["stage"])), markup=False, highlight=False,
                          soft_wrap=True)
        if record["stage"] in tables.paired:
            console.print(paired_markdown(tables.paired[record["stage"]].drop(columns=["stage"])),
                          markup=False, highlight=False, soft_wrap=True)
    console.print(f"\nresults: {store.child_uri(results.TABLE + '.parquet')} (also .csv, .md; per stage in tables/)")
    return tables.trials


def write_summary_tables(store: Store, tables) -> None:
    """aggregate.* and paired.* next to results.*, and results.md with every table."""
    import pandas as pd

    from orchestrator.analysis.status import render_markdown

    if tables.aggregated:
        results.write_tables(store, pd.concat(tables.aggregated.values(), ignore_index=True), "aggregate")
    if tables.paired:
        results.write_tables(store, pd.concat(tables.paired.values(), ignore_index=True), "paired")
    store.write_text(render_markdown(tables), "results.md")


def ready_stage(plan: Plan, name: str, records: dict[str, dict | None]) -> tuple[StagePlan | None, str | None]:
    """The stage to run (references resolved), or the reason it cannot run."""
    from orchestrator.study import references as refs
    from orchestrator.planning.expand import resolve_stage

    sp = plan.stages[name]
    for dep in sp.stage.needs:
        record = records.get(dep)
        if record and record.get("state") == "gated":
            return None, f"gated: it needs stage {dep!r}, which was not run ({record.get('reason')})"
        if gates.failed(record):
            return None, f"gated: stage {dep!r} did not pass its gate " + "; ".join(g["text"] for g in gates.failed(record))
        if not record or record.get("state") != "complete":
            state = record.get("state") if record else "not run"
            return None, f"it needs stage {dep!r}, which is {state}"
        if not refs.successful(record):
            return None, f"it needs stage {dep!r}, which has no successful trial"
    if not sp.has_refs:
        return sp, None
    try:
        return resolve_stage(sp, records, plan.study_dir), None
    except refs.RefError as exc:
        return None, str(exc)


def skipped_record(sp: StagePlan, reason: str, state: str = "skipped") -> dict:
    return {"stage": sp.name, "trainable": sp.stage.trainable, "state": state, "reason": reason,
            "select": sp.stage.select.model_dump() if sp.stage.select else None,
            "within_seed": sp.stage.within_seed, "needs": list(sp.stage.needs), "trials": {}}


def _trial_name(trial) -> str:
    t = trial.config["trial"]
    sampled = trial.config.get("search")
    return t["name"] + (f"/{trial.trial_id.split('_')[-1]}" if sampled else "")


def _trial_dirname(trial) -> str:
    t = trial.config["trial"]
    sampled = trial.config.get("search")
    if not sampled:
        return t["id"]
    # Search trials: content hash of the sampled config, plus Tune's index so that two samples
    # that happen to coincide (choice-only spaces) still get their own folders.
    return f"{trial_id(t['trainable'], dict(t['config'], **sampled), t['seed'])}-{trial.trial_id.split('_')[-1]}"


class _RecorderProxy:
    """Picklable stand-in that forwards Tune events to this driver's live recorder."""

    def __init__(self, stage: str):
        self.stage = stage

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_LIVE_RECORDERS[self.stage], name)


def _scheduler(sp: StagePlan):
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    search = sp.stage.search
    if search is None or search.scheduler == "fifo":
        return None
    select = sp.stage.select
    kwargs = dict(search.scheduler_config)
    if search.scheduler == "asha":
        return ASHAScheduler(metric=select.metric, mode=select.mode, time_attr="training_iteration", **kwargs)
    from orchestrator.study.search_space import to_tune

    # PBT perturbs a Domain by multiplying it: categorical keys must be given as plain lists
    # (which it resamples or shifts instead).
    domains = to_tune(sp.search_space)
    mutations = {k: (list(spec["choice"]) if "choice" in spec else domains[k])
                 for k, spec in sp.search_space.items() if "grid" not in spec}
    return PopulationBasedTraining(metric=select.metric, mode=select.mode, time_attr="training_iteration",
                                   hyperparam_mutations={"search": mutations}, **kwargs)


def checkpoint_config(keep: int | None, selects: bool):
    """Which checkpoints Tune keeps per trial: the newest, and the `keep` best by the select
    metric (trainables.selection: every improving epoch is checkpointed with its improvement
    count as `select/checkpoint_score`, so "best" means the most recent improvements). Without
    a select metric, the `keep` newest."""
    from ray import tune

    from trainables.runtime.selection import CHECKPOINT_SCORE

    if not selects:
        return tune.CheckpointConfig(num_to_keep=keep)
    return tune.CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=CHECKPOINT_SCORE,
                                 checkpoint_score_order="max")


def stage_trainable(study: str, stage: str, resources: dict):
    """The Tune trainable of a stage: `run_trial` with the stage's resources, named
    `<study>/<stage>`. The name is the trial actors' repr, which the Ray dashboard shows (and
    groups by) instead of `run_trial` for every stage of every study. Not per trial: a reused
    actor keeps the repr of its first trial."""
    from ray import tune
    from ray.tune.trainable.function_trainable import wrap_function

    from orchestrator.execution.trial import run_trial

    return wrap_function(tune.with_resources(run_trial, resources), name=f"{study}/{stage}")


def run_stage(plan: Plan, sp: StagePlan, store: Store, shape: ClusterShape, options: RunOptions, status,
              console: Console, previous: dict | None) -> dict:
    from ray import tune
    from ray.tune import TuneError

    from orchestrator.execution.recorder import StageRecorder
    from orchestrator.study.search_space import to_tune

    study = plan.study
    res, note = effective_resources(sp.resources, shape)
    if note:
        console.print(f"[yellow]note[/]: stage {sp.name}: {note}")
    limit = options.max_concurrent or sp.stage.max_concurrent
    max_conc = max(1, concurrency(res, shape, limit))
    policy = study.checkpoint_of(sp.stage)
    keep = policy.keep
    if sp.stage.search and sp.stage.search.scheduler == "pbt" and keep is not None and keep < 4:
        # PBT clones other trials' checkpoints; deleting them too early breaks exploitation.
        console.print(f"[yellow]note[/]: stage {sp.name}: PBT keeps 4 checkpoints per trial (checkpoint.keep={keep})")
        keep = 4
    git = git_commit(plan.study_dir)
    workers = sp.resources.workers
    trials = [dict(t.to_dict(), study=study.name, checkpoint_every=policy.every,
                   checkpoint_interval_s=policy.interval_s, report_interval_s=study.report_interval_of(sp.stage),
                   git=git, workers=workers, storage=store.uri,
                   select=sp.stage.select.model_dump() if sp.stage.select else None,
                   worker_resources={"cpu": sp.resources.cpu, "gpu": res["gpu"] / workers}) for t in sp.trials]
    param_space = {"trial": tune.grid_search(trials)}
    if sp.search_space:
        param_space["search"] = to_tune(sp.search_space)
    # A data-parallel trial's own process only waits for its Ray Train workers, which reserve
    # the CPUs and GPUs themselves; max_concurrent_trials keeps such trials from piling up.
    trainable = stage_trainable(study.name, sp.name, {"cpu": res["cpu"], "gpu": res["gpu"]} if workers == 1
                                else {"cpu": 0.01, "gpu": 0})

    recorder = StageRecorder(sp, store, status, console, previous, res)
    _LIVE_RECORDERS[sp.name] = recorder
    storage_path, storage_fs = store.ray_storage()
    experiment = store.child_uri(sp.name)
    each = f"{res['cpu']:g} CPU, {res['gpu']:g} GPU each" if workers == 1 else \
        f"{workers} data-parallel workers of {sp.resources.cpu:g} CPU, {res['gpu'] / workers:g} GPU each"
    console.print(f"[bold]stage {sp.name}[/]: {sp.num_trials} trials, {max_conc} at a time ({each})")
    if tune.Tuner.can_restore(experiment if not storage_fs else store.path(sp.name), storage_filesystem=storage_fs):
        console.print(f"[dim]stage {sp.name}: continuing the interrupted run in {experiment}[/]")
        tuner = tune.Tuner.restore(experiment if not storage_fs else store.path(sp.name), trainable,
                                   resume_errored=options.retry_errored, param_space=param_space,
                                   storage_filesystem=storage_fs)
    else:
        # No metric/mode here: Tune would then demand the metric in every report, and some
        # metrics (final out-of-fold scores) exist only in the last one. The recorder ranks
        # trials by their best value of `select.metric` instead.
        scheduler = _scheduler(sp)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                num_samples=sp.stage.search.num_samples if sp.stage.search else 1,
                max_concurrent_trials=max_conc,
                scheduler=scheduler,
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=sp.name,
                storage_path=storage_path,
                storage_filesystem=storage_fs,
                stop=sp.stage.stop or None,
                checkpoint_config=checkpoint_config(keep, sp.stage.select is not None),
                failure_config=tune.FailureConfig(max_failures=study.max_failures_of(sp.stage)),
                sync_config=tune.SyncConfig(sync_artifacts=True),
                callbacks=[_RecorderProxy(sp.name), *trackers.build(study.callbacks, study.name, sp.name,
                                                                    store.uri, store.local)],
                verbose=0,
            ),
        )
    started = time.perf_counter()
    recorder.record["fit_started_at"] = time.time()
    try:
        tuner.fit()
        recorder.record["wall_s"] = time.perf_counter() - started
        results.save_stage_record(store, sp.name, recorder.record)
    except TuneError as exc:
        # Tune itself stopped (not a trial failing: those are recorded and retried). Keep what
        # is known, save the traceback with the study, and report it in one line.
        detail = traceback.format_exc()
        store.write_text(detail, results.STATE_DIR, "errors", f"{sp.name}.txt")
        last = [line for line in str(exc).strip().splitlines() if line.strip()][-1:] or ["unknown error"]
        console.print(f"[red]stage {sp.name}: Ray Tune stopped[/]: {last[0][:300]} (traceback in "
                      f"{store.child_uri(results.STATE_DIR, 'errors', sp.name + '.txt')})")
        recorder.record["state"] = "failed"
        recorder.record["reason"] = last[0][:300]
        results.save_stage_record(store, sp.name, recorder.record)
    return recorder.record


def print_table(df, console: Console) -> None:
    """A compact table on a terminal; Markdown when the output is a pipe or a log."""
    from rich.table import Table

    if df.empty:
        console.print("no trials")
        return
    cols = [c for c in results.summary_columns(df) if c not in ("stage", "trial_id")]
    if not console.is_terminal:
        console.print(results.to_markdown(df, cols), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(header_style="bold")
    for c in cols:
        table.add_column(c.removeprefix("config.").removeprefix("final."), overflow="fold")
    for _, row in df[cols].iterrows():
        table.add_row(*[results._fmt(v) for v in row.tolist()])
    console.print(table)
