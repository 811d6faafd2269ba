"""A trial's best epoch by its stage's `select` metric, computed from *every* epoch it ran.

Why the trial computes this, and not the driver from what Tune saw: Tune sees only the reports
that reach it, and `TuneSession` holds back (and overwrites) reports sent closer together than
`report_interval_s`, so "the best value Tune saw" depends on how fast the epochs ran, i.e. on
how busy the machine was. The session updates a `Selection` at every `report` call, the held
ones too, and attaches its summary to every report it sends; the last report of a trial, which
always goes out, therefore carries the exact best over all epochs, whatever the load.

The same object decides which checkpoint is the best one: an epoch that improves the selection
is checkpointed (`Session.checkpoint_due(epoch, metrics)` says so), and its checkpoint carries
`select/checkpoint_score` = the number of improvements so far (0 on checkpoints that are not an
improvement). Ray Tune keeps checkpoints by that score (`CheckpointConfig(
checkpoint_score_attribute=...)`), so its best checkpoint is the one of the best epoch, and
ties keep the earlier epoch (only a strict improvement counts).

Values that are not finite numbers (NaN, inf, a missing metric) never improve a selection, so
a diverged epoch cannot be "best", and NaN never reaches a ranking.
"""

from __future__ import annotations

import math
from typing import Any

BEST = "select/best"  # best value of the select metric over every epoch so far
BEST_EPOCH = "select/best_epoch"  # the epoch (or step, fold: the trainable's unit) it was reached
IMPROVEMENTS = "select/improvements"  # how many reports improved it so far
CHECKPOINT_SCORE = "select/checkpoint_score"  # on reports with a checkpoint: IMPROVEMENTS if this one improved, else 0
STATE_FILE = "selection.json"  # the selection as of a checkpoint, inside the checkpoint folder
UNITS = ("epoch", "step", "fold")


def finite(value: Any) -> float | None:
    """`value` as a float if it is a finite number (bools are not numbers here), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Selection:
    """The running best of one metric (`mode` min or max) over a trial's reports.

    Without a metric (a stage with no `select`) it never improves and adds nothing to reports.
    """

    def __init__(self, metric: str | None = None, mode: str | None = None):
        if metric is not None and mode not in ("min", "max"):
            raise ValueError(f"select mode must be 'min' or 'max', got {mode!r}")
        self.metric, self.mode = metric, mode
        self.best: float | None = None
        self.best_epoch: float | None = None
        self.improvements = 0
        self.reports = 0

    @classmethod
    def of(cls, select: dict | None) -> Selection:
        """From a stage's `select` as the orchestrator passes it ({"metric", "mode"}) or None."""
        return cls(select["metric"], select["mode"]) if select else cls()

    @property
    def active(self) -> bool:
        return self.metric is not None

    def value(self, metrics: dict) -> float | None:
        return finite(metrics.get(self.metric)) if self.active else None

    def improves(self, metrics: dict) -> bool:
        """Whether `metrics` would be a new best (strictly better; the first finite value is)."""
        value = self.value(metrics)
        if value is None:
            return False
        return self.best is None or (value < self.best if self.mode == "min" else value > self.best)

    def update(self, metrics: dict) -> bool:
        """Record one report; True if it is a new best."""
        self.reports += 1
        if not self.improves(metrics):
            return False
        self.best = self.value(metrics)
        unit = next((metrics[u] for u in UNITS if finite(metrics.get(u)) is not None), None)
        self.best_epoch = float(unit) if unit is not None else float(self.reports)
        self.improvements += 1
        return True

    def summary(self) -> dict:
        """The fields every report carries (none without a select metric or before a best)."""
        if not self.active or self.best is None:
            return {}
        return {BEST: self.best, BEST_EPOCH: self.best_epoch, IMPROVEMENTS: self.improvements}

    def state_dict(self) -> dict:
        return {
            "metric": self.metric,
            "mode": self.mode,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "improvements": self.improvements,
            "reports": self.reports,
        }

    def load_state_dict(self, state: dict) -> None:
        # (a saved state may carry more keys, e.g. the session's `is_best`: ignored here)
        """Continue from a saved selection of the same metric (another metric's state is ignored:
        the study changed what it selects on, so the old best means nothing)."""
        if state.get("metric") != self.metric or state.get("mode") != self.mode:
            return
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self.improvements, self.reports = int(state.get("improvements", 0)), int(state.get("reports", 0))


class ModelChoice:
    """Which epoch's model a trainable keeps as its own "best model" (an exported encoder, a
    sentence-transformers folder): the epoch that is best by the stage's select metric when the
    trainable reports that metric every epoch, else by the trainable's own `fallback` metric
    (e.g. a stage that selects on a final-only metric, or no `select`). Decided at the first
    update and kept, so the choice never switches metric mid-run; `state_dict` resumes it."""

    def __init__(self, select: Selection, fallback: str, fallback_mode: str):
        self.select, self.fallback = select, (fallback, fallback_mode)
        self.chosen: Selection | None = None

    def update(self, metrics: dict) -> bool:
        if self.chosen is None:
            use_select = self.select.active and self.select.metric in metrics
            self.chosen = Selection(self.select.metric, self.select.mode) if use_select else Selection(*self.fallback)
        return self.chosen.update(metrics)

    @property
    def metric(self) -> str | None:
        return self.chosen.metric if self.chosen else None

    @property
    def best(self) -> float | None:
        return self.chosen.best if self.chosen else None

    @property
    def best_epoch(self) -> float | None:
        return self.chosen.best_epoch if self.chosen else None

    def state_dict(self) -> dict | None:
        return self.chosen.state_dict() if self.chosen else None

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.chosen = Selection(state["metric"], state["mode"])
            self.chosen.load_state_dict(state)
