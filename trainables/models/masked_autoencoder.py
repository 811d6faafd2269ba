"""The masked autoencoder of `lstm_mae_pretrain`: a BiLSTM encoder over a window whose hidden
values are filled by linear interpolation, and a linear head that predicts a correction to that
fill (see the recipe's docstring for why a fill and not zeros)."""

from __future__ import annotations

import torch
from torch import nn

from trainables.data import masking
from trainables.models import encoders


class MaskedAutoencoder(nn.Module):
    def __init__(self, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.encoder = encoders.BiLSTMEncoder(4, hidden_size, num_layers, dropout)
        self.head = nn.Linear(self.encoder.output_size, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        filled = masking.interpolate_masked(x, mask)
        return filled + self.head(self.encoder(filled))
