"""The driver's record of every trial of a stage (a Tune callback), and its terminal lines.

The driver sees every trial event, so recording happens here (one writer, no storage traffic
from the trials for bookkeeping). The record is saved as JSON in the study's storage, from
which `status`, `results` and resumed runs read.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from pyarrow import ArrowException
from ray.tune import Callback
from rich.console import Console
from rich.markup import escape

from orchestrator.execution.live_status import StudyStatus
from orchestrator.execution.live_view import LiveView
from orchestrator.execution.trial import trial_config
from orchestrator.execution.trial_results import (
    best_checkpoint,
    best_trial,
    error_text,
    exception_line,
    final_metrics,
    result_epoch,
    trial_uri,
)
from orchestrator.planning.budget import Spend, trial_spend
from orchestrator.planning.expand import StagePlan
from orchestrator.planning.resources import trial_charge
from orchestrator.storage.records import ENDED_STATUSES, deleted_checkpoints, save_stage_record, study_relative
from orchestrator.storage.relocation import relocated
from orchestrator.storage.store import Store
from trainables.runtime import selection
from trainables.runtime.selection import finite

SAVE_INTERVAL_S = 30.0  # the record (and so the spend) is saved at least this often while trials run
ENDED_GAP_S = 2.0  # and within this of a trial's end
TUNE_STATUS = {"TERMINATED": "done", "ERROR": "error", "RUNNING": "running", "PENDING": "pending", "PAUSED": "paused"}


def _trial_id(trial) -> str:
    """Our trial id: the trial's folder name (see stage_runner.trial_dirname)."""
    return os.path.basename(str(trial.path).rstrip("/")) if trial.path else trial.trial_id


