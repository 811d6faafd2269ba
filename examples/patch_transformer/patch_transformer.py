"""A PatchTST-style Transformer masked autoencoder on OHLC windows: the comparison the seeds'
researchers would run next, written as a researcher's own trainable, outside the orchestrator's
package (README, *Your own trainable*), and run beside `lstm_mae_pretrain` by `study.yaml` here.

The model (Nie et al. 2023, "A Time Series is Worth 64 Words", channel-mixing variant): the
window, its hidden values filled by linear interpolation as `lstm_mae_pretrain` does, is cut into
patches of `model_patch` bars (12; the last patch padded by repeating the last bar); each patch's
4 x 12 values are embedded linearly with a learned position, a pre-norm Transformer encoder
reads the patches, and a linear head predicts each patch's correction to the fill.

Everything else is the LSTM's, so the two compare: the same windows, time split and per-window
normalisation, the same masks (`mask_strategy`, `mask_ratio`, `patch_len`, `mean_block`), the same
augmentation (time warp, scaling, jitter; `aug_multiplier` extra passes) and the same validation
metric on the one common mask every trial is scored on (`val/masked_mse`, from
`trainables.data.pretrain_windows`), with `val/interp_mse` as the naive baseline.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

INPUT_FIELDS = ("data",)


class Config(BaseModel):
    """Settings of one trial (the masking, augmentation and data keys mean what they mean for
    `lstm_mae_pretrain`)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="Unlabeled windows: a Parquet file or `synthetic:ohlc?n=..&length=..&seed=..`.")
    window_length: int = Field(105, ge=8)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    model_patch: int = Field(12, ge=1, description="Bars per token of the Transformer.")
    d_model: int = Field(64, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    mask_strategy: Literal["random", "block", "patch"] = "patch"
    mask_ratio: float = Field(0.15, gt=0, lt=1)
    patch_len: int = Field(12, ge=1, description="Bars per hidden patch of the `patch` mask strategy.")
    mean_block: float = Field(3.0, ge=1)
    time_warp_sigma: float = Field(0.12, ge=0)
    scaling_sigma: float = Field(0.1, ge=0)
    jitter_sigma: float = Field(0.03, ge=0)
    aug_multiplier: int = Field(1, ge=0)
    device: str = "auto"
    deterministic: bool = False
    seed: int = 0


def check(cfg: Config) -> None:
    """Read the windows before any Ray starts (`validate`, `run`): a malformed file is one line."""
    from trainables.data import ohlc

    ohlc.load_windows(cfg.data, cfg.window_length)


def build_model(cfg: Config):
    import torch
    from torch import nn

    from trainables.data import masking

    class PatchMAE(nn.Module):
        """Patches of the interpolated window -> Transformer -> each patch's correction."""

        def __init__(self):
            super().__init__()
            self.patch = cfg.model_patch
            self.patches = math.ceil(cfg.window_length / cfg.model_patch)
            self.embed = nn.Linear(4 * self.patch, cfg.d_model)
            self.position = nn.Parameter(torch.zeros(1, self.patches, cfg.d_model))
            nn.init.trunc_normal_(self.position, std=0.02)
            layer = nn.TransformerEncoderLayer(
                cfg.d_model, cfg.heads, 4 * cfg.d_model, cfg.dropout, batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
            self.head = nn.Linear(cfg.d_model, 4 * self.patch)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            filled = masking.interpolate_masked(x, mask)
            batch, length, channels = filled.shape
            pad = self.patches * self.patch - length
            padded = torch.cat([filled, filled[:, -1:].expand(batch, pad, channels)], 1) if pad else filled
            tokens = self.embed(padded.reshape(batch, self.patches, self.patch * channels)) + self.position
            correction = self.head(self.encoder(tokens)).reshape(batch, self.patches * self.patch, channels)
            return filled + correction[:, :length]

    return PatchMAE()


def train(config: dict, session=None) -> dict:
    """One trial; returns the last epoch's metrics."""
    import torch

    from trainables.data.pretrain_windows import load_windows
    from trainables.runtime import checkpoints
    from trainables.runtime.metadata import environment, parameter_counts
    from trainables.runtime.reproducibility import rng_state, set_rng_state, start_trial
    from trainables.runtime.session import write_json, write_metrics_csv

    cfg = Config.model_validate(config)
    session, device = start_trial(cfg, session)
    data = load_windows(cfg, device)
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    history: list[dict] = []
    saved = session.restore_state(map_location=device)
    if saved is not None:  # a retried or resumed trial continues where its checkpoint was
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        history = saved["history"]
        set_rng_state(saved["rng"])
    write_json(
        {
            **session.context,
            "trainable": "examples/patch_transformer",
            "config": cfg.model_dump(),
            "parameters": parameter_counts(model),
            "device": str(device),
            "data": {"train_windows": len(data.train), "val_windows": len(data.val), "overlap": data.overlap},
            "environment": environment(),
            "module_file": __file__,
        },
        session.artifact_dir / "metadata.json",
    )
    metrics = history[-1] if history else {}
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        metrics = _epoch(model, opt, data, cfg, epoch)
        sched.step()
        history.append(metrics)
        if not math.isfinite(metrics["train/loss"]):
            session.report({**metrics, "diverged": True})
            break
        if session.checkpoint_due(epoch, metrics) or epoch == cfg.epochs:
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "history": history,
                "rng": rng_state(),
                "config": cfg.model_dump(),
            }
            with tempfile.TemporaryDirectory() as folder:
                checkpoints.save(state, Path(folder) / checkpoints.STATE_FILE)
                write_metrics_csv(history, session.artifact_dir / "metrics.csv")
                session.report(metrics, checkpoint_dir=folder)
        else:
            session.report(metrics)
    write_metrics_csv(history, session.artifact_dir / "metrics.csv")
    return metrics


def _epoch(model, opt, data, cfg: Config, epoch: int) -> dict:
    """Every training window once as is and `aug_multiplier` times augmented (masks drawn for the
    whole batch on the device, as the LSTM's), then the two validation errors."""
    import torch

    from trainables.data import augment, masking
    from trainables.data.pretrain_windows import masked_error

    started = time.perf_counter()
    losses = []
    for aug_pass in range(1 + cfg.aug_multiplier):
        order = torch.randperm(len(data.train), device=data.train.device)
        for i in range(0, len(order), cfg.batch_size):
            x = data.train[order[i : i + cfg.batch_size]]
            if aug_pass:
                x = augment.augment(x, cfg.time_warp_sigma, cfg.scaling_sigma, cfg.jitter_sigma, None)
            mask = masking.make_mask(
                cfg.mask_strategy,
                tuple(x.shape),
                cfg.mask_ratio,
                x.device,
                patch_len=cfg.patch_len,
                mean_block=cfg.mean_block,
            )
            loss = masking.masked_mse(model(x, mask), x, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(loss.detach())
    train_loss = float(torch.stack(losses).mean())  # the epoch's one host sync of training
    common = masked_error(model, data.val, data.common_mask, cfg.batch_size * 4)
    return {
        "epoch": epoch,
        "train/loss": train_loss,
        "val/loss": masked_error(model, data.val, data.val_mask, cfg.batch_size * 4),
        "val/masked_mse": common,
        "val/interp_mse": data.interp_mse,
        "val/mse_vs_interp": common / data.interp_mse if data.interp_mse > 0 else float("nan"),
        "epoch_time_s": time.perf_counter() - started,
    }
