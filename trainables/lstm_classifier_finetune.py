"""Causal LSTM classifier of labeled OHLC windows, optionally starting from a pretrained encoder,
evaluated out-of-fold.

Model (`trainables/models/causal_classifier.py`): a unidirectional (causal) LSTM (4 -> hidden
128), multi-head self-attention (8 heads) with a causal mask, a residual + LayerNorm, and a
linear head on the last bar. With `encoder:` the LSTM starts from the forward direction of layer
0 of a pretrained bidirectional encoder (`lstm_mae_pretrain`'s `encoder.pt`, or a checkpoint
folder holding it); it can stay frozen for `freeze_encoder_epochs` and then trains at
`encoder_lr_factor` x lr.

Evaluation: K-fold (see `trainables/data/folds.py`): windows that share bars (by their `start`,
or, without one, found from the prices: `trainables/data/overlap.py`) are grouped and purged,
so none of them straddles a fold; independent windows get stratified folds. Each fold trains a
fresh model, early-stopped on an inner split of its training windows (15%; the same rule:
grouped and purged for overlapping windows, stratified otherwise, seeded by seed and fold so
that a resumed trial draws the same split), then predicts its held-out fold. Reports, once per
fold, the fold's scores and the out-of-fold (OOF) scores so far: `oof/accuracy`,
`oof/balanced_accuracy`, `oof/macro_f1`, `oof/acc/<class>`, `class_collapse`. The trial
checkpoints after every fold and resumes at the next one. OOF predictions are saved as
`oof_predictions.parquet` (window_id, fold, label, prediction, one probability per class).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.configs.lstm_classifier_finetune import Config
from trainables.data import ohlc
from trainables.data.folds import folds_note, inner_split, make_folds
from trainables.data.labeled import load_classified
from trainables.data.overlap import Timeline, timeline
from trainables.metrics.classification import classification_report
from trainables.models import causal_classifier
from trainables.models.causal_classifier import CausalLSTMClassifier
from trainables.runtime import checkpoints, precision
from trainables.runtime.early_stopping import EarlyStopping
from trainables.runtime.metadata import environment, parameter_counts
from trainables.runtime.reproducibility import rng_state, set_rng_state, start_trial
from trainables.runtime.session import Session, write_json, write_metrics_csv


class Diverged(RuntimeError):
    pass


@dataclass
class LabeledData:
    """The trial's windows on the device, their labels, and how they are folded."""

    windows: ohlc.Windows
    x: torch.Tensor
    y: torch.Tensor
    labels: np.ndarray
    classes: list[str]
    line: Timeline
    folds: list[tuple[np.ndarray, np.ndarray]]  # (train, validation) per fold
    inner: list[tuple[np.ndarray, np.ndarray]]  # (fit, early stopping) per fold


def build_model(cfg: Config, n_classes: int, device: torch.device) -> tuple[CausalLSTMClassifier, dict | None]:
    return causal_classifier.build(
        n_classes,
        hidden_size=cfg.hidden_size,
        num_heads=cfg.num_heads,
        dropout=cfg.dropout,
        encoder=cfg.encoder,
        device=device,
    )


def fit_fold(
    model: CausalLSTMClassifier,
    train: tuple[torch.Tensor, torch.Tensor],
    stop: tuple[torch.Tensor, torch.Tensor],
    cfg: Config,
    *,
    n_classes: int,
    transferred: bool,
    on_epoch=None,
) -> tuple[dict, list[dict]]:
    """Train one fold's model on `train` (x, y), early-stopped on `stop` (x, y); returns (best
    state by early-stopping loss, per-epoch history)."""
    (x, y), (x_stop, y_stop) = train, stop
    encoder_params = list(model.lstm.parameters())
    other = [p for n, p in model.named_parameters() if not n.startswith("lstm.")]
    enc_lr = cfg.lr * cfg.encoder_lr_factor if transferred else cfg.lr
    opt = torch.optim.AdamW(
        [{"params": encoder_params, "lr": enc_lr}, {"params": other, "lr": cfg.lr}], weight_decay=cfg.weight_decay
    )
    counts = torch.bincount(y, minlength=n_classes).float()
    weight = (len(y) / (n_classes * counts.clamp_min(1))) if cfg.class_weights == "balanced" else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    draw_p = (1.0 / counts.clamp_min(1))[y] if cfg.sampler == "balanced" else None
    stopper = EarlyStopping(cfg.early_stopping_patience)
    best_state, history = None, []
    frozen = transferred and cfg.freeze_encoder_epochs > 0
    model.lstm.requires_grad_(not frozen)
    for epoch in range(cfg.epochs):
        if frozen and epoch == cfg.freeze_encoder_epochs:
            model.lstm.requires_grad_(True)
            frozen = False
        order = (
            torch.multinomial(draw_p, len(y), replacement=True)
            if draw_p is not None
            else torch.randperm(len(y), device=y.device)
        )
        train_loss = _train_epoch(model, opt, loss_fn, (x[order], y[order]), cfg)
        model.eval()
        with torch.no_grad():
            stop_loss = float(loss_fn(model(x_stop), y_stop)) if len(y_stop) else train_loss
        if not (math.isfinite(train_loss) and math.isfinite(stop_loss)):
            raise Diverged(f"non-finite loss at epoch {epoch + 1}")
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "stop_loss": stop_loss, "frozen": frozen})
        if stopper.update(stop_loss, epoch + 1) or best_state is None:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, model)
        if stopper.should_stop:
            break
    return best_state, history


