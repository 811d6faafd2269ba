"""One stage on Ray Tune: a Tuner over the stage's planned trials (a grid of `TrialSpec`s, plus
search samples), restored when an earlier run of the stage was interrupted.

Why one Tuner per stage (and not one for the whole study): each stage has its own trainable,
metric, scheduler (ASHA / PBT act on one metric) and resources, and its own experiment folder
that Tune can restore on its own. The trial folder is the trial id, so storage paths are stable
across runs; finished trials are kept by a restore, unfinished ones resume from their last
checkpoint, errored ones are retried with `--retry-errored`.
"""

from __future__ import annotations

import sys
import time
import traceback
import types
from dataclasses import dataclass, field

from ray import tune
from ray.tune import TuneError
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.trainable.function_trainable import wrap_function
from rich.console import Console

from orchestrator.execution import search, trackers
from orchestrator.execution.budget_guard import BudgetGuard
from orchestrator.execution.live_status import StudyStatus
from orchestrator.execution.notify import Notifier
from orchestrator.execution.ray_start import RunOptions
from orchestrator.execution.recorder import StageRecorder
from orchestrator.execution.trial import run_trial
from orchestrator.planning.expand import Plan, StagePlan
from orchestrator.planning.resources import ClusterShape, concurrency, effective_resources
from orchestrator.planning.trials import trial_id
from orchestrator.storage.records import STATE_DIR, save_stage_record
from orchestrator.storage.store import Store
from trainables.runtime.selection import CHECKPOINT_SCORE

# Stage recorders of the current driver, looked up by the (picklable) proxies that Tune stores
# in its experiment state; a restored experiment thus reports to this run's recorder.
_LIVE_RECORDERS: dict[str, StageRecorder] = {}


@dataclass
class StudyRun:
    """What every stage of one run of a study shares."""

    plan: Plan
    store: Store
    shape: ClusterShape  # the cluster Ray offers
    options: RunOptions
    status: StudyStatus
    console: Console
    git: dict | None  # the commit of the study file's repository, recorded with every trial
    notifier: Notifier | None = None  # the study's webhooks (`notify:`)
    code: dict = field(default_factory=dict)  # the trainables' code identities (planning/code.py)
    guard: BudgetGuard | None = None  # the study's spend cap (`budget:`)


def trial_name(trial) -> str:
    """The trial's name in Tune and the dashboard: `stage/variant/grid/seed` (+ search sample)."""
    t = trial.config["trial"]
    sampled = trial.config.get("search")
    return t["name"] + (f"/{trial.trial_id.split('_')[-1]}" if sampled else "")


def trial_dirname(trial) -> str:
    """The trial's folder: its trial id."""
    t = trial.config["trial"]
    sampled = trial.config.get("search")
    if not sampled:
        return t["id"]
    # Search trials: content hash of the sampled config, plus Tune's index so that two samples
    # that happen to coincide (choice-only spaces) still get their own folders.
    return f"{trial_id(t['trainable'], dict(t['config'], **sampled), t['seed'])}-{trial.trial_id.split('_')[-1]}"


class RecorderProxy:
    """Picklable stand-in that forwards Tune events to this driver's live recorder."""

    def __init__(self, stage: str):
        self.stage = stage

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_LIVE_RECORDERS[self.stage], name)


class GatedVariants(BasicVariantGenerator):
    """Tune's variant generator (grid, samples, `max_concurrent`: what Tune builds itself for
    `max_concurrent_trials`) that creates no trial while the stage's budget gate is closed
    (`budget_guard`). Pickled with the Tuner, it finds the guard through this driver's recorder
    of its stage, as the recorder proxies do."""

    def __init__(self, stage: str, **kwargs):
        super().__init__(**kwargs)
        self.stage = stage

    def next_trial(self):
        recorder = _LIVE_RECORDERS.get(self.stage)
        guard = recorder.guard if recorder is not None else None
        if guard is not None and not guard.may_start():
            return None
        return super().next_trial()


def checkpoint_config(keep: int | None, selects: bool, keep_best: bool = True) -> tune.CheckpointConfig:
    """Which checkpoints Tune keeps per trial: the newest, and the `keep` best by the select
    metric (trainables.runtime.selection: every improving epoch is checkpointed with its
    improvement count as `select/checkpoint_score`, so "best" means the most recent
    improvements). Without a select metric, or with `checkpoint.keep_best: false`, the `keep`
    newest. (`gc RUN_DIR` deletes what a finished study no longer needs.)"""
    if not (selects and keep_best):
        return tune.CheckpointConfig(num_to_keep=keep)
    return tune.CheckpointConfig(
        num_to_keep=keep, checkpoint_score_attribute=CHECKPOINT_SCORE, checkpoint_score_order="max"
    )


