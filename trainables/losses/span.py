"""The losses of `multitask_span`'s four tasks (their targets: `trainables/data/span_targets.py`):
the window's class (cross-entropy), expansion start and end as window fractions (Huber), the
per-bar soft span (BCE + soft Dice against a soft target; plus the CRF's negative log-likelihood
per bar when the model has one) and the countdown to the onset (Huber)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.configs.multitask_span import Config
from trainables.data.span_targets import Batch
from trainables.models.span_model import SpanModel


def task_losses(model: SpanModel, out: dict, b: Batch, cfg: Config) -> torch.Tensor:
    """(4,) unweighted losses in TASKS order: type, ptr, span, countdown."""
    loss_type = F.cross_entropy(out["type"], b.y)
    loss_ptr = F.huber_loss(out["ptr"], b.ptr, delta=cfg.pointer_delta)
    p = torch.sigmoid(out["span"])
    dice = (2 * (p * b.soft).sum(-1) + 1e-6) / (p.sum(-1) + b.soft.sum(-1) + 1e-6)
    loss_span = F.binary_cross_entropy_with_logits(out["span"], b.soft) + (1 - dice).mean()
    if model.crf is not None:
        loss_span = loss_span + model.crf_nll(out["span"], b.hard.long()) / b.x.shape[1]
    loss_countdown = F.huber_loss(out["countdown"], b.countdown, delta=cfg.countdown_delta)
    return torch.stack([loss_type, loss_ptr, loss_span, loss_countdown])