def _train_epoch(
    model: CausalLSTMClassifier, opt, loss_fn, data: tuple[torch.Tensor, torch.Tensor], cfg: Config
) -> float:
    """One pass over `data` (x, y) in its order, in batches; the mean training loss (the pass's
    one host synchronisation)."""
    x, y = data
    model.train()
    losses = [
        _train_step(model, opt, loss_fn, (x[i : i + cfg.batch_size], y[i : i + cfg.batch_size]), cfg)
        for i in range(0, len(y), cfg.batch_size)
    ]
    return float(torch.stack(losses).mean())


def _train_step(model: CausalLSTMClassifier, opt, loss_fn, batch: tuple[torch.Tensor, torch.Tensor], cfg: Config):
    """One optimisation step on a batch on the device; the detached loss (no host synchronisation)."""
    with precision.autocast(batch[0].device, cfg.mixed_precision):
        loss = loss_fn(model(batch[0]), batch[1])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss.detach()


def train(config: dict, session: Session | None = None) -> dict:
    """Run one out-of-fold fine-tuning trial; returns the last reported metrics."""
    cfg = Config.model_validate(config)
    session, device = start_trial(cfg, session)
    data = load_data(cfg, device)
    n, c = len(data.labels), len(data.classes)
    oof_prob, oof_fold = np.full((n, c), np.nan), np.full(n, -1)
    start_fold, history = 0, []
    state = session.restore_state()
    if state is not None:
        start_fold, history = state["fold"], state["history"]
        oof_prob, oof_fold = state["oof_prob"].numpy(), state["oof_fold"].numpy()
        if start_fold >= cfg.folds:
            return history[-1]  # finished before the interruption: nothing to redo
    probe, transfer_info = build_model(cfg, c, device)
    if state is not None:  # after the probe model: its initialisation draws from the torch RNG too
        set_rng_state(state["rng"])
    _write_metadata(session, cfg, data, probe, transfer_info, device)
    metrics: dict = history[-1] if history else {}
    for fold in range(start_fold, cfg.folds):
        t0 = time.perf_counter()
        try:
            prob, fold_history = _fit_and_predict(data, fold, cfg, device)
        except Diverged as exc:
            metrics = dict(metrics, fold=fold + 1, diverged=True, error=str(exc))
            session.report(metrics)
            return metrics
        val_idx = data.folds[fold][1]
        oof_prob[val_idx], oof_fold[val_idx] = prob, fold
        metrics = _fold_metrics(data, fold, prob, fold_history, (oof_prob, oof_fold), cfg)
        metrics["fold_time_s"] = time.perf_counter() - t0
        metrics["diverged"] = False
        history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoints.save(
                {
                    "fold": fold + 1,
                    "history": history,
                    "oof_prob": torch.as_tensor(oof_prob),
                    "oof_fold": torch.as_tensor(oof_fold),
                    "rng": rng_state(),
                    "config": cfg.model_dump(),
                    "classes": data.classes,
                },
                Path(tmp) / checkpoints.STATE_FILE,
            )
            write_metrics_csv(history, session.artifact_dir / "metrics.csv")
            session.report(metrics, checkpoint_dir=tmp)
    _write_oof(session.artifact_dir / "oof_predictions.parquet", data, oof_prob, oof_fold)
    return metrics


def load_data(cfg: Config, device: torch.device) -> LabeledData:
    """The labeled windows, normalised, on the device, with their folds and inner splits."""
    windows, labels, classes = load_classified(cfg.data, cfg.window_length, cfg.folds)
    x = ohlc.normalise(torch.as_tensor(windows.ohlc, dtype=torch.float32, device=device))
    line = timeline(windows.ohlc, windows.start)
    folds = make_folds(labels, cfg.folds, cfg.seed, line.start, cfg.window_length)
    inner = [_inner(labels, train_idx, line.start, cfg, fold) for fold, (train_idx, _) in enumerate(folds)]
    return LabeledData(windows, x, torch.as_tensor(labels, device=device), labels, classes, line, folds, inner)


