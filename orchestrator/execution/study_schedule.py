"""One schedule for the whole study: which trial of which stage may start now.

The study runs as one Ray Tune experiment (`study_tune.py`); this object is its brain, asked by
the experiment's search algorithm for the next trial and told by its callback when trials end.

- **A stage starts** when the stages it needs have ended (complete, gates passed, a successful
  trial), or earlier, while a needed stage still runs, when this stage reads it only through
  `${stage.all...}` and that stage has no gate and no race (a trial that ended can still lose its
  group's race): each of its trials then starts as soon as the
  upstream trial it reads has ended (the fan-out of an evaluation over trained models begins
  with the first model). `best`, `top[K]`, `trials[VARIANT]` and gates read a whole stage, so a
  stage that uses them waits for it: a `best` never changes after a trial used it.
- **Stages that need nothing of each other share the cluster from the start**: trials are
  released round-robin over the stages that run, each stage up to its concurrency (what fits the
  cluster, or `max_concurrent`), and the experiment's scheduler runs the trials of later stages
  first when several wait (`study_tune.StageSchedulers`), so that chains finish early.
- **A stage ends** when every one of its trials has ended; its number of trials is known once
  every stage it reads has ended (a fan-out's count). Its record is then complete, its gates are
  evaluated, `stage_end` is sent, and the stages that need it may start (or are gated, or
  skipped with the reason).
- The spend cap's gate closes the release of new trials (`BudgetGuard.may_start`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace

from rich.markup import escape

from orchestrator.execution import gates
from orchestrator.execution.race import StageRace, decision_line
from orchestrator.execution.recorder import StageRecorder
from orchestrator.execution.stage_runner import StudyRun, trial_dirname, trial_name
from orchestrator.execution.trial_results import best_trial
from orchestrator.planning import race_rule
from orchestrator.planning.expand import StagePlan
from orchestrator.planning.references import check_distinct, resolve_spec, successful
from orchestrator.planning.resources import concurrency, effective_resources
from orchestrator.planning.trials import TrialSpec
from orchestrator.storage.records import ENDED_STATUSES, save_stage_record
from orchestrator.study.references import RefError, parse, walk
from trainables.runtime.selection import BEST

ENDED = ENDED_STATUSES
TERMINAL = ("complete", "gated", "skipped", "failed")


@dataclass
class Candidate:
    """A trial to release: its resolved spec, its search sample (or None) and its Tune id."""

    spec: TrialSpec
    sampled: dict | None
    tune_id: str
    group: str | None = None  # its group of seeds, in a raced stage (planning.race_rule.group_key)


@dataclass
class StageRun:
    """One stage during the run."""

    sp: StagePlan  # as planned (references not resolved)
    state: str = "waiting"  # waiting | running | complete | gated | skipped | failed | interrupted
    recorder: StageRecorder | None = None
    res: dict = field(default_factory=dict)  # per trial, on this cluster
    limit: int = 1  # trials of this stage pending or running at once
    emitted: set[str] = field(default_factory=set)  # Tune ids of its trials (this run's and restored)
    ended: set[str] = field(default_factory=set)  # Tune ids of those that ended (done, diverged, error)
    specs: dict[str, TrialSpec] = field(default_factory=dict)  # resolved trials, by trial id
    queue: deque = field(default_factory=deque)  # candidates not yet released
    expected: int | None = None  # its number of trials, once known
    dirty: bool = True  # an upstream trial ended since the queue was filled
    race: StageRace | None = None  # a raced stage's race (`race:`)
    unsaved_decision: bool = False  # a race decision taken on a result the record has not seen yet

    @property
    def name(self) -> str:
        return self.sp.name


class StudySchedule:
    """What the study's experiment asks: the next trial, whether anything is left."""

    def __init__(self, run: StudyRun, records: dict[str, dict | None], todo: list[str], view):
        self.run, self.records, self.view = run, records, view
        self.stages = {name: StageRun(run.plan.stages[name]) for name in run.plan.order}
        for name, st in self.stages.items():
            if name not in todo:
                st.state = (records.get(name) or {}).get("state", "complete")
        # set by study_tune: (StageRun, Candidate) -> a Tune Trial; StagePlan -> one search sample
        self.factory = None
        self.sampler = None
        self._samples: dict[tuple[str, str], list] = {}  # (stage, trial id) -> its search samples, drawn once
        self._turn = 0

    # -- what the experiment asks --------------------------------------------------------------
    def next_trial(self):
        """The next trial to start, or None (none ready now)."""
        self.advance()
        guard = self.run.guard
        if guard is not None and not guard.may_start():
            return None
        running = [st for st in self.stages.values() if st.state == "running"]
        for i in range(len(running)):  # round-robin over the stages that run
            st = running[(self._turn + i) % len(running)]
            candidate = self._next_candidate(st)
            if candidate is not None:
                self._turn = (self._turn + i + 1) % len(running)
                st.emitted.add(candidate.tune_id)
                return self.factory(st, candidate)
        return None

    def finished(self) -> bool:
        """Nothing is left to release: every stage has ended (or cannot start), or the cap stopped
        the study."""
        self.advance()
        if self.run.guard is not None and self.run.guard.stopped:
            return True
        return all(st.state in TERMINAL for st in self.stages.values())

    # -- stages ----------------------------------------------------------------------------------
    def advance(self) -> None:
        """Start the stages that are ready; gate or skip those that cannot run."""
        for st in self.stages.values():
            if st.state != "waiting":
                continue
            ready, reason = self._readiness(st)
            if reason is not None:
                self._not_run(st, reason)
            elif ready:
                self.start(st)

    def _readiness(self, st: StageRun) -> tuple[bool, str | None]:
        """(may start now, why it never will)."""
        only_all = _read_only_through_all(st.sp)
        for dep in st.sp.stage.needs:
            upstream = self.stages[dep]
            record = self.records.get(dep)
            if upstream.state == "gated":
                return False, f"gated: it needs stage {dep!r}, which was not run ({(record or {}).get('reason')})"
            if upstream.state in ("skipped", "failed"):
                return False, f"it needs stage {dep!r}, which is {upstream.state}"
            if upstream.state == "complete":
                if gates.failed(record):
                    return False, f"gated: stage {dep!r} did not pass its gate " + "; ".join(
                        g["text"] for g in gates.failed(record)
                    )
                if not successful(record):
                    return False, f"it needs stage {dep!r}, which has no successful trial"
                continue
            # a raced stage's trial that ended may still lose its group's race: `all` waits for it
            early = (
                upstream.state == "running"
                and dep in only_all
                and not upstream.sp.stage.gates
                and upstream.sp.stage.race is None
            )
            if not early:
                return False, None
        return True, None

    def _not_run(self, st: StageRun, reason: str) -> None:
        state = "gated" if reason.startswith("gated") else "skipped"
        st.state = state
        self.records[st.name] = skipped_record(st.sp, reason, state)
        save_stage_record(self.run.store, st.name, self.records[st.name])
        self.run.status.stage(st.name, state)
        self.run.console.print(f"[yellow]stage {st.name} {state}[/]: {escape(reason)}")

    def start(self, st: StageRun) -> None:
        """The stage's recorder, its resources and concurrency; the line that says so."""
        run, sp = self.run, st.sp
        res, note = effective_resources(sp.resources, run.shape)
        if note:
            run.console.print(f"[yellow]note[/]: stage {sp.name}: {note}")
        st.res = res
        st.limit = max(1, concurrency(res, run.shape, run.options.max_concurrent or sp.stage.max_concurrent))
        workers = sp.resources.workers
        each = (
            f"{res['cpu']:g} CPU, {res['gpu']:g} GPU each"
            if workers == 1
            else f"{workers} data-parallel workers of {sp.resources.cpu:g} CPU, {res['gpu'] / workers:g} GPU each"
        )
        count = f"{sp.num_trials} trials" if not sp.has_refs else f"{sp.num_trials} trials (when its inputs exist)"
        run.console.print(f"[bold]stage {sp.name}[/]: {count}, {st.limit} at a time ({each})")
        recorder = self._recorder(st)
        if sp.stage.race is not None:
            race = sp.stage.race
            shown = ", ".join(map(str, race_rule.rungs(race.first, race.factor, race.first * race.factor**3)))
            run.console.print(
                f"  race: rungs at epochs {shown}, ...; alpha {race.alpha:g} over all rungs, "
                f"{race_rule.test_name(race.test)}, at least {race.min_seeds} paired seeds"
            )
        recorder.view = self.view.section(sp.name, sp.num_trials, recorder.record["select"])
        for t in recorder.record["trials"].values():  # trials that ended in an earlier run of the stage
            if t.get("status") in ENDED:
                recorder.view.finish(t.get("name", ""), t["status"], t.get("best"))
        st.recorder, st.state = recorder, "running"
        self.records[sp.name] = recorder.record
        if run.guard is not None:
            run.guard.begin(recorder)

    def _recorder(self, st: StageRun) -> StageRecorder:
        run = self.run
        recorder = StageRecorder(st.sp, run.store, run.status, run.console, self.records.get(st.name), st.res)
        recorder.notifier, recorder.code = run.notifier, run.code.get(st.sp.stage.trainable, {}).get("hash")
        if st.sp.stage.race is not None:
            if st.race is None:
                st.race = StageRace(st.sp, recorder.record)
            recorder.race = st.race
        return recorder

    def recorder_of(self, stage: str) -> StageRecorder:
        """The recorder of a trial's stage. A stage whose record says complete may still see a
        trial: Tune's experiment snapshot (taken every ~10 s) can be older than the stage's record
        (saved at every trial end), so a killed driver's experiment restores a finished trial as
        unfinished; it runs again from its last checkpoint (its last epoch: it ends at once), and
        its record is kept up to date by a recorder of its own."""
        st = self.stages[stage]
        if st.recorder is None:
            st.res = st.res or effective_resources(st.sp.resources, self.run.shape)[0]
            st.recorder = self._recorder(st)
            self.records[stage] = st.recorder.record
        return st.recorder

    # -- trials ----------------------------------------------------------------------------------
    def _next_candidate(self, st: StageRun) -> Candidate | None:
        if self._live(st) >= st.limit:
            return None
        if st.dirty:
            self._fill(st)
        while st.queue:
            candidate = st.queue.popleft()
            if candidate.tune_id in st.emitted:
                continue
            if st.race is not None and st.race.group_eliminated(candidate.group):
                self._never_started(st, candidate)
                continue
            return candidate
        return None

    def _live(self, st: StageRun) -> int:
        """Trials of the stage released and not ended (pending or running)."""
        return len(st.emitted - st.ended)

    def _samples_of(self, st: StageRun, spec: TrialSpec) -> list:
        """The search samples of a planned trial ([None] without a search), drawn once per run."""
        # a raced stage runs each sample with every seed (its group); else each trial draws its own
        group = race_rule.group_key(spec.variant, spec.grid, spec.config, spec.upstream, None) if st.race else None
        key = (st.name, group or spec.id)
        if key not in self._samples:
            search = st.sp.stage.search
            self._samples[key] = [self.sampler(st.sp) for _ in range(search.num_samples)] if search else [None]
        return self._samples[key]

    def _fill(self, st: StageRun) -> None:
        """Queue the stage's trials that can be resolved now and were not released yet; its
        number of trials, once every stage it reads has ended."""
        st.dirty = False
        sp = st.sp
        upstream_done = all(self.stages[d].state in TERMINAL for d in _read_stages(sp))
        view = {name: self._view(name) for name in _read_stages(sp)}
        resolved: list[TrialSpec] = []
        for spec in sp.trials:
            if not spec.has_refs:
                resolved.append(spec)
                continue
            try:
                resolved += resolve_spec(spec, view, sp.trainable.settings, self.run.plan.study_dir)
            except RefError as exc:
                if upstream_done:
                    self._fail(st, str(exc))
                    return
        if st.race is not None:  # seed after seed: every group's first seeds run first, so rungs fill early
            seeds = self.run.plan.study.seeds_of(sp.stage)
            resolved.sort(key=lambda s: seeds.index(s.seed) if s.seed in seeds else len(seeds))
        for spec in resolved:
            if spec.id not in st.specs:
                try:
                    check_distinct(spec, st.specs)
                except RefError as exc:
                    self._fail(st, str(exc))
                    return
        queued = {c.tune_id for c in st.queue}
        count = 0
        for spec in resolved:
            for k, sampled in enumerate(self._samples_of(st, spec)):
                count += 1
                # unique in the study's one experiment: two stages may plan the same trial
                # (same trainable, config and seed), whose folders differ only by stage
                tune_id = f"{st.name}-{spec.id}_{k:05d}"
                group = None
                if st.race is not None:
                    group = race_rule.group_key(spec.variant, spec.grid, spec.config, spec.upstream, sampled)
                    st.race.add(tune_id, group, _group_label(spec.name, spec.seed, tune_id, sampled), spec.seed)
                if tune_id not in st.emitted and tune_id not in queued:
                    st.queue.append(Candidate(spec, sampled, tune_id, group))
        if upstream_done:
            st.expected = count
            self.trial_ended(st.name)  # a stage with nothing (left) to run ends here

    def _view(self, name: str) -> dict:
        """What a stage's references read of stage `name`: its record, or while it runs the
        trials of it that have ended."""
        record = self.records.get(name) or {"trials": {}}
        if self.stages[name].state in TERMINAL:
            return record
        ended = {k: t for k, t in record.get("trials", {}).items() if t.get("status") in ENDED}
        return {**record, "trials": ended}

    def _fail(self, st: StageRun, reason: str) -> None:
        """A stage whose references cannot be resolved: skipped with the reason, if nothing of it
        started yet; else it ends with what ran."""
        if not st.emitted:
            st.state = "waiting"
            if st.recorder is not None and self.run.guard is not None:
                self.run.guard.end(st.recorder)
            self._not_run(st, reason)
            return
        st.expected = len(st.emitted)
        self.run.console.print(f"[yellow]stage {st.name}[/]: {escape(reason)}")

    def took_in(self, stage: str, tune_id: str, ended: bool, trial=None) -> StageRun:
        """A trial Tune restored from an earlier run of the study: its stage runs."""
        st = self.stages[stage]
        if st.state == "waiting":
            self.start(st)
        st.emitted.add(tune_id)
        if ended:
            st.ended.add(tune_id)
        spec = trial.config["trial"] if trial is not None else {}
        if st.race is not None and spec.get("race_group"):
            label = _group_label(spec["name"], spec["seed"], tune_id, trial.config.get("search"))
            st.race.add(tune_id, spec["race_group"], label, spec["seed"])
            last = trial.last_result or {}
            if ended:
                status = "done" if trial.status == "TERMINATED" and not last.get("diverged") else "error"
                st.race.on_end(tune_id, status, last.get(BEST), race_rule.progress(last))
        return st

    # -- the race ---------------------------------------------------------------------------------
    def race_step(self) -> None:
        """Decide what restored trials made ready (a resumed run)."""
        for st in self.stages.values():
            if st.race is not None and st.state == "running":
                made = st.race.step()
                if made:
                    self.race_decided(st.name, made)

    def race_decided(self, stage: str, made: list[dict], save: bool = True) -> None:
        """Groups the race eliminated: said, their unreleased trials recorded as never started,
        the record saved at once (a killed driver's resume keeps the decisions), or (`save`
        False: decided on a trial's result, which the record gets after the scheduler) as soon
        as the record has that result (`result_recorded`), so that the saved record has the
        values the decision read."""
        st = self.stages[stage]
        metric = st.sp.stage.select.metric
        for d in made:
            self.run.console.print(f"[magenta]race[/] {st.name}: {escape(decision_line(d, metric))}")
            st.recorder.group_eliminated(d["group"], d)
            if self.run.notifier is not None:
                self.run.notifier.send("race", f"stage {st.name}: {decision_line(d, metric)}", stage=st.name)
        kept = deque()
        for candidate in st.queue:
            if candidate.tune_id not in st.emitted and st.race.group_eliminated(candidate.group):
                self._never_started(st, candidate)
            else:
                kept.append(candidate)
        st.queue = kept
        if save:
            save_stage_record(self.run.store, st.name, st.recorder.record)
        st.unsaved_decision = not save
        self.trial_ended(st.name)

    def result_recorded(self, stage: str) -> None:
        """The record has a trial's latest result: saved now if a race decision waited for it."""
        st = self.stages[stage]
        if st.unsaved_decision:
            save_stage_record(self.run.store, st.name, st.recorder.record)
            st.unsaved_decision = False

    def _race_saving(self, st: StageRun, record: dict) -> None:
        """What the race did not spend, into the record and on the terminal."""
        saved = race_rule.saving(record)
        if saved is None:
            return
        guard = self.run.guard
        usd = guard.cap.prices.usd(saved["gpu_hours"], saved["cpu_hours"]) if guard is not None else None
        record["race"]["saving"] = dict(saved, usd=usd)
        save_stage_record(self.run.store, st.name, record)
        self.run.console.print(f"[magenta]race[/] {st.name}: {escape(race_rule.saving_line(saved, usd))}")

    def _never_started(self, st: StageRun, candidate: Candidate) -> None:
        config = self.factory.config_of(st, candidate)
        shim = SimpleNamespace(config=config, trial_id=candidate.tune_id)
        decision = st.race.state["eliminated"][candidate.group]
        st.recorder.never_started(trial_dirname(shim), trial_name(shim), config, decision)
        st.emitted.add(candidate.tune_id)
        st.ended.add(candidate.tune_id)
        st.race.final[candidate.tune_id] = None

    def trial_ended(self, stage: str, tune_id: str | None = None) -> None:
        """Called when a trial of `stage` ended: the stages that read it may release more; the
        stage ends when all its trials have."""
        for st in self.stages.values():
            if stage in _read_stages(st.sp):
                st.dirty = True
        st = self.stages[stage]
        if tune_id is not None:
            st.ended.add(tune_id)
        if st.state != "running" or st.expected is None or st.queue:
            return
        if len(st.ended) >= st.expected and self._live(st) == 0:
            self._end(st)

    def _end(self, st: StageRun) -> None:
        """The stage has ended: its record complete and saved, `stage_end`, its gates."""
        record = st.recorder.finish()
        st.state = record["state"]
        if self.run.guard is not None:
            self.run.guard.end(st.recorder)
        save_stage_record(self.run.store, st.name, record)
        notifier = self.run.notifier
        if st.race is not None:
            self._race_saving(st, record)
        if notifier is not None:
            notifier.send("stage_end", stage_line(record), stage=st.name, storage=self.run.store.uri)
        if st.sp.stage.gates and record["state"] == "complete":
            record["gates"] = gates.evaluate(record, st.sp.stage.gates)
            save_stage_record(self.run.store, st.name, record)
            for g in record["gates"]:
                colour = "green" if g["passed"] else "yellow"
                self.run.console.print(f"[{colour}]gate[/] {st.name}: {escape(g['text'])}")
                if notifier is not None:
                    verdict = "passed" if g["passed"] else "FAILED"
                    notifier.send("gate", f"gate of stage {st.name} {verdict}: {g['text']}", stage=st.name)
        self.advance()


