"""Early stopping on a monitored metric, with state that survives checkpoint/resume."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    patience: int | None  # epochs without improvement before stopping; None disables
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    mode: str = "min"
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if self.mode == "max" and self.best == math.inf:
            self.best = -math.inf

    def update(self, value: float, epoch: int) -> bool:
        """Record this epoch's value; True if it is a new best."""
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> EarlyStopping:
        return cls(**state)