def _fit_and_predict(data: LabeledData, fold: int, cfg: Config, device: torch.device):
    """A fresh model trained on the fold's training windows; (class probabilities of its held-out
    windows, its per-epoch history)."""
    val_idx = data.folds[fold][1]
    fit_idx, stop_idx = data.inner[fold]
    model, _ = build_model(cfg, len(data.classes), device)
    best, history = fit_fold(
        model,
        (data.x[fit_idx], data.y[fit_idx]),
        (data.x[stop_idx], data.y[stop_idx]),
        cfg,
        n_classes=len(data.classes),
        transferred=cfg.encoder is not None,
    )
    model.load_state_dict(best)
    model.eval()
    with torch.no_grad():
        prob = torch.softmax(model(data.x[val_idx]), dim=-1).cpu().numpy()
    return prob, history


def _fold_metrics(
    data: LabeledData,
    fold: int,
    prob: np.ndarray,
    fold_history: list[dict],
    oof: tuple[np.ndarray, np.ndarray],
    cfg: Config,
) -> dict:
    """The fold's scores and the out-of-fold scores so far."""
    oof_prob, oof_fold = oof
    val_idx = data.folds[fold][1]
    fold_report = classification_report(data.labels[val_idx], prob.argmax(1), data.classes)
    done = oof_fold >= 0
    so_far = classification_report(data.labels[done], oof_prob[done].argmax(1), data.classes)
    # `oof/*` appears only in the last report, when every window has its out-of-fold
    # prediction: a partial OOF score is not comparable, and Tune's "best over iterations"
    # of a metric reported once is its final value.
    prefix = "oof" if fold + 1 == cfg.folds else "oof_so_far"
    return {
        "fold": fold + 1,
        "fold/accuracy": fold_report["accuracy"],
        "fold/balanced_accuracy": fold_report["balanced_accuracy"],
        "fold/epochs": len(fold_history),
        "train/loss": fold_history[-1]["train_loss"],
        "val/loss": fold_history[-1]["stop_loss"],
        **{f"{prefix}/{k}": v for k, v in so_far.items() if k != "class_collapse"},
        "class_collapse": so_far["class_collapse"],
        f"{prefix}/windows": int(done.sum()),
    }


def _inner(y: np.ndarray, train_idx: np.ndarray, starts: np.ndarray, cfg: Config, fold: int):
    """A fold's (fit, early-stopping) windows, as indices into all windows. Seeded by the trial's
    seed and the fold, so a trial resumed at fold k draws the split an uninterrupted one would."""
    seed = int(np.random.SeedSequence([cfg.seed, fold]).generate_state(1)[0])
    fit, stop = inner_split(y[train_idx], cfg.inner_val_fraction, seed, starts[train_idx], cfg.window_length)
    return train_idx[fit], train_idx[stop]


def _write_metadata(
    session: Session, cfg: Config, data: LabeledData, probe: nn.Module, transfer_info: dict | None, device: torch.device
) -> None:
    n = len(data.labels)
    write_json(
        {
            **session.context,
            "trainable": "lstm_classifier_finetune",
            "config": cfg.model_dump(),
            "classes": data.classes,
            "data": {
                "source": cfg.data,
                "windows": n,
                "class_counts": {k: int((data.labels == i).sum()) for i, k in enumerate(data.classes)},
            },
            "folds": [
                {
                    "train": len(tr),
                    "val": len(va),
                    "purged": n - len(tr) - len(va),
                    "fit": len(fit),
                    "early_stopping": len(stop),
                }
                for (tr, va), (fit, stop) in zip(data.folds, data.inner)
            ],
            "overlap": {**data.line.describe(cfg.window_length), "split": folds_note(data.line, data.folds, n)},
            "encoder": transfer_info,
            "parameters": parameter_counts(probe),
            "device": str(device),
            "mixed_precision": precision.describe(device, cfg.mixed_precision),
            "environment": environment(),
        },
        session.artifact_dir / "metadata.json",
    )


def _write_oof(path: Path, data: LabeledData, prob: np.ndarray, fold: np.ndarray) -> None:
    import pandas as pd

    classes = np.asarray(data.classes)
    df = pd.DataFrame(
        {
            "window_id": data.windows.window_id,
            "fold": fold,
            "label": classes[data.labels],
            "prediction": classes[np.nan_to_num(prob).argmax(1)],
        }
    )
    for i, name in enumerate(data.classes):
        df[f"prob_{name}"] = prob[:, i]
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
