"""Multi-task loss balancing: learned homoscedastic uncertainty (Kendall, Gal, Cipolla 2018) or
fixed weights.

Uncertainty weighting learns s_i = log sigma_i^2 per task (initialised at 0, sigma = 1) and
minimises

    L = sum_i  c_i * exp(-s_i) * L_i + 0.5 * s_i,

with c_i = 0.5 for regression tasks (Gaussian likelihood) and c_i = 1 for classification tasks
(softmax / Bernoulli likelihood). The 0.5 * s_i term stops s_i from growing without bound.

Reported per task: sigma_i = exp(s_i / 2) and the *effective weight share*
w_i / sum_j w_j with w_i = c_i * exp(-s_i): the fraction of the gradient scale on the task
losses that task i receives (shares sum to 1). Fixed weighting reports the same share from its
constant weights (and sigma = 1).
"""

from __future__ import annotations

import torch
from torch import nn


class TaskWeighting(nn.Module):
    """`tasks`: name -> "regression" | "classification"; `mode`: "uncertainty" | "fixed"."""

    def __init__(self, tasks: dict[str, str], mode: str = "uncertainty", fixed: dict[str, float] | None = None):
        super().__init__()
        bad = {k: v for k, v in tasks.items() if v not in ("regression", "classification")}
        if bad:
            raise ValueError(f"task kinds must be 'regression' or 'classification', got {bad}")
        if mode not in ("uncertainty", "fixed"):
            raise ValueError(f"loss weighting must be 'uncertainty' or 'fixed', got {mode!r}")
        self.names = list(tasks)
        self.mode = mode
        self.register_buffer("c", torch.tensor([0.5 if tasks[k] == "regression" else 1.0 for k in self.names]))
        fixed = fixed or {}
        self.register_buffer("fixed", torch.tensor([float(fixed.get(k, 1.0)) for k in self.names]))
        # log sigma^2 per task; a parameter in both modes so checkpoints have one shape, but
        # trained only under uncertainty weighting.
        self.log_var = nn.Parameter(torch.zeros(len(self.names)), requires_grad=(mode == "uncertainty"))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """`losses`: (n_tasks,) in the order of `names` -> the scalar objective."""
        if self.mode == "fixed":
            return (self.fixed * losses).sum()
        s = self.log_var
        return (self.c * torch.exp(-s) * losses + 0.5 * s).sum()

    @torch.no_grad()
    def sigmas(self) -> torch.Tensor:
        return torch.exp(self.log_var / 2) if self.mode == "uncertainty" else torch.ones_like(self.log_var)

    @torch.no_grad()
    def shares(self) -> torch.Tensor:
        w = self.c * torch.exp(-self.log_var) if self.mode == "uncertainty" else self.fixed
        return w / w.sum()
