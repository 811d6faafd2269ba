"""The targets of `multitask_span`'s four tasks for a set of labeled windows, on the device.

- Soft target mask of a span [s, e] (inclusive bar indices) with edge softness tau (bars):
  m_t = sigmoid((t - s + 0.5) / tau) * sigmoid((e + 0.5 - t) / tau); tau = 0 gives the hard
  mask 1[s <= t <= e]. With tau = 1 an edge bar gets 0.62 and the bar outside it 0.38.
- Pointers: expansion start and end as fractions of the window, t / (T - 1).
- Countdown: per bar (onset - t) / countdown_scale, negative after the onset.
"""

from __future__ import annotations

import torch

from trainables.configs.multitask_span import Config


def span_masks(
    starts: torch.Tensor, ends: torch.Tensor, length: int, softness: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hard, soft) masks, both (N, T) float."""
    t = torch.arange(length, device=starts.device, dtype=torch.float32)[None]
    s, e = starts.float()[:, None], ends.float()[:, None]
    hard = ((t >= s) & (t <= e)).float()
    if softness <= 0:
        return hard, hard
    soft = torch.sigmoid((t - s + 0.5) / softness) * torch.sigmoid((e + 0.5 - t) / softness)
    return hard, soft


class Batch:
    """Inputs and every target of a set of windows, on the device."""

    def __init__(self, x, y, starts, ends, cfg: Config):
        t = x.shape[1]
        self.x, self.y = x, y
        self.hard, self.soft = span_masks(starts, ends, t, cfg.span_edge_softness)
        self.ptr = torch.stack([starts, ends], dim=-1).float() / (t - 1)
        bars = torch.arange(t, device=x.device, dtype=torch.float32)
        self.countdown = (starts.float()[:, None] - bars[None]) / cfg.countdown_scale

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: torch.Tensor) -> Batch:
        sub = object.__new__(Batch)
        for name, value in vars(self).items():
            setattr(sub, name, value[idx])
        return sub
