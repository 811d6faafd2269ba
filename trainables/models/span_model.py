"""The model of `multitask_span`: an LSTM encoder (bidirectional by default) with locked dropout,
a per-bar head (span logit, countdown, start and end pointer logits) and a pooled class head;
optionally a linear-chain CRF over per-bar in/out span tags (pytorch-crf's module holds its
parameters; likelihood and Viterbi decoding are batched on the device by `crf.py`)."""

from __future__ import annotations

import torch
from torch import nn

from trainables.configs.multitask_span import Config
from trainables.models.crf import log_likelihood, viterbi_decode


class LockedDropout(nn.Module):
    """Dropout with one mask per window and channel, shared over time (variational dropout,
    Gal & Ghahramani 2016; AWD-LSTM's "locked" dropout): the usual regulariser of recurrent
    states, and ~100x fewer random numbers than element-wise dropout, whose mask generation
    cost 15% of a CPU training step here."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return h
        keep = torch.empty(h.shape[0], 1, h.shape[2], device=h.device, dtype=h.dtype).bernoulli_(1 - self.p)
        return h * keep / (1 - self.p)


class SpanModel(nn.Module):
    def __init__(self, n_features: int, n_classes: int, cfg: Config):
        super().__init__()
        self.lstm = nn.LSTM(
            n_features,
            cfg.hidden_size,
            cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        width = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        self.drop = LockedDropout(cfg.dropout)
        self.bar_head = nn.Linear(width, 4)  # span logit, countdown, start logit, end logit
        self.type_head = nn.Linear(2 * width, n_classes)
        self.crf = None
        if cfg.use_crf:
            from torchcrf import CRF

            self.crf = CRF(2, batch_first=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.drop(self.lstm(x)[0])
        span, countdown, start, end = self.bar_head(h).unbind(-1)
        pos = torch.linspace(0, 1, x.shape[1], device=x.device)
        ptr = torch.stack([(start.softmax(-1) * pos).sum(-1), (end.softmax(-1) * pos).sum(-1)], dim=-1)
        pooled = torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=-1)
        return {"type": self.type_head(pooled), "ptr": ptr, "span": span, "countdown": countdown}

    @staticmethod
    def emissions(span_logit: torch.Tensor) -> torch.Tensor:
        """(N, T, 2) out/in emissions; float32 under autocast too (the CRF's recursions sum logs over bars)."""
        span_logit = span_logit.float()
        return torch.stack([-0.5 * span_logit, 0.5 * span_logit], dim=-1)

    def decode(self, span_logit: torch.Tensor) -> torch.Tensor:
        """Viterbi paths (N, T) of in-span tags (CRF models only)."""
        return viterbi_decode(self.crf, self.emissions(span_logit)).bool()

    def crf_nll(self, span_logit: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """The CRF's mean negative log-likelihood of the windows' tags (CRF models only)."""
        return -log_likelihood(self.crf, self.emissions(span_logit), tags).mean()