def stage_trainable(study: str, stage: str, resources: dict):
    """The Tune trainable of a stage: `run_trial` with the stage's resources, named
    `<study>/<stage>`. The name is the trial actors' repr, which the Ray dashboard shows (and
    groups by) instead of `run_trial` for every stage of every study. Not per trial: a reused
    actor keeps the repr of its first trial."""
    return wrap_function(tune.with_resources(run_trial, resources), name=f"{study}/{stage}")


def _resolve_legacy_pickles() -> None:
    """Let a Tune experiment interrupted before the orchestrator's package layout (2026-12) be
    restored: Tune pickled its trial-name functions and recorder proxy by their module path,
    `orchestrator.runner`, which is now this module."""
    legacy = types.ModuleType("orchestrator.runner")
    legacy._trial_name, legacy._trial_dirname, legacy._RecorderProxy = trial_name, trial_dirname, RecorderProxy
    sys.modules.setdefault("orchestrator.runner", legacy)


def run_stage(run: StudyRun, sp: StagePlan, previous: dict | None) -> dict:
    """Run (or continue) one stage whose references are resolved; returns its record."""
    res, note = effective_resources(sp.resources, run.shape)
    if note:
        run.console.print(f"[yellow]note[/]: stage {sp.name}: {note}")
    max_conc = max(1, concurrency(res, run.shape, run.options.max_concurrent or sp.stage.max_concurrent))
    workers = sp.resources.workers
    each = (
        f"{res['cpu']:g} CPU, {res['gpu']:g} GPU each"
        if workers == 1
        else f"{workers} data-parallel workers of {sp.resources.cpu:g} CPU, {res['gpu'] / workers:g} GPU each"
    )
    policy = run.plan.study.checkpoint_of(sp.stage)
    keep = policy.keep
    if sp.stage.search and sp.stage.search.scheduler == "pbt" and keep is not None and keep < 4:
        # PBT clones other trials' checkpoints; deleting them too early breaks exploitation.
        run.console.print(
            f"[yellow]note[/]: stage {sp.name}: PBT keeps 4 checkpoints per trial (checkpoint.keep={keep})"
        )
        keep = 4
    run.console.print(f"[bold]stage {sp.name}[/]: {sp.num_trials} trials, {max_conc} at a time ({each})")
    recorder = StageRecorder(sp, run.store, run.status, run.console, previous, res, notifier=run.notifier)
    recorder.code = run.code.get(sp.stage.trainable, {}).get("hash")
    _LIVE_RECORDERS[sp.name] = recorder
    tuner = _tuner(run, sp, res, max_conc, (keep, policy.keep_best))
    started = time.perf_counter()
    recorder.record["fit_started_at"] = time.time()
    recorder.view.start()  # a terminal only: a live line per running trial
    if run.guard is not None:
        run.guard.begin(recorder)
    try:
        tuner.fit()
        recorder.record["wall_s"] = time.perf_counter() - started
    except TuneError as exc:
        # Tune itself stopped (not a trial failing: those are recorded and retried). Keep what
        # is known, save the traceback with the study, and report it in one line.
        run.store.write_text(traceback.format_exc(), STATE_DIR, "errors", f"{sp.name}.txt")
        last = [line for line in str(exc).strip().splitlines() if line.strip()][-1:] or ["unknown error"]
        run.console.print(
            f"[red]stage {sp.name}: Ray Tune stopped[/]: {last[0][:300]} (traceback in "
            f"{run.store.child_uri(STATE_DIR, 'errors', sp.name + '.txt')})"
        )
        recorder.record["state"] = "failed"
        recorder.record["reason"] = last[0][:300]
    finally:
        recorder.view.stop()
        if run.guard is not None:
            _budget_stop(recorder.record, run.guard.stopped)
            run.guard.end(recorder)
    save_stage_record(run.store, sp.name, recorder.record)
    return recorder.record