class StageRecorder(Callback):
    """Keeps one record per trial of a stage and reports progress to the terminal."""

    def __init__(
        self,
        plan: StagePlan,
        store: Store,
        status: StudyStatus,
        console: Console,
        previous: dict | None = None,
        resources: dict | None = None,
        *,
        notifier=None,
    ):
        self.plan, self.store, self.status, self.console = plan, store, status, console
        self.notifier = notifier
        select = plan.stage.select
        self.resources = resources or {"cpu": plan.resources.cpu, "gpu": plan.resources.gpu}
        self.record: dict[str, Any] = {
            "stage": plan.name,
            "trainable": plan.stage.trainable,
            "state": "running",
            "select": select.model_dump() if select else None,
            "resources": self.resources,
            "compare": plan.stage.compare.model_dump() if plan.stage.compare else None,
            "within_seed": plan.stage.within_seed,
            "needs": list(plan.stage.needs),
            "trials": dict((previous or {}).get("trials", {})),
        }
        if (previous or {}).get("race"):  # a raced stage's decisions and values: kept by a resumed run
            self.record["race"] = previous["race"]
        self.status.stage(plan.name, "running", self.record["trials"], plan.num_trials, self.record["select"])
        self.view = LiveView(console, plan.name, plan.num_trials, self.record["select"])
        for t in self.record["trials"].values():  # trials that ended in an earlier run of the stage
            if t.get("status") in ENDED_STATUSES:
                self.view.finish(t.get("name", ""), t["status"], t.get("best"))
        self._started: set[str] = set()
        self._completed: set[str] = set()
        # trial id -> (when its running attempt started (monotonic), its wall time before it, and
        # when it started (epoch seconds))
        self._attempts: dict[str, tuple[float, float, float]] = {}
        self._restored_seen = False  # trials a restored experiment knows were taken in (first step)
        self._saved_at, self._ended = -float("inf"), False
        self.deleted = deleted_checkpoints(store)  # by `gc`: never named by a record again
        self.code: str | None = None  # the hash of the trainable's code in this run (set by run_stage)
        self.guard = None  # the study's BudgetGuard (orchestrator.execution.budget_guard), if it has a cap
        self.race = None  # a raced stage's StageRace (orchestrator.execution.race)

    # -- recording -------------------------------------------------------------------------
    def _here(self, trial, value):
        """`value` of a trial's config with its paths where the study is now: a trial Tune restored
        keeps the config it was stored with, which in a moved study folder names the old place."""
        return relocated(value, trial.config["trial"].get("storage") or self.store.uri, self.store.uri)

    def _update(self, trial, status: str | None = None) -> dict:
        spec = self._here(trial, trial.config["trial"])
        tid = _trial_id(trial)
        last = trial.last_result or {}
        metrics = final_metrics(last)
        status = status or self._status(trial, tid, last, metrics)
        if status == "done" and self.race is not None and self.race.is_eliminated(trial.trial_id):
            status = "eliminated"  # stopped by its stage's race (Tune calls that done)
        # The trial's own best over every epoch it ran (trainables.runtime.selection), not Tune's
        # metric_analysis, which sees only the reports that reached Tune (throttled ones do not).
        best = finite(last.get(selection.BEST)) if self.plan.stage.select is not None else None
        latest = trial.checkpoint
        # Storage is searched only once the trial has ended: while it runs, Tune calls us with
        # each result before it registers that result's checkpoint, so the lag is expected
        ended = status in ("done", "diverged", "error", "interrupted")
        manager = trial.run_metadata.checkpoint_manager
        latest_epoch = result_epoch(manager.latest_checkpoint_result)
        chosen, chosen_epoch = (
            best_checkpoint(trial, last, search_storage=ended) if best is not None else (latest, latest_epoch)
        )
        cfg = self._here(trial, trial_config(trial.config))
        # what the trial is charged per hour: what it holds and what it starts (Ray Data actors)
        charge = trial_charge(self.resources, self.plan.trainable, cfg)
        cfg.pop("seed", None)
        entry = self.record["trials"].get(tid, {})
        # a checkpoint Tune no longer knows of (a trial restored from an older experiment snapshot
        # runs again from its checkpoint and may report none): the record keeps the one it had
        known = {k: entry.get(k) for k in ("checkpoint", "checkpoint_epoch", "latest_checkpoint")}
        wall = self._wall_s(tid, entry, last)
        fresh = {
            "stage": self.plan.name,
            "trial_id": tid,
            "name": trial.trial_name if hasattr(trial, "trial_name") else str(trial),
            "variant": spec["variant"],
            "seed": spec["seed"],
            "config": cfg,
            "sampled": self._here(trial, trial.config.get("search") or {}),
            "upstream": spec.get("upstream") or {},
            "status": status,
            "iterations": last.get("training_iteration"),
            "duration_s": last.get("time_total_s"),
            "charged": charge,
            "wall_s": wall,
            "gpu_s": wall * charge["gpu"],
            "cpu_s": wall * charge["cpu"],
            "grid": spec.get("grid") or {},
            "metrics": metrics,
            "best": best,
            "best_epoch": last.get(selection.BEST_EPOCH),
            "checkpoint": trial_uri(self.store, chosen.path) if chosen else None,
            "checkpoint_epoch": chosen_epoch if chosen else None,
            "latest_checkpoint": trial_uri(self.store, latest.path) if latest else None,
            "latest_checkpoint_epoch": latest_epoch if latest else None,
            "path": trial_uri(self.store, trial.path),
            "failures": trial.num_failures,
        }
        if not last.get("training_iteration") and entry.get("iterations"):
            # Tune knows no result of it (restored from an experiment snapshot older than the
            # record, and stopped before it ran again): the record's results stay
            for key in ("iterations", "duration_s", "metrics", "best", "best_epoch"):
                fresh.pop(key)
        entry.update(fresh)
        if spec.get("race_group"):
            entry["race_group"] = spec["race_group"]
        if status == "eliminated":
            entry.setdefault("race", self.race.decision_of(trial.trial_id))
        # the code it ran: this run's for a trial that ran in it, else what it ran before
        entry["code"] = (
            self.code if tid in self._started or status == "running" else entry.get("code", spec.get("code"))
        )
        self._keep_checkpoints(entry, known)
        if status != "interrupted":
            entry.pop("stopped_by", None)  # a trial the budget stopped, now running again
        if status == "error":
            error = error_text(trial)
            entry["error"] = " ".join(str(error).split())[-400:] if error else "unknown error"
        self.record["trials"][tid] = entry
        return entry

    def _status(self, trial, tid: str, last: dict, metrics: dict) -> str:
        """The record's status of a trial from Tune's."""
        status = TUNE_STATUS.get(trial.status, trial.status.lower())
        # An interrupted run leaves its running trials TERMINATED too, and those released but
        # still waiting for a slot. A TERMINATED trial finished if it completed in this run
        # (done=True, or the complete event fired), or if it did not start in this run but has
        # results that the record does not call unfinished (restored as finished from an earlier
        # run); one that never ran has none and is still to run.
        ran = bool(last.get("training_iteration"))
        prior = self.record["trials"].get(tid, {}).get("status")
        restored = tid not in self._started and ran and prior not in ("interrupted", "pending")
        finished = last.get("done") is True or tid in self._completed or restored
        if status == "done" and not finished:
            return "interrupted" if tid in self._started or ran else "pending"
        if status == "done" and metrics.get("diverged"):
            return "diverged"
        return status

    def _keep_checkpoints(self, entry: dict, known: dict) -> None:
        """Checkpoints the record knew of that Tune no longer names stay; those gc deleted go."""
        if entry["checkpoint"] is None and known["checkpoint"]:
            entry["checkpoint"], entry["checkpoint_epoch"] = known["checkpoint"], known["checkpoint_epoch"]
        if entry["latest_checkpoint"] is None and known["latest_checkpoint"]:
            entry["latest_checkpoint"] = known["latest_checkpoint"]
        for key in ("checkpoint", "latest_checkpoint"):
            if entry[key] is not None and study_relative(entry[key]) in self.deleted:
                entry[key] = None  # Tune's experiment state still names it
                entry.setdefault("gc", {})[key] = "deleted by gc"

    # -- wall time (what a budget counts) --------------------------------------------------
    def _wall_s(self, tid: str, entry: dict, last: dict) -> float:
        """The trial's wall time so far: its ended attempts (every run, and what a killed driver
        had saved of its running one), plus the running one up to now, never less than Tune's
        time_total_s (records written before attempts were timed)."""
        if tid in self._attempts:
            started, before, _ = self._attempts[tid]
            wall = before + time.monotonic() - started
        else:
            wall = entry.get("wall_s", 0.0)
        return max(wall, last.get("time_total_s") or 0.0)

    def _open(self, trial) -> None:
        tid = _trial_id(trial)
        if tid not in self._attempts:
            before = self.record["trials"].get(tid, {}).get("wall_s", 0.0)
            self._attempts[tid] = (time.monotonic(), before, time.time())

    def _close(self, trial) -> None:
        """End the running attempt of a trial: its time joins the trial's `wall_s`."""
        tid = _trial_id(trial)
        attempt = self._attempts.pop(tid, None)
        if attempt is not None and tid in self.record["trials"]:
            entry = self.record["trials"][tid]
            entry["wall_s"] = attempt[1] + time.monotonic() - attempt[0]
            # when each attempt ran (epoch seconds): the report's timeline of the study
            entry.setdefault("attempts", []).append([round(attempt[2], 3), round(time.time(), 3)])
            self._charge(entry)

    def _charge(self, entry: dict) -> None:
        """A trial's GPU- and CPU-seconds from its wall time and what it is charged."""
        per_hour = self._charged(entry)
        entry["gpu_s"], entry["cpu_s"] = entry["wall_s"] * per_hour.gpu_hours, entry["wall_s"] * per_hour.cpu_hours

    # -- durability: the record is saved as the spend accrues ------------------------------
    def save(self, ended: bool = False) -> None:
        """Save the stage's record with every running trial's wall time up to now: after every
        trial end (`ended`; trial ends that come together are written together, at most every
        `ENDED_GAP_S`, so that a stage of 20,000 trials does not rewrite its record 20,000 times
        in a burst) and at least every `SAVE_INTERVAL_S` while trials run, so that a killed
        driver (OOM killer, preemption, a second Ctrl-C) loses at most that much of the spend and
        `resume` starts from it. Called after every step of Tune's loop too, which writes a
        pending end. A storage outage is waited out at the stage's end, not here."""
        now = time.monotonic()
        self._ended = self._ended or ended
        since = now - self._saved_at
        if not (since >= SAVE_INTERVAL_S or (self._ended and since >= ENDED_GAP_S)):
            return
        self._saved_at, self._ended = now, False
        for tid, (started, before, _) in self._attempts.items():
            entry = self.record["trials"].get(tid)
            if entry is not None:
                entry["wall_s"] = max(before + now - started, entry.get("wall_s", 0.0))
                self._charge(entry)
        try:
            save_stage_record(self.store, self.plan.name, self.record, retry=False)
        except (OSError, ArrowException) as exc:
            self.console.print(f"[yellow]warning[/]: stage record not saved ({' '.join(str(exc).split())[:120]})")

    def _pauses(self, trials) -> None:
        """Close the attempts of trials that a scheduler paused (PBT) or sent back to pending:
        a paused trial holds nothing, so it is not charged until it runs again."""
        if not self._attempts:
            return
        for trial in trials:
            if trial.status in ("PAUSED", "PENDING") and _trial_id(trial) in self._attempts:
                self._close(trial)

    def _take_in_restored(self, trials) -> None:
        """Once, at the first step of a restored experiment: the trials it knows as finished that
        the record lacks (they ended after the killed driver's last save) enter the record now,
        so that the spend and the budget count them from the start, not at the experiment's end."""
        self._restored_seen = True
        for trial in trials:
            tid = _trial_id(trial)
            if (
                trial.status in ("TERMINATED", "ERROR")
                and self.record["trials"].get(tid, {}).get("status") not in ENDED_STATUSES
            ):
                self._update(trial)

    def group_eliminated(self, group: str, decision: dict) -> None:
        """Its stage's race eliminated a group: its trials that already ran to their end are
        eliminated too (`best`, `top[k]`, gates and references read surviving groups only);
        their values stay in the record, marked as such."""
        for entry in self.record["trials"].values():
            if entry.get("race_group") == group and entry["status"] == "done":
                entry["status"], entry["race"] = "eliminated", dict(decision, ran_to_end=True)
                self.view.relabel(entry.get("name", ""), "done", "eliminated")

    def never_started(self, tid: str, name: str, config: dict, decision: dict) -> None:
        """A trial of an eliminated group that its stage's race kept from starting (`config`: the
        Tune config it would have had): in the record as eliminated, nothing run or spent."""
        again = self.record["trials"].get(tid, {}).get("started") is False  # said by an earlier run
        spec = config["trial"]
        cfg = trial_config(config)
        charge = trial_charge(self.resources, self.plan.trainable, cfg)
        cfg.pop("seed", None)
        self.record["trials"][tid] = {
            "stage": self.plan.name,
            "trial_id": tid,
            "name": name,
            "variant": spec["variant"],
            "seed": spec["seed"],
            "config": cfg,
            "sampled": config.get("search") or {},
            "upstream": spec.get("upstream") or {},
            "grid": spec.get("grid") or {},
            "status": "eliminated",
            "iterations": 0,
            "duration_s": 0.0,
            "charged": charge,
            "wall_s": 0.0,
            "gpu_s": 0.0,
            "cpu_s": 0.0,
            "metrics": {},
            "best": None,
            "failures": 0,
            "race_group": spec.get("race_group"),
            "race": decision,
            "started": False,
        }
        self.view.finish(name, "eliminated", None)
        if not again:
            self.console.print(
                f"[magenta]eliminated[/] {escape(name)}  never started  [dim]{escape(self._progress())}[/]"
            )

    def live_spend(self) -> Spend:
        """GPU- and CPU-hours of this stage's trials so far, the running ones up to now."""
        total = Spend()
        for tid, entry in self.record["trials"].items():
            if tid in self._attempts:
                wall = self._wall_s(tid, entry, {"time_total_s": entry.get("duration_s")})
                total = total + self._charged(entry).scaled(wall / 3600)
            else:
                total = total + trial_spend(entry)
        return total

    def _charged(self, entry: dict) -> Spend:
        """A trial's GPUs and CPUs as a Spend of one hour (its own and those it starts)."""
        charge = entry.get("charged") or self.resources
        return Spend(charge["gpu"], charge["cpu"])

    def running_need(self) -> Spend:
        """What the running trials will still use at their pace so far (trials without a pace
        yet: the median wall time of this stage's finished trials less their own, else nothing)."""
        now = time.monotonic()
        trials = self.record["trials"].values()
        walls = [w for t in trials if t["status"] == "done" and (w := t.get("wall_s") or t.get("duration_s"))]
        typical = statistics.median(walls) if walls else None
        need = Spend()
        for tid, (started, before, _) in self._attempts.items():
            entry = self.record["trials"].get(tid, {})
            left = self.view.eta_s(entry.get("name", ""))
            if left is None and typical is not None:
                left = max(typical - before - (now - started), 0.0)
            need = need + self._charged(entry).scaled((left or 0.0) / 3600)
        return need

    def running(self) -> bool:
        """Whether a trial of this stage is running now."""
        return bool(self._attempts)

    def on_step_begin(self, iteration, trials, **info):
        if not self._restored_seen:
            self._take_in_restored(trials)

    def on_step_end(self, iteration, trials, **info):
        self._pauses(trials)
        self.save()
        if self.guard is not None:
            self.guard.check()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._open(trial)
        entry = self._update(trial, "running")
        self._started.add(entry["trial_id"])
        self.console.print(f"[cyan]started[/]  {escape(entry['name'])}  [dim]{entry['trial_id']}[/]")
        self.view.update(entry["name"], {}, trial_config(trial.config))
        self.status.write()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        entry = self._update(trial, "running")
        self.view.update(entry["name"], result, trial_config(trial.config))
        self.status.write()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._completed.add(_trial_id(trial))
        self._close(trial)
        eliminated = self.race is not None and self.race.is_eliminated(trial.trial_id)
        entry = self._update(trial, "eliminated" if eliminated else None)
        if eliminated:
            if not entry.get("iterations") and entry["trial_id"] not in self._started:
                entry["started"] = False  # released, then stopped by the race before it started
        else:
            entry["status"] = "diverged" if entry["metrics"].get("diverged") else "done"
        colour = {"diverged": "yellow", "eliminated": "magenta"}.get(entry["status"], "green")
        self.view.finish(entry["name"], entry["status"], entry.get("best"))
        self.console.print(
            f"[{colour}]{entry['status']:<8}[/] {escape(entry['name'])}  {self._summary(entry)}  "
            f"[dim]{escape(self._progress())}[/]"
        )
        self.status.write(force=True)
        self.save(ended=True)
        if self.guard is not None:
            self.guard.check(force=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._close(trial)  # the failed attempt's time counts; the retry opens a new one
        entry = self._update(trial, "retrying")
        self.view.finish(entry["name"], "retrying", None)  # its bar and pace start again with the retry
        self.console.print(
            f"[yellow]retrying[/] {escape(entry['name'])} from its last checkpoint (failure {trial.num_failures})"
        )
        self.status.write(force=True)
        self.save(ended=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial)
        entry = self._update(trial, "error")
        self.view.finish(entry["name"], "error", None)
        line = exception_line(error_text(trial) or "") or "unknown error"
        self.console.print(
            f"[red]error[/]    {escape(entry['name'])}: {escape(line[:300])}  [dim]{escape(self._progress())}[/]"
        )
        if self.notifier is not None:
            self.notifier.send(
                "trial_error",
                f"trial {entry['name']} failed: {line[:200]} {self._progress()}",
                stage=self.plan.name,
                trial=entry["name"],
                error=line[:400],
            )
        self.status.write(force=True)
        self.save(ended=True)
        if self.guard is not None:
            self.guard.check(force=True)

    def finish(self) -> dict:
        """The stage has ended (every trial it has ended: the study's schedule knows how many a
        fan-out has): its record complete."""
        for tid in list(self._attempts):
            self._attempts.pop(tid)
        self.record["state"] = "complete"
        self.status.stage(self.plan.name, "complete", self.record["trials"])
        return self.record

    def on_experiment_end(self, trials, **info):
        for trial in trials:
            self._close(trial)
            self._update(trial)
        # Tune creates trials lazily, so an interrupted run may not know all of them yet:
        # the stage is complete only when every planned trial has ended.
        ended = sum(t["status"] in ENDED_STATUSES for t in self.record["trials"].values())
        self.record["state"] = "complete" if ended >= self.plan.num_trials else "interrupted"
        self.status.stage(self.plan.name, self.record["state"], self.record["trials"])

    def _progress(self) -> str:
        """`[3/6 ended: 2 running, 1 failed; best val/loss=0.01 pretrain/a/s1]`"""
        trials = self.record["trials"].values()
        ended = sum(t["status"] in ENDED_STATUSES for t in trials)
        running = sum(t["status"] in ("running", "retrying") for t in trials)
        failed = sum(t["status"] in ("error", "diverged") for t in trials)
        text = f"[{ended}/{self.plan.num_trials} ended, {running} running, {failed} failed"
        eliminated = sum(t["status"] == "eliminated" for t in trials)
        if eliminated:
            text += f", {eliminated} eliminated"
        best = best_trial(trials, self.record["select"])
        if best is not None:
            text += f"; best {self.record['select']['metric']}={best['best']:.4g} {best['name']}"
        return text + "]"

    def _summary(self, entry: dict) -> str:
        # progress in the trainable's own unit (epochs, folds) when it reports one: Tune's
        # report count is smaller when reports are batched (report_interval_s)
        metrics = entry.get("metrics") or {}
        unit = next((u for u in ("step", "epoch", "fold") if isinstance(metrics.get(u), (int, float))), None)
        count = f"{int(metrics[unit])} {unit}s" if unit else f"{entry.get('iterations') or 0} reports"
        parts = [count, f"{entry.get('duration_s') or 0:.1f}s"]
        select = self.plan.stage.select
        if select and entry.get("best") is not None:
            parts.append(f"best {select.metric}={entry['best']:.4g}")
        return "  ".join(parts)
