"""The whole study as one Ray Tune experiment: one `Tuner` whose search algorithm releases each
trial when its inputs exist (`study_schedule.StudySchedule` decides which), so that stages
overlap, a fan-out's downstream trial starts as soon as its upstream trial has ended, and
workers are started once for the whole study (`reuse_actors`, one trainable for every stage).

Per-stage settings keep their meaning, per trial: its resources (a callable of the trial's
config: `tune.with_resources`), `stop`, `max_failures` and checkpoint keep rules (given to each
`Trial` as it is created), its scheduler (`StageSchedulers`: ASHA or PBT act within their stage
only), `max_concurrent` (the schedule's per-stage limit). One experiment folder, the study's
own (`experiment_state-*.json` at its top): one `resume` continues everything.

Ray limits met, and what is done instead:
- A trial's folder may not contain `/` (`Trial.__init__`, ray/tune/experiment/trial.py:406;
  `_generate_dirname` strips it, :1000). Trials keep their documented place,
  `<study>/<stage>/<trial id>/`, by setting the trial's `relative_logdir` (and its storage's
  `trial_dir_name`) when it is created, before Tune derives a name (`init_local_path`, :631).
- Searchers other than `BasicVariantGenerator` get one pending trial at a time
  (`_get_max_pending_trials`, ray/tune/execution/tune_controller.py:2132): the schedule's own
  per-stage limits bound what is released, so `TUNE_MAX_PENDING_TRIALS_PG` is raised to their sum.
- Tune pickles the search algorithm, scheduler and callbacks into its experiment state: each is
  a small object that finds this driver's live schedule by the study's name (`_LIVE`), so a
  restored experiment drives this run's schedule.
"""

from __future__ import annotations

import copy
import os
import time
import traceback

from ray import tune
from ray.tune import Callback, TuneError
from ray.tune.execution.placement_groups import PlacementGroupFactory
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import SearchAlgorithm
from ray.tune.search.variant_generator import generate_variants
from ray.tune.trainable.function_trainable import wrap_function

from orchestrator.execution import search, trackers
from orchestrator.execution.live_view import StudyView
from orchestrator.execution.race import RaceScheduler
from orchestrator.execution.stage_runner import (
    StudyRun,
    _budget_stop,
    _resolve_legacy_pickles,
    checkpoint_config,
    trial_common,
    trial_dirname,
    trial_name,
)
from orchestrator.execution.study_schedule import Candidate, StageRun, StudySchedule
from orchestrator.execution.trial import run_trial
from orchestrator.storage.records import STATE_DIR, save_stage_record

_LIVE: dict[str, StudySchedule] = {}  # study name -> this driver's schedule


def trial_resources(config: dict) -> PlacementGroupFactory:
    """A trial's own resources, from its config (the stage's, on this cluster)."""
    res = config["trial"]["resources"]
    return PlacementGroupFactory([{"CPU": res["cpu"], "GPU": res["gpu"]}])


def trainable_name(study: str) -> str:
    """The one trainable of the study's trials, registered under the study's name: the trial
    actors' name in the Ray dashboard (a reused actor keeps its first trial's, whatever stage)."""
    name = f"study-{study}"
    tune.register_trainable(name, wrap_function(tune.with_resources(run_trial, trial_resources), name=study))
    return name


class StudySearch(SearchAlgorithm):
    """The experiment's search algorithm: the schedule's next trial."""

    def __init__(self, study: str):
        self.study = study

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def add_configurations(self, experiments) -> None:
        """The trials come from the schedule, not from the experiment's (empty) param_space; they
        share the experiment's storage context (its driver staging folder is the one Tune syncs)."""
        _LIVE[self.study].factory.adopt(experiments[0].storage)

    def next_trial(self):
        return _LIVE[self.study].next_trial()

    def is_finished(self) -> bool:
        return _LIVE[self.study].finished()


class _StageView:
    """The experiment as one stage's scheduler may see it: only that stage's trials."""

    def __init__(self, controller, stage: str):
        self._controller, self._stage = controller, stage

    def get_trials(self):
        return [t for t in self._controller.get_trials() if t.config["trial"]["stage"] == self._stage]

    def get_live_trials(self):
        return {t for t in self._controller.get_live_trials() if t.config["trial"]["stage"] == self._stage}

    def __getattr__(self, name):
        return getattr(self._controller, name)


