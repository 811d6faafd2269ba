"""The spend cap while a study runs (`budget:`; what spend is: `orchestrator/planning/budget.py`).

Two rules, checked by the stage's recorder after every step of Tune's loop (at most once a
second):
- **No new trial starts once the projected spend would cross the cap**: what has been spent, plus
  what the running trials will still take at their pace so far. New trials come from the
  stage's search algorithm (`stage_runner.GatedVariants`, Tune's own variant generator), which
  hands Tune no trial while the gate is closed; trials Tune already placed still start.
- **When the cap is reached, the study stops** as Ctrl-C stops it: Tune's own graceful
  interruption (the SIGUSR1 handler `Tuner.fit` installs in the main thread), which saves the
  experiment's state with the running trials unfinished, so that `resume --budget USD`
  continues each from its last checkpoint (at most one checkpoint interval of work repeats).
  The stage, and its interrupted trials, record `stopped_by: budget`; the run exits with code 3.
  A stage that would start with the cap reached is not started.

Why a signal and not a Tune `Stopper`: a stopper's `stop_all` terminates the running trials as
finished, and a restored experiment never continues a finished trial.
"""

from __future__ import annotations

import signal
import threading
import time

from rich.console import Console
from rich.markup import escape

from orchestrator.errors import Problem, UserError
from orchestrator.planning.budget import Cap, Spend, save_cap, spent_so_far, study_spend
from orchestrator.storage.store import Store


class BudgetGuard:
    """Spend of the whole study against its cap, while it runs."""

    def __init__(self, cap: Cap, store: Store, records: dict[str, dict | None], console: Console, notifier=None):
        # Tune installs its SIGUSR1 handler only when fit() runs in the main thread; elsewhere the
        # signal would kill the process, and a cap that cannot stop the study is no cap.
        if threading.current_thread() is not threading.main_thread():
            raise UserError(Problem(store.uri, "a study with a budget runs in the main thread only", "budget"))
        self.cap, self.store, self.records, self.console, self.notifier = cap, store, records, console, notifier
        # spend of earlier runs that their records missed (a driver killed between two saves of a
        # record; see budget.spent_so_far): counted on top of the records, and saved with them
        self.carried = spent_so_far(store, records) - study_spend(records.values())
        self.recorders: list = []  # the StageRecorders of the stages that run
        self.stopped: str | None = None  # why the cap stopped the study
        self._gate: tuple[float, bool] = (-1.0, True)  # (checked at, open)
        self._checked = self._saved = -float("inf")

    # -- what is spent -----------------------------------------------------------------------
    def spend(self) -> Spend:
        """Every stage's trials, the running stages' up to now."""
        live = {r.plan.name for r in self.recorders}
        total = study_spend(r for name, r in self.records.items() if name not in live) + self.carried
        for recorder in self.recorders:
            total = total + recorder.live_spend()
        return total

    def reached(self) -> str | None:
        """`spent $4.10 of $4.00` when the cap is reached (the study may spend nothing more), or None."""
        spend = self.spend()
        return f"spent {self.cap.spent_text(spend)}" if self.cap.exceeded_by(spend) else None

    def may_start(self) -> bool:
        """Whether a new trial may start: nothing stopped the study, and what is spent plus what
        the running trials will still take stays below the cap (re-evaluated at most once a
        second). With nothing running the gate is open: were the cap reached, the check at the
        last trial's end would have stopped the study, and a closed gate with nothing running
        would make Tune wait for a trial that never comes."""
        if self.stopped is not None:
            return False
        if not any(r.running() for r in self.recorders):
            return True
        checked, open_ = self._gate
        now = time.monotonic()
        if now - checked >= 1.0:
            need = self.spend()
            for recorder in self.recorders:
                need = need + recorder.running_need()
            open_ = self.cap.exceeded_by(need) is None
            self._gate = (now, open_)
        return open_

    # -- a stage ------------------------------------------------------------------------------
    def begin(self, recorder) -> None:
        """Watch the stage of this recorder (several stages may run at once)."""
        self.recorders.append(recorder)
        recorder.guard = self  # a per-stage Tuner's GatedVariants finds the guard through its recorder
        self._gate = (-1.0, True)
        self.save()

    def end(self, recorder) -> None:
        """That stage has ended: its record holds its spend from now on."""
        if recorder in self.recorders:
            self.recorders.remove(recorder)
        recorder.guard = None
        self.save()

    def check(self, force: bool = False) -> None:
        """Stop the study when the cap is reached. Called by the recorder after each step of
        Tune's loop (at most once a second) and whenever a trial ends (`force`): a stop requested
        there takes effect before Tune asks for the next trial."""
        now = time.monotonic()
        if self.stopped is not None or (not force and now - self._checked < 1.0):
            return
        self._checked = now
        reached = self.reached()
        if reached:
            self.stop(f"the cap is reached: {reached}")
        elif force or now - self._saved >= 10.0:  # at a trial's end, with its stage record
            self.save()

    def stop(self, reason: str, interrupt: bool = True) -> None:
        """Stop the study for the budget: Tune's graceful interruption (see the module doc) while
        a stage runs (`interrupt`), else no further stage starts."""
        self.stopped = reason
        self.console.print(f"[yellow]budget[/]: stopping the study: {escape(reason)}")
        self.save()
        if self.notifier is not None:
            self.notifier.send("budget", f"study stopped by its budget: {reason}", storage=self.store.uri)
        if interrupt:
            signal.raise_signal(signal.SIGUSR1)  # Tune's handler: see __init__

    def save(self) -> None:
        """`_orchestrator/budget.json`: the cap, what is spent, and why the cap stopped the study."""
        save_cap(self.store, self.cap, self.spend(), self.stopped)
        self._saved = time.monotonic()