def skipped_record(sp: StagePlan, reason: str, state: str = "skipped") -> dict:
    """The record of a stage that does not run (gated, or skipped with the reason)."""
    return {
        "stage": sp.name,
        "trainable": sp.stage.trainable,
        "state": state,
        "reason": reason,
        "select": sp.stage.select.model_dump() if sp.stage.select else None,
        "within_seed": sp.stage.within_seed,
        "needs": list(sp.stage.needs),
        "trials": {},
    }


def stage_line(record: dict) -> str:
    """`stage pretrain complete: 6 trials, 5 done, 1 failed; best val/loss=0.0123 (pretrain/a/s1)`"""
    trials = list(record.get("trials", {}).values())
    done = sum(t["status"] == "done" for t in trials)
    failed = sum(t["status"] in ("error", "diverged") for t in trials)
    text = f"stage {record['stage']} {record['state']}: {len(trials)} trials, {done} done, {failed} failed"
    best = best_trial(trials, record.get("select"))
    if best is not None:
        text += f"; best {record['select']['metric']}={best['best']:.4g} ({best['name']})"
    return text


def _group_label(name: str, seed, tune_id: str, sampled) -> str:
    """A group's name: its trials' name without the seed (`pre/small/lr=0.1`), with the search
    sample's index as trial names have it (`.../00001`)."""
    return name.replace(f"/s{seed}", "", 1) + (f"/{tune_id.split('_')[-1]}" if sampled else "")


def _refs(sp: StagePlan):
    return [parse(text) for spec in sp.trials for _, text in walk(spec.config)]


def _read_stages(sp: StagePlan) -> set[str]:
    """The stages whose results this stage's references read."""
    return {ref.stage for ref in _refs(sp)}


def _read_only_through_all(sp: StagePlan) -> set[str]:
    """The stages this stage reads only through `${stage.all...}` (per upstream trial)."""
    refs = _refs(sp)
    return {r.stage for r in refs if r.selector == "all"} - {r.stage for r in refs if r.selector != "all"}