class StageSchedulers(TrialScheduler):
    """One trial scheduler per stage (FIFO, or the stage's ASHA / PBT on its select metric) behind
    one: each sees only its stage's trials. Trials of later stages run first when several wait,
    so that what a chain still needs finishes early."""

    _supports_buffered_results = False

    def __init__(self, study: str):
        super().__init__()
        self.study = study
        self._by_stage: dict[str, TrialScheduler] | None = None

    def _stages(self) -> dict[str, TrialScheduler]:
        if self._by_stage is None:
            plan = _LIVE[self.study].run.plan
            self._by_stage = {n: _scheduler(self.study, plan.stages[n]) for n in plan.order}
        return self._by_stage

    def _of(self, trial) -> tuple[TrialScheduler, str]:
        stage = trial.config["trial"]["stage"]
        return self._stages()[stage], stage

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial):
        scheduler, stage = self._of(trial)
        scheduler.on_trial_add(_StageView(tune_controller, stage), trial)

    def on_trial_error(self, tune_controller, trial):
        scheduler, stage = self._of(trial)
        scheduler.on_trial_error(_StageView(tune_controller, stage), trial)

    def on_trial_result(self, tune_controller, trial, result):
        scheduler, stage = self._of(trial)
        return scheduler.on_trial_result(_StageView(tune_controller, stage), trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        scheduler, stage = self._of(trial)
        scheduler.on_trial_complete(_StageView(tune_controller, stage), trial, result)

    def on_trial_remove(self, tune_controller, trial):
        scheduler, stage = self._of(trial)
        scheduler.on_trial_remove(_StageView(tune_controller, stage), trial)

    def choose_trial_to_run(self, tune_controller):
        _evict_idle_actors(tune_controller)
        for stage, scheduler in reversed(list(self._stages().items())):
            chosen = scheduler.choose_trial_to_run(_StageView(tune_controller, stage))
            if chosen is not None:
                return chosen
        return None

    def debug_string(self) -> str:
        return "One scheduler per stage: " + ", ".join(f"{n}: {type(s).__name__}" for n, s in self._stages().items())

    def save(self, checkpoint_path: str) -> None:
        """Nothing of its own to save: each stage's scheduler starts afresh on a resumed run."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""


def _scheduler(study: str, sp) -> TrialScheduler:
    """A stage's own scheduler: its search's (ASHA, PBT), its race's, else first in, first out."""
    if sp.stage.race is not None:
        return _StageRaceScheduler(study, sp.name)
    return search.scheduler(sp) or FIFOScheduler()


class _StageRaceScheduler(RaceScheduler):
    """A raced stage's scheduler, finding this driver's race by study and stage (picklable)."""

    def __init__(self, study: str, stage: str):
        super().__init__()
        self.study, self.stage = study, stage

    def race(self):
        return _LIVE[self.study].stages[self.stage].race

    def decided(self, made: list[dict], at_result: bool) -> None:
        _LIVE[self.study].race_decided(self.stage, made, save=not at_result)


def _evict_idle_actors(wrapped) -> None:
    """Stop the idle trial actors that no pending trial can reuse, at the start of each step's
    scheduling (after the searcher released its trials, before Tune reuses its cached actors).

    Tune keeps one idle actor while its searcher is not finished, for a trial of the same shape
    to come (`_ObjectCache(may_keep_one=True)`, ray/tune/execution/tune_controller.py:155, and
    `flush_cached_objects`). With one searcher for the whole study that actor can hold its
    resources for as long as any stage runs, and Tune does not see what a running trial still
    needs beyond its own placement group (Ray Train's workers, Ray Data's actors): those then
    wait forever for what an idle actor of a finished stage holds. What the schedule releases
    next is pending in this same step, so reuse is kept wherever it can happen."""
    controller = getattr(wrapped, "_tune_controller", wrapped)
    cache = getattr(controller, "_actor_cache", None)
    if cache is None or not cache.num_cached_objects:
        return
    waiting = (Trial.PENDING, Trial.PAUSED)  # a trial PBT paused runs again, and may reuse an actor
    wanted = {t.placement_group_factory for t in controller.get_trials() if t.status in waiting}
    for shape in [k for k in list(cache._cached_objects) if k not in wanted]:
        while cache.has_cached_object(shape):
            actor = cache.pop_cached_object(shape)
            actor.set_on_stop(None)
            actor.set_on_error(None)
            controller._remove_actor(tracked_actor=actor)


class StudyCallback(Callback):
    """Tune's events, to the recorder of the trial's stage and to the schedule."""

    def __init__(self, study: str):
        self.study = study

    def _schedule(self) -> StudySchedule:
        return _LIVE[self.study]

    def _recorder(self, trial):
        return self._schedule().recorder_of(trial.config["trial"]["stage"])

    def on_step_begin(self, iteration, trials, **info):
        schedule = self._schedule()
        if schedule.took_in_restored:
            return
        schedule.took_in_restored = True
        if trials:  # a restored experiment: new trials share the restored ones' storage context
            schedule.factory.adopt(trials[0].storage)
        by_stage: dict[str, list] = {}
        for trial in trials:  # trials a restored experiment knows: their stages run
            ended = trial.status in (Trial.TERMINATED, Trial.ERROR)
            st = schedule.took_in(trial.config["trial"]["stage"], trial.trial_id, ended, trial)
            if st.recorder is not None or not ended:
                schedule.recorder_of(st.name)
                by_stage.setdefault(st.name, []).append(trial)
        for name, stage_trials in by_stage.items():
            schedule.stages[name].recorder._take_in_restored(stage_trials)
        for name in by_stage:
            schedule.trial_ended(name)
        schedule.race_step()

    def on_step_end(self, iteration, trials, **info):
        schedule = self._schedule()
        running = [st for st in schedule.stages.values() if st.recorder is not None and st.state == "running"]
        for st in running:
            st.recorder._pauses([t for t in trials if t.config["trial"]["stage"] == st.name])
            st.recorder.save()
        if schedule.run.guard is not None:
            schedule.run.guard.check()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._recorder(trial).on_trial_start(iteration, trials, trial, **info)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._recorder(trial).on_trial_result(iteration, trials, trial, result, **info)
        self._schedule().result_recorded(trial.config["trial"]["stage"])

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._recorder(trial).on_trial_recover(iteration, trials, trial, **info)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._recorder(trial).on_trial_complete(iteration, trials, trial, **info)
        self._schedule().trial_ended(trial.config["trial"]["stage"], trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._recorder(trial).on_trial_error(iteration, trials, trial, **info)
        self._schedule().trial_ended(trial.config["trial"]["stage"], trial.trial_id)

    def on_experiment_end(self, trials, **info):
        schedule = self._schedule()
        for st in schedule.stages.values():
            if st.recorder is None or st.state != "running":
                continue
            st.recorder.on_experiment_end([t for t in trials if t.config["trial"]["stage"] == st.name])
            st.state = st.recorder.record["state"]


def _sample(sp) -> dict:
    """One draw of a stage's search space (Tune's own samplers)."""
    _, resolved = next(generate_variants({"search": search.to_tune(sp.search_space)}))
    return resolved["search"]


class _Trials:
    """Creates the Tune trial of a released candidate: its stage's settings given per trial."""

    def __init__(self, run: StudyRun, name: str):
        self.run, self.name = run, name
        self.storage = None  # the experiment's StorageContext (`adopt`)

    def adopt(self, storage) -> None:
        """Create trials with the experiment's own storage context: the same storage, and the
        same driver staging folder (Tune syncs the trials' logs from there: a context of our own
        made in another second would have another, and result.json, progress.csv and the
        TensorBoard files would never reach storage)."""
        self.storage = copy.copy(storage)
        self.storage.trial_dir_name = None

    def config_of(self, st: StageRun, candidate: Candidate) -> dict:
        """The Tune config of a candidate's trial: its spec, what every trial of the stage carries,
        its search sample and, in a raced stage, its group."""
        config = {"trial": dict(candidate.spec.to_dict(), **trial_common(self.run, st.sp, st.res))}
        if candidate.group is not None:
            config["trial"]["race_group"] = candidate.group
        if candidate.sampled is not None:
            config["search"] = candidate.sampled
        return config

    def __call__(self, st: StageRun, candidate: Candidate) -> Trial:
        study = self.run.plan.study
        sp = st.sp
        policy = study.checkpoint_of(sp.stage)
        keep = policy.keep
        if sp.stage.search and sp.stage.search.scheduler == "pbt" and keep is not None and keep < 4:
            keep = 4  # PBT clones other trials' checkpoints; deleting them too early breaks exploitation
        config = self.config_of(st, candidate)
        trial = Trial(
            self.name,
            config=config,
            trial_id=candidate.tune_id,
            storage=self.storage,
            experiment_tag=candidate.tune_id,
            stopping_criterion=dict(sp.stage.stop),
            checkpoint_config=checkpoint_config(keep, sp.stage.select is not None, policy.keep_best),
            trial_name_creator=trial_name,
            max_failures=study.max_failures_of(sp.stage),
        )
        # its documented place, <study>/<stage>/<trial id>/ (see the module doc)
        trial.relative_logdir = f"{sp.name}/{trial_dirname(trial)}"
        trial.storage.trial_dir_name = trial.relative_logdir
        return trial


def run_schedule(run: StudyRun, records: dict, todo: list[str]) -> StudySchedule:
    """Run (or continue) the study's stages in `todo` as one experiment; the schedule, with every
    stage's state and record."""
    study = run.plan.study
    view = StudyView(run.console)
    schedule = StudySchedule(run, records, todo, view)
    schedule.factory, schedule.sampler = _Trials(run, trainable_name(study.name)), _sample
    schedule.took_in_restored = False
    _LIVE[study.name] = schedule
    limits = sum(len(sp.trials) for sp in run.plan.stages.values()) or 1
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(min(max(limits, 16), 200)))
    tuner = _tuner(run, schedule)
    view.start()
    started, fit_started_at = time.perf_counter(), time.time()
    try:
        tuner.fit()
    except TuneError as exc:
        _tune_stopped(run, schedule, exc)
    finally:
        view.stop()
        for st in schedule.stages.values():
            if st.recorder is None:
                continue
            # the experiment's start and wall time (every stage of this run shares them)
            st.recorder.record["fit_started_at"] = fit_started_at
            st.recorder.record["wall_s"] = time.perf_counter() - started
            if run.guard is not None:
                _budget_stop(st.recorder.record, run.guard.stopped)
                run.guard.end(st.recorder)
            save_stage_record(run.store, st.name, st.recorder.record)
    return schedule


def _tuner(run: StudyRun, schedule: StudySchedule) -> tune.Tuner:
    """The study's Tuner, restored when an earlier run of it was interrupted."""
    study = run.plan.study
    name = schedule.factory.name
    storage_path, storage_fs = run.store.ray_storage()
    experiment = storage_path if storage_fs else run.store.uri
    if tune.Tuner.can_restore(experiment, storage_filesystem=storage_fs):
        _resolve_legacy_pickles()
        run.console.print(f"[dim]continuing the interrupted run in {run.store.uri}[/]")
        return tune.Tuner.restore(
            experiment, name, resume_errored=run.options.retry_errored, storage_filesystem=storage_fs
        )
    parent, folder = storage_path.rstrip("/").rsplit("/", 1)
    return tune.Tuner(
        name,
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=StudySearch(study.name),
            scheduler=StageSchedulers(study.name),
            reuse_actors=True,
            trial_name_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=folder,
            storage_path=parent,
            storage_filesystem=storage_fs,
            sync_config=tune.SyncConfig(sync_artifacts=True),
            callbacks=[
                StudyCallback(study.name),
                *trackers.build(study.callbacks, study.name, None, run.store.uri, run.store.local),
            ],
            verbose=0,
        ),
    )


def _tune_stopped(run: StudyRun, schedule: StudySchedule, exc: TuneError) -> None:
    """Tune itself stopped (not a trial failing: those are recorded and retried): the running
    stages fail with the reason; the traceback is kept with the study."""
    run.store.write_text(traceback.format_exc(), STATE_DIR, "errors", "study.txt")
    last = [line for line in str(exc).strip().splitlines() if line.strip()][-1:] or ["unknown error"]
    where = run.store.child_uri(STATE_DIR, "errors", "study.txt")
    run.console.print(f"[red]Ray Tune stopped[/]: {last[0][:300]} (traceback in {where})")
    for st in schedule.stages.values():
        if st.state == "running" and st.recorder is not None:
            st.state = st.recorder.record["state"] = "failed"
            st.recorder.record["reason"] = last[0][:300]
