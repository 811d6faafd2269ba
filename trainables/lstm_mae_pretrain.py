"""BiLSTM masked-autoencoder pretraining on unlabeled OHLC windows.

The encoder reads a window whose hidden values (a `random`, `block` or `patch` mask at ratio r)
are filled by linear interpolation between the nearest visible bars of the same channel, and a
linear head predicts a correction to that fill; the loss is the MSE over hidden values only.
Why the fill instead of zeros: after per-window normalisation 0 is a common real value, so a
zero gives the encoder no way to tell hidden from visible, and at fine-tuning time the encoder
sees complete windows, which a plausible fill resembles more. The encoder keeps 4 input
channels, so its forward direction transfers to the causal fine-tuning LSTM. The model starts
at the interpolation baseline and has to learn what interpolation misses (cross-channel
structure: the next open is close to the previous close, high and low bracket the bar). Each
epoch sees every training window once as is and `aug_multiplier` more times augmented (time
warp, scaling, jitter), all on the device.

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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainables.configs.lstm_mae_pretrain import Config
from trainables.data import augment, masking
from trainables.data.pretrain_windows import Windows, load_windows, masked_error
from trainables.models import encoders
from trainables.models.masked_autoencoder import MaskedAutoencoder
from trainables.runtime import checkpoints, distributed, precision
from trainables.runtime.early_stopping import EarlyStopping
from trainables.runtime.metadata import environment, parameter_counts
from trainables.runtime.reproducibility import rng_state, set_rng_state, start_trial
from trainables.runtime.selection import ModelChoice
from trainables.runtime.session import Session, write_json, write_metrics_csv


@dataclass
class TrainState:
    """Everything a checkpoint holds and a resumed trial continues from."""

    model: MaskedAutoencoder
    opt: torch.optim.Optimizer
    sched: object
    stopper: EarlyStopping
    encoder_choice: ModelChoice
    history: list[dict] = field(default_factory=list)
    epoch: int = 0  # epochs done
    best_encoder: dict | None = None  # the chosen epoch's encoder weights, on the device

    def state_dict(self, cfg: Config) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "early_stopping": self.stopper.state_dict(),
            "best_encoder": self.best_encoder,
            "encoder_choice": self.encoder_choice.state_dict(),
            "rng": rng_state(),
            "config": cfg.model_dump(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.stopper = EarlyStopping.from_state(state["early_stopping"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.best_encoder = state["best_encoder"]
        self.encoder_choice.load_state_dict(state.get("encoder_choice"))
        set_rng_state(state["rng"])


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


def train_step(
    model, opt, x: torch.Tensor, cfg: Config, generator: torch.Generator | None, augmented: bool
) -> torch.Tensor:
    """One optimisation step on a batch already on the device: augment, mask, forward, backward."""
    if augmented:
        x = augment.augment(x, cfg.time_warp_sigma, cfg.scaling_sigma, cfg.jitter_sigma, generator)
    mask = masking.make_mask(
        cfg.mask_strategy,
        tuple(x.shape),
        cfg.mask_ratio,
        x.device,
        patch_len=cfg.patch_len,
        mean_block=cfg.mean_block,
        generator=generator,
    )
    with precision.autocast(x.device, cfg.mixed_precision):
        loss = masking.masked_mse(model(x, mask), x, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss.detach()


def train(config: dict, session: Session | None = None) -> dict:
    """Run one pretraining trial; returns the last reported metrics."""
    cfg = Config.model_validate(config)
    session, device = start_trial(cfg, session)
    data = load_windows(cfg, device)
    model, opt, sched = build(cfg, device)
    # encoder.pt is the encoder of the epoch the stage selects on (its select metric), the same
    # epoch whose checkpoint goes downstream; val/loss without a per-epoch select metric
    state = TrainState(
        model,
        opt,
        sched,
        EarlyStopping(cfg.early_stopping_patience, cfg.early_stopping_min_delta),
        ModelChoice(session.selection, "val/loss", "min"),
    )
    saved = session.restore_state(map_location=device)
    if saved is not None:
        state.load_state_dict(saved)
        if state.epoch >= cfg.epochs or state.stopper.should_stop:
            return state.history[-1]  # finished before the interruption: nothing to redo
    _write_metadata(session, cfg, state.model, data, device)
    metrics = fit(state, data, cfg, session)
    write_metrics_csv(state.history, session.artifact_dir / "metrics.csv")
    if state.best_encoder is not None:
        _export_best_encoder(state, session.artifact_dir / encoders.ENCODER_FILE, cfg)
    return metrics


def fit(state: TrainState, data: Windows, cfg: Config, session: Session) -> dict:
    """The epochs from `state.epoch` on: train, validate, report (with a checkpoint when due);
    returns the last epoch's metrics. Stops early, or at a non-finite loss (`diverged`)."""
    # `workers: N`: DDP over Ray Train's process group, each rank on its share of every epoch's
    # shuffled windows (same seed on every rank, so the shuffles agree).
    net = distributed.wrap(state.model, data.train.device)
    metrics: dict = state.history[-1] if state.history else {}
    for epoch in range(state.epoch, cfg.epochs):
        metrics = _epoch(net, state, data, cfg)
        state.history.append(metrics)
        if metrics["diverged"]:
            # No checkpoint of a NaN state: the last good one stays the trial's latest.
            session.report(metrics)
            break
        state.epoch = epoch + 1
        last = state.epoch == cfg.epochs or state.stopper.should_stop
        if session.checkpoint_due(state.epoch, metrics) or last:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoints.save(state.state_dict(cfg), Path(tmp) / checkpoints.STATE_FILE)
                _export_best_encoder(state, Path(tmp) / encoders.ENCODER_FILE, cfg)
                write_metrics_csv(state.history, session.artifact_dir / "metrics.csv")
                session.report(metrics, checkpoint_dir=tmp)
        else:
            session.report(metrics)
        if state.stopper.should_stop:
            break
    return metrics