def _budget_stop(record: dict, reason: str | None) -> None:
    """Mark a stage the spend cap stopped, and its trials that it interrupted."""
    if reason is None or record["state"] != "interrupted":
        return
    record["stopped_by"], record["reason"] = "budget", reason
    for trial in record["trials"].values():
        if trial["status"] == "interrupted":
            trial["stopped_by"] = "budget"


def trial_common(run: StudyRun, sp: StagePlan, res: dict) -> dict:
    """What every trial of a stage carries in its config besides its own spec: what the trial
    function needs (checkpoint clock, reports, storage, selection, resources) and what it ran."""
    study = run.plan.study
    policy = study.checkpoint_of(sp.stage)
    workers = sp.resources.workers
    return {
        "study": study.name,
        "recipe": sp.trainable.recipe_name,  # the module the trial's process imports
        "code": run.code.get(sp.stage.trainable, {}).get("hash"),  # what it ran (orchestrator/planning/code.py)
        "checkpoint_every": policy.every,
        "checkpoint_interval_s": policy.interval_s,
        "report_interval_s": study.report_interval_of(sp.stage),
        "git": run.git,
        "workers": workers,
        "storage": run.store.uri,
        "select": sp.stage.select.model_dump() if sp.stage.select else None,
        "worker_resources": {"cpu": sp.resources.cpu, "gpu": res["gpu"] / workers},
        # the trial's own process: a data-parallel trial's only waits for its Ray Train workers,
        # which reserve the CPUs and GPUs themselves
        "resources": {"cpu": res["cpu"], "gpu": res["gpu"]} if workers == 1 else {"cpu": 0.01, "gpu": 0.0},
    }


def _param_space(run: StudyRun, sp: StagePlan, res: dict) -> dict:
    """Tune's param_space: a grid over the stage's trials (each with what its trial function
    needs), and the search space's samplers."""
    common = trial_common(run, sp, res)
    space = {"trial": tune.grid_search([dict(t.to_dict(), **common) for t in sp.trials])}
    if sp.search_space:
        space["search"] = search.to_tune(sp.search_space)
    return space


def _tuner(run: StudyRun, sp: StagePlan, res: dict, max_conc: int, keep: tuple) -> tune.Tuner:
    """The stage's Tuner: restored from its experiment folder when an earlier run was
    interrupted, else a new one (keeping (`keep`, best or newest) checkpoints per trial)."""
    study = run.plan.study
    # A data-parallel trial's own process only waits for its Ray Train workers, which reserve
    # the CPUs and GPUs themselves; max_concurrent_trials keeps such trials from piling up.
    trainable = stage_trainable(
        study.name,
        sp.name,
        {"cpu": res["cpu"], "gpu": res["gpu"]} if sp.resources.workers == 1 else {"cpu": 0.01, "gpu": 0},
    )
    param_space = _param_space(run, sp, res)
    storage_path, storage_fs = run.store.ray_storage()
    experiment = run.store.path(sp.name) if storage_fs else run.store.child_uri(sp.name)
    if tune.Tuner.can_restore(experiment, storage_filesystem=storage_fs):
        _resolve_legacy_pickles()
        run.console.print(f"[dim]stage {sp.name}: continuing the interrupted run in {run.store.child_uri(sp.name)}[/]")
        return tune.Tuner.restore(
            experiment,
            trainable,
            resume_errored=run.options.retry_errored,
            param_space=param_space,
            storage_filesystem=storage_fs,
        )
    # No metric/mode here: Tune would then demand the metric in every report, and some metrics
    # (final out-of-fold scores) exist only in the last one. The recorder ranks trials by their
    # best value of `select.metric` instead.
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            num_samples=sp.stage.search.num_samples if sp.stage.search else 1,
            # Tune's own generator (what max_concurrent_trials makes), which a spend cap can close
            search_alg=GatedVariants(sp.name, max_concurrent=max_conc),
            scheduler=search.scheduler(sp),
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=sp.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            stop=sp.stage.stop or None,
            checkpoint_config=checkpoint_config(keep[0], sp.stage.select is not None, keep[1]),
            failure_config=tune.FailureConfig(max_failures=study.max_failures_of(sp.stage)),
            sync_config=tune.SyncConfig(sync_artifacts=True),
            callbacks=[
                RecorderProxy(sp.name),
                *trackers.build(study.callbacks, study.name, sp.name, run.store.uri, run.store.local),
            ],
            verbose=0,
        ),
    )
