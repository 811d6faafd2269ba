"""The bidirectional LSTM encoder shared by pretraining and fine-tuning, and its export format.

`encoder.pt` = {"format": "bilstm-encoder/1", "state_dict": <nn.LSTM state>, "hparams":
{input_size, hidden_size, num_layers, bidirectional}, "source": {...}}: enough to rebuild the
encoder, or to copy its forward direction of layer 0 into a causal LSTM.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainables.runtime import checkpoints

ENCODER_FILE = "encoder.pt"
FORMAT = "bilstm-encoder/1"


class BiLSTMEncoder(nn.Module):
    def __init__(self, input_size: int = 4, hidden_size: int = 128, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.hparams = {
            "input_size": input_size,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "bidirectional": True,
        }
        self.lstm = nn.LSTM(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    @property
    def output_size(self) -> int:
        return 2 * self.lstm.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return out


def export(encoder: BiLSTMEncoder, path: str | Path, source: dict | None = None) -> None:
    state = {k: v.detach().cpu().clone() for k, v in encoder.lstm.state_dict().items()}
    checkpoints.save(
        {"format": FORMAT, "state_dict": state, "hparams": dict(encoder.hparams), "source": source or {}}, path
    )


def load_export(path: str | Path) -> dict:
    """Load an exported encoder; ValueError naming the file if it is not one."""
    obj = checkpoints.load(path)
    if obj.get("format") != FORMAT or "state_dict" not in obj or "hparams" not in obj:
        raise ValueError(f"{path}: not an exported encoder (expected format {FORMAT!r} with state_dict and hparams)")
    return obj


FORWARD_LAYER0 = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def locate(source: str) -> str:
    """An exported encoder given as a file, or a checkpoint folder holding `encoder.pt`;
    `s3://` URIs are downloaded to a temporary file first."""
    if "://" in source:
        import tempfile

        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(source)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            path = f"{path.rstrip('/')}/{ENCODER_FILE}"
        with fs.open_input_stream(path) as src, tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as dst:
            dst.write(src.read())
            return dst.name
    p = Path(source)
    if p.is_dir():
        p = p / ENCODER_FILE
    if not p.exists():
        raise ValueError(f"{source}: no exported encoder here (expected a file or a folder with {ENCODER_FILE})")
    return str(p)


def transfer_forward_direction(source: str, lstm: nn.LSTM) -> dict:
    """Copy the forward direction of layer 0 of an exported bidirectional encoder into `lstm`.

    Only layer 0 transfers: deeper layers of a bidirectional LSTM read 2 x hidden inputs, a
    unidirectional one reads hidden. Raises ValueError naming both shapes on any mismatch.
    Returns the export's hyper-parameters and source, for metadata.
    """
    exported = load_export(locate(source))
    src = exported["state_dict"]
    dst = lstm.state_dict()
    for name in FORWARD_LAYER0:
        if name not in src:
            raise ValueError(f"{source}: encoder has no {name!r}")
        if src[name].shape != dst[name].shape:
            raise ValueError(
                f"{source}: encoder {name} has shape {tuple(src[name].shape)} but this model's LSTM expects "
                f"{tuple(dst[name].shape)} (encoder hidden_size={exported['hparams'].get('hidden_size')}, "
                f"input_size={exported['hparams'].get('input_size')}; model hidden_size={lstm.hidden_size}, "
                f"input_size={lstm.input_size})"
            )
    with torch.no_grad():
        for name in FORWARD_LAYER0:
            getattr(lstm, name).copy_(src[name])
    return {"hparams": exported["hparams"], "source": exported.get("source", {})}


def check_transfer(source: str, hidden_size: int, input_size: int = 4) -> None:
    """Raise ValueError (naming both shapes) unless the encoder at `source` transfers into a
    causal LSTM of this size; what `validate` checks before a fine-tuning stage runs."""
    transfer_forward_direction(source, nn.LSTM(input_size, hidden_size, batch_first=True))
