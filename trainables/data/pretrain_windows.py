"""The data of masked-autoencoder pretraining on OHLC windows, shared by every architecture that
is compared on it (`lstm_mae_pretrain`, and a researcher's own, e.g. examples/patch_transformer):
the windows split by time (seed-independent), normalised per window, and the fixed validation
masks (the trial's own strategy, and one common random 15% mask that every trial of every
architecture is scored on: `val/masked_mse`), with the interpolation baseline on that mask; and
the masked error of a model `model(x, mask)` over a set of windows.

Everything is computed on the CPU and only then moved to the trial's device: a CUDA generator
draws other numbers than a CPU one for the same seed, so masks drawn on the device would score
GPU trials on other masks than CPU trials (or a CPU pre-flight).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from trainables.data import masking, ohlc
from trainables.data.folds import split_note, time_blocks


class WindowSettings(Protocol):
    """What `load_windows` reads of a trainable's Config."""

    data: str
    window_length: int
    val_fraction: float
    mask_strategy: str
    mask_ratio: float
    patch_len: int
    mean_block: float


EVAL_MASK_SEED = 20_251_017  # fixed: every trial is scored on the same validation masks
EVAL_MASK_RATIO = 0.15


@dataclass
class Windows:
    """The trial's data on the device: training windows, validation windows and their masks."""

    train: torch.Tensor
    val: torch.Tensor
    val_mask: torch.Tensor  # the trial's own mask strategy
    common_mask: torch.Tensor  # one random mask shared by every trial
    interp_mse: float  # the common mask filled by interpolation: the naive baseline
    overlap: dict  # how the windows were split (metadata.json)


def load_windows(cfg: WindowSettings, device: torch.device) -> Windows:
    """The data, split by time (seed-independent), normalised, and the fixed validation masks
    (see the module doc)."""
    windows = ohlc.load_windows(cfg.data, cfg.window_length)
    line, (train_idx, val_idx) = time_blocks(windows, (cfg.val_fraction,), cfg.window_length)
    data = ohlc.normalise(torch.as_tensor(windows.ohlc, dtype=torch.float32))
    x_train, x_val = data[torch.as_tensor(train_idx)], data[torch.as_tensor(val_idx)]
    # Validation masks are drawn once with fixed seeds: same masks every epoch and every trial.
    # Two separate generators: the common mask must not depend on the trial's strategy.
    val_mask = masking.make_mask(
        cfg.mask_strategy,
        tuple(x_val.shape),
        cfg.mask_ratio,
        "cpu",
        patch_len=cfg.patch_len,
        mean_block=cfg.mean_block,
        generator=torch.Generator().manual_seed(EVAL_MASK_SEED),
    )
    common_mask = masking.random_mask(
        tuple(x_val.shape), EVAL_MASK_RATIO, "cpu", torch.Generator().manual_seed(EVAL_MASK_SEED + 1)
    )
    interp = masking.interpolate_masked(x_val, common_mask)
    interp_mse = float(masking.masked_mse(interp, x_val, common_mask))
    overlap = {
        **line.describe(cfg.window_length),
        "split": split_note(line, len(windows), (train_idx, val_idx), ("train", "val")),
    }
    x_train, x_val, val_mask, common_mask = (t.to(device) for t in (x_train, x_val, val_mask, common_mask))
    return Windows(x_train, x_val, val_mask, common_mask, interp_mse, overlap)


@torch.no_grad()
def masked_error(model, x: torch.Tensor, mask: torch.Tensor, batch: int) -> float:
    """Masked MSE over every hidden value of `x`, summed on the device (one host sync)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch):
        xb, mb = x[i : i + batch], mask[i : i + batch]
        total += (((model(xb, mb) - xb) ** 2) * mb).sum()
    model.train()
    return float(total) / max(float(mask.sum()), 1.0)
