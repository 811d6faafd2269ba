"""A raced stage while it runs (`race:`): its groups of seeds, each trial's value at the rungs,
and the decisions, made with `orchestrator.planning.race_rule` as the values come in.

- Values come from the stage's scheduler (`RaceScheduler`), which sees each result before the
  experiment's callbacks: the trial's best value of the select metric at the rung's epoch
  (a raced stage reports every epoch). A trial that ended normally has its final best at every
  later rung; one that failed, diverged or was eliminated has no value beyond what it reported.
- A rung is decided once, when every surviving group is settled there (it has `min_seeds`
  values, or none of its trials can still bring one) and two groups can be compared; later
  rungs wait for earlier ones. Only groups with a trial still to run or to start are tested:
  eliminating a group that has ended saves nothing.
- An eliminated group's running trials stop at their next report (their last checkpoint kept),
  its released trials are stopped before they start, and the schedule never releases the rest.
- Everything is kept in the stage's record (`record["race"]`: the values, every rung's decision,
  the eliminated groups), saved at once after a decision, so that `resume` after a driver kill
  keeps every decision already made and decides the remaining rungs on the same values.
"""

from __future__ import annotations

import math
import time

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from orchestrator.planning import race_rule
from orchestrator.planning.expand import StagePlan
from trainables.runtime import selection
from trainables.runtime.selection import finite


class StageRace:
    """The race of one stage (see the module doc)."""

    def __init__(self, sp: StagePlan, record: dict):
        self.settings, self.mode = sp.stage.race, sp.stage.select.mode
        state = record.setdefault("race", {})
        state["settings"] = self.settings.model_dump()
        for key in ("values", "groups", "eliminated"):
            state.setdefault(key, {})
        state.setdefault("rungs", [])
        self.state = state
        self.members: dict[str, dict] = {}  # group -> {seed: tune id}
        self.group_of: dict[str, str] = {}  # tune id -> group
        self.last: dict[str, int] = {}  # tune id -> the last epoch it reported (the trainable's unit)
        self.final: dict[str, float | None] = {}  # tune id -> its final best (ended; None: no value)

    # -- what the stage has ---------------------------------------------------------------------
    def add(self, tune_id: str, group: str, label: str, seed) -> None:
        """A trial of the stage (released or not)."""
        self.members.setdefault(group, {})[seed] = tune_id
        self.group_of[tune_id] = group
        self.state["groups"].setdefault(group, label)

    def is_eliminated(self, tune_id: str) -> bool:
        return self.group_of.get(tune_id) in self.state["eliminated"]

    def group_eliminated(self, group: str) -> bool:
        return group in self.state["eliminated"]

    def decision_of(self, tune_id: str) -> dict | None:
        return self.state["eliminated"].get(self.group_of.get(tune_id))

    # -- what trials report -------------------------------------------------------------------------
    def on_result(self, tune_id: str, iteration, best) -> list[dict]:
        """A trial's result: its value if it is at a rung; the decisions that made ready."""
        if not isinstance(iteration, int):
            return []
        self.last[tune_id] = max(self.last.get(tune_id, 0), iteration)
        value = finite(best)
        values = self.state["values"].setdefault(tune_id, {})
        if value is not None and iteration in self._rungs(iteration) and str(iteration) not in values:
            values[str(iteration)] = value  # the first report of a rung counts (a resumed trial repeats it)
        return self.step()

    def on_end(self, tune_id: str, status: str, best, iteration) -> list[dict]:
        """A trial ended: `done` with its final best, else (error, diverged, stopped) without."""
        self.final[tune_id] = finite(best) if status == "done" else None
        if isinstance(iteration, int):
            self.last[tune_id] = max(self.last.get(tune_id, 0), iteration)
        return self.step()

    # -- rungs ----------------------------------------------------------------------------------------
    def _rungs(self, up_to: int) -> list[int]:
        return race_rule.rungs(self.settings.first, self.settings.factor, up_to)

    def _value(self, tune_id: str, rung: int) -> float | None:
        value = self.state["values"].get(tune_id, {}).get(str(rung))
        if value is None and self.final.get(tune_id) is not None and self.last.get(tune_id, 0) < rung:
            value = self.final[tune_id]  # ended normally before the rung: its final best stands
        return value

    def _open(self, tune_id: str, rung: int) -> bool:
        """Whether the trial can still bring a value at the rung."""
        return tune_id not in self.final and self.last.get(tune_id, 0) < rung

    def _surviving(self) -> list[str]:
        return [g for g in sorted(self.members) if g not in self.state["eliminated"]]

    def _ready(self, rung: int) -> bool:
        comparable = 0
        for group in self._surviving():
            seeds = self.members[group]
            have = sum(self._value(t, rung) is not None for t in seeds.values())
            if have < self.settings.min_seeds and any(self._open(t, rung) for t in seeds.values()):
                return False
            comparable += have >= self.settings.min_seeds
        return comparable >= 2

    def step(self) -> list[dict]:
        """Decide every rung that is ready, in order; the eliminations made."""
        decided = {d["rung"] for d in self.state["rungs"]}
        reached = max(self.last.values(), default=0)
        made: list[dict] = []
        for k, rung in enumerate(self._rungs(reached), start=1):
            if rung in decided:
                continue
            if not self._ready(rung):
                break
            made += self._decide(k, rung)
        return made

    def _decide(self, k: int, rung: int) -> list[dict]:
        level = race_rule.rung_level(self.settings.alpha, k)
        values, testable = {}, set()
        for group in self._surviving():
            seeds = self.members[group]
            values[group] = {s: v for s, t in seeds.items() if (v := self._value(t, rung)) is not None}
            if any(t not in self.final for t in seeds.values()):
                testable.add(group)  # something of it still runs or waits: stopping it saves that
        values = {g: v for g, v in values.items() if g in testable or len(v) >= self.settings.min_seeds}
        best, rows = race_rule.decide(
            values, self.mode, level, self.settings.min_seeds, self.settings.test, testable=testable
        )
        labels = self.state["groups"]
        record = {
            "rung": rung,
            "k": k,
            "level": level,
            "best": best,
            "best_label": labels.get(best),
            "decided_at": time.time(),
            "compared": [dict(r.to_dict(), label=labels.get(r.group)) for r in rows],
        }
        self.state["rungs"].append(record)
        made = []
        for r in rows:
            if r.eliminated:
                decision = {
                    "rung": rung,
                    "k": k,
                    "rung_level": level,
                    "level": r.level,
                    "n": r.n,
                    "seeds": r.seeds,
                    "delta": r.delta,
                    "ci_low": _num(r.ci_low),
                    "ci_high": _num(r.ci_high),
                    "p": r.p,
                    "test": self.settings.test,
                    "group": r.group,
                    "label": labels.get(r.group),
                    "lost_to": labels.get(best),
                    "lost_to_group": best,
                    "decided_at": record["decided_at"],
                }
                self.state["eliminated"][r.group] = decision
                made.append(decision)
        return made


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def decision_line(d: dict, metric: str) -> str:
    """`group pre/lr=1e-05 eliminated at epoch 4: worse than pre/lr=0.01 by Δ val/loss=+0.31
    (95% CI 0.12 to 0.50) on 3 seeds, one-sided paired t-test p=0.004 <= 0.014 (Holm; rung 1 at 0.042)`"""
    ci = f" (95% CI {d['ci_low']:.4g} to {d['ci_high']:.4g})" if d.get("ci_low") is not None else ""
    test = "one-sided " + race_rule.test_name(d["test"])
    return (
        f"group {d['label']} eliminated at epoch {d['rung']}: worse than {d['lost_to']} by "
        f"Δ {metric}={d['delta']:+.4g}{ci} on {d['n']} seeds, {test} p={d['p']:.3g} <= {d['level']:.3g} "
        f"(Holm; rung {d['k']} at {d['rung_level']:.3g})"
    )


