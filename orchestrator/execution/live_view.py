"""The live view of a running stage in a terminal: above, the stage's counts and its best value
so far; below, one line per running trial with a progress bar in the trainable's own unit
(epoch k of N, fold k of K, step k of S, dataset k of D), elapsed time, an ETA from its pace so
far, and its latest value of the stage's select metric.

Shown with rich's `Live` only when the console is a terminal; in CI, logs or under `nohup` the
recorder's plain line per event stays the only output. Lines printed while the view is live
(started, done, error) scroll above it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator.storage.records import ENDED_STATUSES

# (metric in the trial's reports, the config key that holds its total): the first that applies
UNITS = (("step", "max_steps"), ("epoch", "epochs"), ("fold", "folds"), ("dataset", "beir"))


def progress_of(metrics: dict, config: dict) -> tuple[str, float, float] | None:
    """(unit, done, total) of a trial from its latest report and its config, or None."""
    for unit, key in UNITS:
        done, total = metrics.get(unit), config.get(key)
        if isinstance(total, list):
            total = len(total)
        if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
            return unit, float(done), float(total)
    return None


@dataclass
class _Running:
    name: str
    started: float = field(default_factory=time.monotonic)
    progress: tuple[str, float, float] | None = None
    base: float | None = None  # units done before this attempt (a resumed trial starts at k > 1)
    value: float | None = None

    def eta_s(self, now: float) -> float | None:
        """Seconds left at this attempt's pace (units done since it started), or None."""
        if not self.progress or self.base is None:
            return None
        _, done, total = self.progress
        return (now - self.started) / (done - self.base) * (total - done) if done > self.base else None


class _Display:
    """A live display on the terminal (none when it is not one) of what `renderable()` draws."""

    console: Console
    _live: Live | None

    def renderable(self):
        raise NotImplementedError

    def start(self):
        if self.console.is_terminal and not self.console.is_dumb_terminal:
            self._live = Live(self.renderable(), console=self.console, refresh_per_second=2, transient=True)
            self._live.start()
        return self

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class LiveView(_Display):
    """A stage's running trials; `update`/`finish` as results arrive, `renderable()` to draw. A
    section of a `StudyView` draws through it (one live display for every stage of the study)."""

    def __init__(self, console: Console, stage: str, total: int, select: dict | None, parent=None):
        self.console, self.stage, self.total, self.select = console, stage, total, select
        self.running: dict[str, _Running] = {}
        self.counts = {"done": 0, "failed": 0, "eliminated": 0}
        self.best: tuple[float, str] | None = None
        self._done: dict[str, float] = {}  # best value of each done trial (a race may relabel one)
        self._live: Live | None = None
        self.parent = parent

    def update(self, trial: str, metrics: dict, config: dict) -> None:
        entry = self.running.setdefault(trial, _Running(trial))
        entry.progress = progress_of(metrics, config) or entry.progress
        if entry.progress and entry.base is None:  # the first report of this attempt covers one unit
            entry.base = entry.progress[1] - 1
        metric = (self.select or {}).get("metric")
        if metric and isinstance(metrics.get(metric), (int, float)):
            entry.value = float(metrics[metric])
        self._refresh()

    def finish(self, trial: str, status: str, best: float | None) -> None:
        self.running.pop(trial, None)
        if status in ENDED_STATUSES:
            self.counts[status if status in ("done", "eliminated") else "failed"] += 1
        if best is not None and status == "done" and self.select:
            self._done[trial] = best
            better = self.best is None or (best < self.best[0] if self.select["mode"] == "min" else best > self.best[0])
            if better:
                self.best = (best, trial)
        self._refresh()

    def relabel(self, trial: str, old: str, new: str) -> None:
        """A trial that ended as `old` is now `new` (a `done` trial whose group lost its race)."""
        if self.counts.get(old, 0) > 0:
            self.counts[old] -= 1
            self.counts[new] = self.counts.get(new, 0) + 1
        self._done.pop(trial, None)
        if self.best is not None and self.best[1] == trial:  # the best is among surviving groups only
            pick = min if self.select["mode"] == "min" else max
            self.best = pick(((v, t) for t, v in self._done.items()), default=None)
        self._refresh()

    def eta_s(self, trial: str) -> float | None:
        """Seconds the running trial needs to finish at its pace so far, or None (not known)."""
        entry = self.running.get(trial)
        return entry.eta_s(time.monotonic()) if entry else None

    def _refresh(self) -> None:
        if self.parent is not None:
            self.parent.refresh()
        elif self._live is not None:
            self._live.update(self.renderable())

    def renderable(self) -> Group:
        ended = sum(self.counts.values())
        head = (
            f"[bold]stage {escape(self.stage)}[/]: {ended}/{self.total} ended, {len(self.running)} running, "
            f"{self.counts['failed']} failed"
        )
        if self.counts["eliminated"]:
            head += f", {self.counts['eliminated']} eliminated"
        if self.best is not None:
            head += f"; best {escape(self.select['metric'])}={self.best[0]:.4g} ({escape(self.best[1])})"
        table = Table.grid(padding=(0, 1))
        for _ in range(5):
            table.add_column()
        now = time.monotonic()
        for entry in self.running.values():
            elapsed = now - entry.started
            if entry.progress:
                unit, done, total = entry.progress
                bar = ProgressBar(total=total, completed=min(done, total), width=24)
                count = f"{unit} {done:g}/{total:g}"
                left = entry.eta_s(now)
                eta = f"ETA {_clock(left)}" if left is not None else "ETA -"
            else:
                bar, count, eta = ProgressBar(total=None, width=24), "starting", ""
            value = f"{self.select['metric']}={entry.value:.4g}" if entry.value is not None and self.select else ""
            table.add_row(Text(entry.name), bar, count, f"{_clock(elapsed)} {eta}".strip(), value)
        return Group(Text.from_markup(head), table)


class StudyView(_Display):
    """The live view of a whole study: one section per stage that runs (its counts, best value
    and running trials), in one display, while stages overlap."""

    def __init__(self, console: Console):
        self.console = console
        self.sections: dict[str, LiveView] = {}
        self._live: Live | None = None

    def section(self, stage: str, total: int, select: dict | None) -> LiveView:
        self.sections[stage] = LiveView(self.console, stage, total, select, parent=self)
        self.refresh()
        return self.sections[stage]

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.renderable())

    def renderable(self) -> Group:
        shown = [s for s in self.sections.values() if s.running or sum(s.counts.values()) < s.total]
        return Group(*(s.renderable() for s in shown))


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return (
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )
