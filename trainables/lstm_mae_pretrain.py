"""BiLSTM masked-autoencoder pretraining on unlabeled OHLC windows.

The encoder reads a window whose hidden values (a `random`, `block` or `patch` mask at ratio r)
are filled by linear interpolation between the nearest visible bars of the same channel, and a
linear head predicts a correction to that fill; the loss is the MSE over hidden values only.
Why the fill instead of zeros: after per-window normalisation 0 is a common real value, so a
zero gives the encoder no way to tell hidden from visible, and at fine-tuning time the encoder
sees complete windows, which a plausible fill resembles more. The encoder keeps 4 input
channels, so its forward direction transfers to the causal fine-tuning LSTM. The model starts
at the interpolation baseline and has to learn what interpolation misses (cross-channel
structure: the next open is close to the previous close, high and low bracket the bar). Each epoch sees every training window once
as is and `aug_multiplier` more times augmented (time warp, scaling, jitter), all on the device.

Metrics (one report per epoch):
- `train/loss`: mean masked MSE over the epoch's batches;
- `val/loss`: masked MSE on validation windows under this trial's own mask strategy (masks
  drawn once with a fixed seed, so epochs compare);
- `val/masked_mse`: masked MSE under one common random 15% mask shared by every trial, so
  trials with different strategies compare (use it to `select` the best encoder);
- `val/interp_mse`: the same common mask filled by linear interpolation between visible bars,
  the naive baseline; `val/mse_vs_interp` = val/masked_mse / val/interp_mse.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from trainables.data import augment
from trainables.runtime import checkpoints
from trainables.runtime import distributed
from trainables.models import encoders
from trainables.data import masking
from trainables.data import ohlc as ohlc_data
from trainables.configs.lstm_mae_pretrain import INPUT_FIELDS, Config, split  # noqa: F401 (re-exported)
from trainables.data.folds import split_note
from trainables.runtime.early_stopping import EarlyStopping
from trainables.runtime.metadata import environment, parameter_counts
from trainables.runtime.reproducibility import rng_state, set_rng_state, start_trial
from trainables.runtime.selection import ModelChoice
from trainables.runtime.session import Session, write_json, write_metrics_csv

EVAL_MASK_SEED = 20_251_017   # fixed: every trial is scored on the same validation masks
EVAL_MASK_RATIO = 0.15


class MaskedAutoencoder(nn.Module):
    def __init__(self, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.encoder = encoders.BiLSTMEncoder(4, hidden_size, num_layers, dropout)
        self.head = nn.Linear(self.encoder.output_size, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        filled = masking.interpolate_masked(x, mask)
        return filled + self.head(self.encoder(filled))


def build(cfg: Config, device: torch.device) -> tuple[MaskedAutoencoder, torch.optim.Optimizer, object]:
    model = MaskedAutoencoder(cfg.hidden_size, cfg.num_layers, cfg.dropout).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    elif cfg.schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return model, opt, sched


def train_step(model, opt, x: torch.Tensor, cfg: Config, generator: torch.Generator | None,
               augmented: bool) -> torch.Tensor:
    """One optimisation step on a batch already on the device: augment, mask, forward, backward."""
    if augmented:
        x = augment.augment(x, cfg.time_warp_sigma, cfg.scaling_sigma, cfg.jitter_sigma, generator)
    mask = masking.make_mask(cfg.mask_strategy, tuple(x.shape), cfg.mask_ratio, x.device,
                             patch_len=cfg.patch_len, mean_block=cfg.mean_block, generator=generator)
    loss = masking.masked_mse(model(x, mask), x, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss.detach()


@torch.no_grad()
def masked_error(model, x: torch.Tensor, mask: torch.Tensor, batch: int) -> float:
    model.eval()
    total, count = 0.0, 0.0
    for i in range(0, len(x), batch):
        xb, mb = x[i:i + batch], mask[i:i + batch]
        total += float((((model(xb, mb) - xb) ** 2) * mb).sum())
        count += float(mb.sum())
    model.train()
    return total / max(count, 1.0)


def train(config: dict, session: Session | None = None) -> dict:
    """Run one pretraining trial; returns the last reported metrics."""
    cfg = Config.model_validate(config)
    session, device = start_trial(cfg, session)

    windows = ohlc_data.load_windows(cfg.data, cfg.window_length)
    line, (train_idx, val_idx) = split(windows, cfg)
    data = ohlc_data.normalise(torch.as_tensor(windows.ohlc, dtype=torch.float32, device=device))
    x_train, x_val = data[torch.as_tensor(train_idx, device=device)], data[torch.as_tensor(val_idx, device=device)]

    # Validation masks are drawn once with fixed seeds: same masks every epoch and every trial.
    # Two separate generators: the common mask must not depend on the trial's strategy.
    val_mask = masking.make_mask(cfg.mask_strategy, tuple(x_val.shape), cfg.mask_ratio, device,
                                 patch_len=cfg.patch_len, mean_block=cfg.mean_block,
                                 generator=torch.Generator(device=device).manual_seed(EVAL_MASK_SEED))
    common_mask = masking.random_mask(tuple(x_val.shape), EVAL_MASK_RATIO, device,
                                      torch.Generator(device=device).manual_seed(EVAL_MASK_SEED + 1))
    interp = masking.interpolate_masked(x_val, common_mask)
    interp_mse = float(masking.masked_mse(interp, x_val, common_mask))

    model, opt, sched = build(cfg, device)
    stopper = EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_min_delta)
    start_epoch, history = 0, []
    best_encoder = None
    # encoder.pt is the encoder of the epoch the stage selects on (its select metric), the same
    # epoch whose checkpoint goes downstream; val/loss without a per-epoch select metric
    encoder_choice = ModelChoice(session.selection, "val/loss", "min")
    state = session.restore_state(map_location=device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        stopper = EarlyStopping.from_state(state["early_stopping"])
        start_epoch, history = state["epoch"], state["history"]
        best_encoder = state["best_encoder"]
        encoder_choice.load_state_dict(state.get("encoder_choice"))
        set_rng_state(state["rng"])
        if start_epoch >= cfg.epochs or stopper.should_stop:
            return history[-1]  # finished before the interruption: nothing to redo

    _write_metadata(session, cfg, model, len(train_idx), len(val_idx), device,
                    {**line.describe(cfg.window_length),
                     "split": split_note(line, len(windows), (train_idx, val_idx), ("train", "val"))})
    # `workers: N`: DDP over Ray Train's process group, each rank on its share of every epoch's
    # shuffled windows (same seed on every rank, so the shuffles agree).
    net = distributed.wrap(model, device)
    world = distributed.world()[1]
    generator = None  # the global RNG is seeded and checkpointed; one stream keeps resume exact
    n_train = len(x_train)
    metrics: dict = history[-1] if history else {}
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        losses = []
        for aug_pass in range(1 + cfg.aug_multiplier):
            perm = distributed.shard(torch.randperm(n_train, device=device))
            for i in range(0, len(perm), cfg.batch_size):
                xb = x_train[perm[i:i + cfg.batch_size]]
                losses.append(train_step(net, opt, xb, cfg, generator, augmented=aug_pass > 0))
        train_loss = distributed.mean(float(torch.stack(losses).mean()))
        train_time = time.perf_counter() - t0
        val_loss = masked_error(model, x_val, val_mask, cfg.batch_size * 4)
        val_common = masked_error(model, x_val, common_mask, cfg.batch_size * 4)
        diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
        metrics = {
            "epoch": epoch + 1,
            "train/loss": train_loss,
            "val/loss": val_loss,
            "val/masked_mse": val_common,
            "val/interp_mse": interp_mse,
            "val/mse_vs_interp": val_common / interp_mse if interp_mse > 0 else float("nan"),
            "lr": opt.param_groups[0]["lr"],
            "epoch_time_s": time.perf_counter() - t0,
            "samples_per_s": len(perm) * world * (1 + cfg.aug_multiplier) / train_time,
            "diverged": diverged,
        }
        if diverged:
            # No checkpoint of a NaN state: the last good one stays the trial's latest.
            history.append(metrics)
            session.report(metrics)
            break
        if cfg.schedule == "plateau":
            sched.step(val_loss)
        else:
            sched.step()
        stopper.update(val_loss, epoch + 1)
        if encoder_choice.update(metrics):
            # a copy on the device: no host transfer per improvement (saved when checkpointing)
            best_encoder = {k: v.detach().clone() for k, v in model.encoder.lstm.state_dict().items()}
        metrics["best/val_loss"] = stopper.best
        metrics["best/epoch"] = stopper.best_epoch
        last = epoch + 1 == cfg.epochs or stopper.should_stop
        metrics["stopped_early"] = stopper.should_stop
        if last and world > 1:   # DDP kept the replicas identical (see distributed.param_spread)
            metrics["workers/param_spread"] = distributed.param_spread(net)
        history.append(metrics)
        if session.checkpoint_due(epoch + 1, metrics) or last:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoints.save({
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "epoch": epoch + 1, "history": history, "early_stopping": stopper.state_dict(),
                    "best_encoder": best_encoder, "encoder_choice": encoder_choice.state_dict(), "rng": rng_state(),
                    "config": cfg.model_dump(),
                }, Path(tmp) / checkpoints.STATE_FILE)
                _export_best_encoder(model, best_encoder, Path(tmp) / encoders.ENCODER_FILE, cfg, encoder_choice)
                write_metrics_csv(history, session.artifact_dir / "metrics.csv")
                session.report(metrics, checkpoint_dir=tmp)
        else:
            session.report(metrics)
        if stopper.should_stop:
            break
    write_metrics_csv(history, session.artifact_dir / "metrics.csv")
    if best_encoder is not None:
        _export_best_encoder(model, best_encoder, session.artifact_dir / encoders.ENCODER_FILE, cfg, encoder_choice)
    return metrics


def _export_best_encoder(model: MaskedAutoencoder, best: dict | None, path: Path, cfg: Config,
                         choice: ModelChoice) -> None:
    """The encoder of the best epoch (by `choice`), alone, for fine-tuning stages."""
    encoder = encoders.BiLSTMEncoder(4, cfg.hidden_size, cfg.num_layers, cfg.dropout)
    encoder.lstm.load_state_dict(best if best is not None else model.encoder.lstm.state_dict())
    encoders.export(encoder, path, {"trainable": "lstm_mae_pretrain", "best_epoch": choice.best_epoch,
                                    "selected_by": choice.metric, "value": choice.best, "seed": cfg.seed})


def _write_metadata(session: Session, cfg: Config, model: nn.Module, n_train: int, n_val: int,
                    device: torch.device, overlap: dict) -> None:
    write_json({
        **session.context,
        "trainable": "lstm_mae_pretrain",
        "config": cfg.model_dump(),
        "data": {"source": cfg.data, "train_windows": n_train, "val_windows": n_val,
                 "window_length": cfg.window_length, "normalisation": "per-window z-score over all OHLC values",
                 "overlap": overlap},
        "parameters": parameter_counts(model),
        "device": str(device),
        "workers": distributed.gather(distributed.placement()),
        "environment": environment(),
    }, session.artifact_dir / "metadata.json")
