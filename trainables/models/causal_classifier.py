"""The classifier of `lstm_classifier_finetune`: a unidirectional (causal) LSTM, multi-head
self-attention with a causal mask, a residual + LayerNorm, and a linear head on the last bar.
Its LSTM can start from the forward direction of a pretrained bidirectional encoder."""

from __future__ import annotations

import torch
from torch import nn

from trainables.models import encoders


class CausalLSTMClassifier(nn.Module):
    def __init__(self, n_classes: int, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(4, hidden_size, batch_first=True)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)
        t = x.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=1)
        a, _ = self.attn(h, h, h, attn_mask=causal, need_weights=False)
        return self.head(self.norm(h + a)[:, -1])


def build(
    n_classes: int, *, hidden_size: int, num_heads: int, dropout: float, encoder: str | None, device: torch.device
) -> tuple[CausalLSTMClassifier, dict | None]:
    """The classifier, its LSTM transferred from `encoder` when given; (model, transfer info)."""
    model = CausalLSTMClassifier(n_classes, hidden_size, num_heads, dropout)
    info = encoders.transfer_forward_direction(encoder, model.lstm) if encoder else None
    return model.to(device), info