class RaceScheduler(FIFOScheduler):
    """A raced stage's trial scheduler (behind `study_tune.StageSchedulers`): feeds its race with
    every result before the callbacks see it, stops the trials of eliminated groups. Subclasses
    say where this driver's race is (`race`) and who hears of decisions (`decided`): Tune pickles
    schedulers into its experiment state, so neither is held here."""

    def race(self) -> StageRace:
        raise NotImplementedError

    def decided(self, made: list[dict], at_result: bool) -> None:
        """`made`: the decisions just taken; `at_result`: taken on a trial's result, which Tune
        hands to the callbacks (the driver's record) only after this scheduler."""
        raise NotImplementedError

    def _after(self, made: list[dict], at_result: bool = False) -> None:
        if made:
            self.decided(made, at_result)

    def on_trial_result(self, tune_controller, trial, result):
        race = self.race()
        self._after(
            race.on_result(trial.trial_id, race_rule.progress(result), result.get(selection.BEST)), at_result=True
        )
        return TrialScheduler.STOP if race.is_eliminated(trial.trial_id) else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result):
        race, result = self.race(), result or {}
        stopped = race.is_eliminated(trial.trial_id) or result.get("diverged")
        best, iteration = result.get(selection.BEST), race_rule.progress(result)
        self._after(race.on_end(trial.trial_id, "stopped" if stopped else "done", best, iteration))

    def on_trial_error(self, tune_controller, trial):
        self._after(self.race().on_end(trial.trial_id, "error", None, None))

    def choose_trial_to_run(self, tune_controller):
        race = self.race()
        for trial in tune_controller.get_trials():
            if trial.status in (Trial.PENDING, Trial.PAUSED) and race.is_eliminated(trial.trial_id):
                tune_controller.stop_trial(trial)  # released before its group was eliminated: never starts
        return super().choose_trial_to_run(tune_controller)
