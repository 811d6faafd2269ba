"""The bidirectional LSTM encoder shared by pretraining and fine-tuning, and its export format.

`encoder.pt` = {"format": "bilstm-encoder/1", "state_dict": <nn.LSTM state>, "hparams":
{input_size, hidden_size, num_layers, bidirectional}, "source": {...}}: enough to rebuild the
encoder, or to copy its forward direction of layer 0 into a causal LSTM.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainables import checkpoints

ENCODER_FILE = "encoder.pt"
FORMAT = "bilstm-encoder/1"


class BiLSTMEncoder(nn.Module):
    def __init__(self, input_size: int = 4, hidden_size: int = 128, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.hparams = {"input_size": input_size, "hidden_size": hidden_size, "num_layers": num_layers,
                        "bidirectional": True}
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)

    @property
    def output_size(self) -> int:
        return 2 * self.lstm.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return out


def export(encoder: BiLSTMEncoder, path: str | Path, source: dict | None = None) -> None:
    state = {k: v.detach().cpu().clone() for k, v in encoder.lstm.state_dict().items()}
    checkpoints.save({"format": FORMAT, "state_dict": state, "hparams": dict(encoder.hparams),
                      "source": source or {}}, path)


def load_export(path: str | Path) -> dict:
    """Load an exported encoder; ValueError naming the file if it is not one."""
    obj = checkpoints.load(path)
    if obj.get("format") != FORMAT or "state_dict" not in obj or "hparams" not in obj:
        raise ValueError(f"{path}: not an exported encoder (expected format {FORMAT!r} with state_dict and hparams)")
    return obj