def _epoch(net, state: TrainState, data: Windows, cfg: Config) -> dict:
    """One epoch: every training window once as is and `aug_multiplier` times augmented, then
    validation on the fixed masks; the epoch's metrics. Steps the scheduler and early stopping
    and keeps the chosen epoch's encoder (all unless the epoch diverged)."""
    t0 = time.perf_counter()
    world = distributed.world()[1]
    generator = None  # the global RNG is seeded and checkpointed; one stream keeps resume exact
    losses = []
    for aug_pass in range(1 + cfg.aug_multiplier):
        perm = distributed.shard(torch.randperm(len(data.train), device=data.train.device))
        for i in range(0, len(perm), cfg.batch_size):
            xb = data.train[perm[i : i + cfg.batch_size]]
            losses.append(train_step(net, state.opt, xb, cfg, generator, augmented=aug_pass > 0))
    train_loss = float(distributed.mean(torch.stack(losses).mean()))  # the epoch's one host sync of training
    train_time = time.perf_counter() - t0
    val_loss = masked_error(state.model, data.val, data.val_mask, cfg.batch_size * 4)
    val_common = masked_error(state.model, data.val, data.common_mask, cfg.batch_size * 4)
    diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
    epoch = state.epoch + 1
    metrics = {
        "epoch": epoch,
        "train/loss": train_loss,
        "val/loss": val_loss,
        "val/masked_mse": val_common,
        "val/interp_mse": data.interp_mse,
        "val/mse_vs_interp": val_common / data.interp_mse if data.interp_mse > 0 else float("nan"),
        "lr": state.opt.param_groups[0]["lr"],
        "epoch_time_s": time.perf_counter() - t0,
        "samples_per_s": len(perm) * world * (1 + cfg.aug_multiplier) / train_time,
        "diverged": diverged,
    }
    if diverged:
        return metrics
    if cfg.schedule == "plateau":
        state.sched.step(val_loss)
    else:
        state.sched.step()
    state.stopper.update(val_loss, epoch)
    if state.encoder_choice.update(metrics):
        # a copy on the device: no host transfer per improvement (saved when checkpointing)
        state.best_encoder = {k: v.detach().clone() for k, v in state.model.encoder.lstm.state_dict().items()}
    metrics["best/val_loss"] = state.stopper.best
    metrics["best/epoch"] = state.stopper.best_epoch
    metrics["stopped_early"] = state.stopper.should_stop
    if epoch == cfg.epochs or state.stopper.should_stop:
        if world > 1:  # DDP kept the replicas identical (see distributed.param_spread)
            metrics["workers/param_spread"] = distributed.param_spread(net)
    return metrics


def _export_best_encoder(state: TrainState, path: Path, cfg: Config) -> None:
    """The encoder of the best epoch (by `state.encoder_choice`), alone, for fine-tuning stages."""
    choice = state.encoder_choice
    encoder = encoders.BiLSTMEncoder(4, cfg.hidden_size, cfg.num_layers, cfg.dropout)
    encoder.lstm.load_state_dict(
        state.best_encoder if state.best_encoder is not None else state.model.encoder.lstm.state_dict()
    )
    encoders.export(
        encoder,
        path,
        {
            "trainable": "lstm_mae_pretrain",
            "best_epoch": choice.best_epoch,
            "selected_by": choice.metric,
            "value": choice.best,
            "seed": cfg.seed,
        },
    )


def _write_metadata(
    session: Session, cfg: Config, model: MaskedAutoencoder, data: Windows, device: torch.device
) -> None:
    write_json(
        {
            **session.context,
            "trainable": "lstm_mae_pretrain",
            "config": cfg.model_dump(),
            "data": {
                "source": cfg.data,
                "train_windows": len(data.train),
                "val_windows": len(data.val),
                "window_length": cfg.window_length,
                "normalisation": "per-window z-score over all OHLC values",
                "overlap": data.overlap,
            },
            "parameters": parameter_counts(model),
            "device": str(device),
            "mixed_precision": precision.describe(device, cfg.mixed_precision),
            "workers": distributed.gather(distributed.placement()),
            "environment": environment(),
        },
        session.artifact_dir / "metadata.json",
    )
