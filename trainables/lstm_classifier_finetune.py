"""Causal LSTM classifier of labeled OHLC windows, optionally starting from a pretrained encoder,
evaluated out-of-fold.

Model: a unidirectional (causal) LSTM (4 -> hidden 128), multi-head self-attention (8 heads)
with a causal mask, a residual + LayerNorm, and a linear head on the last bar. With `encoder:`
the LSTM starts from the forward direction of layer 0 of a pretrained bidirectional encoder
(`lstm_mae_pretrain`'s `encoder.pt`, or a checkpoint folder holding it); it can stay frozen for
`freeze_encoder_epochs` and then trains at `encoder_lr_factor` x lr.

Evaluation: K-fold (see `trainables/folds.py`): windows that share bars (by their `start`, or,
without one, found from the prices: `trainables/overlap.py`) are grouped and purged, so none of
them straddles a fold; independent windows get stratified folds. Each fold trains a fresh
model, early-stopped on an inner split of its training windows (15%; the same rule: grouped and
purged for overlapping windows, stratified otherwise, seeded by seed and fold so that a resumed
trial draws the same split), then predicts its held-out fold. Reports, once
per fold, the fold's scores and the out-of-fold (OOF) scores so far: `oof/accuracy`,
`oof/balanced_accuracy`, `oof/macro_f1`, `oof/acc/<class>`, `class_collapse`. The trial
checkpoints after every fold and resumes at the next one. OOF predictions are saved as
`oof_predictions.parquet` (window_id, fold, label, prediction, one probability per class).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainables.runtime import checkpoints
from trainables.models import encoders
from trainables.data import ohlc as ohlc_data
from trainables.data import overlap
from trainables.configs.lstm_classifier_finetune import (INPUT_FIELDS, Config, check_inputs,  # noqa: F401 (re-exported)
                                                         folds_note, load_labeled)
from trainables.metrics.classification import classification_report
from trainables.runtime.early_stopping import EarlyStopping
from trainables.data.folds import inner_split, make_folds
from trainables.runtime.metadata import environment, parameter_counts
from trainables.runtime.reproducibility import rng_state, set_rng_state, start_trial
from trainables.runtime.session import Session, write_json, write_metrics_csv



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


class Diverged(RuntimeError):
    pass


def build_model(cfg: Config, n_classes: int, device: torch.device) -> tuple[CausalLSTMClassifier, dict | None]:
    model = CausalLSTMClassifier(n_classes, cfg.hidden_size, cfg.num_heads, cfg.dropout)
    info = encoders.transfer_forward_direction(cfg.encoder, model.lstm) if cfg.encoder else None
    return model.to(device), info


def fit_fold(model: CausalLSTMClassifier, x: torch.Tensor, y: torch.Tensor, x_stop: torch.Tensor,
             y_stop: torch.Tensor, cfg: Config, n_classes: int, transferred: bool,
             on_epoch=None) -> tuple[dict, list[dict]]:
    """Train one fold's model; returns (best state by early-stopping loss, per-epoch history)."""
    encoder_params = list(model.lstm.parameters())
    other = [p for n, p in model.named_parameters() if not n.startswith("lstm.")]
    enc_lr = cfg.lr * cfg.encoder_lr_factor if transferred else cfg.lr
    opt = torch.optim.AdamW([{"params": encoder_params, "lr": enc_lr}, {"params": other, "lr": cfg.lr}],
                            weight_decay=cfg.weight_decay)
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
        model.train()
        order = torch.multinomial(draw_p, len(y), replacement=True) if draw_p is not None else \
            torch.randperm(len(y), device=y.device)
        losses = []
        for i in range(0, len(y), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(loss.detach())
        train_loss = float(torch.stack(losses).mean())
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


def train(config: dict, session: Session | None = None) -> dict:
    """Run one out-of-fold fine-tuning trial; returns the last reported metrics."""
    cfg = Config.model_validate(config)
    session, device = start_trial(cfg, session)
    windows, y_np, classes = load_labeled(cfg)
    n, c = len(y_np), len(classes)
    x = ohlc_data.normalise(torch.as_tensor(windows.ohlc, dtype=torch.float32, device=device))
    y = torch.as_tensor(y_np, device=device)
    line = overlap.timeline(windows.ohlc, windows.start)
    folds = make_folds(y_np, cfg.folds, cfg.seed, line.start, cfg.window_length)
    inner = [_inner(y_np, train_idx, line.start, cfg, fold) for fold, (train_idx, _) in enumerate(folds)]

    oof_prob = np.full((n, c), np.nan)
    oof_fold = np.full(n, -1)
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
    write_json({**session.context, "trainable": "lstm_classifier_finetune", "config": cfg.model_dump(),
                "classes": classes, "data": {"source": cfg.data, "windows": n,
                                             "class_counts": {k: int((y_np == i).sum()) for i, k in enumerate(classes)}},
                "folds": [{"train": len(tr), "val": len(va), "purged": n - len(tr) - len(va), "fit": len(fit),
                           "early_stopping": len(stop)} for (tr, va), (fit, stop) in zip(folds, inner)],
                "overlap": {**line.describe(cfg.window_length), "split": folds_note(line, folds, n)},
                "encoder": transfer_info, "parameters": parameter_counts(probe), "device": str(device),
                "environment": environment()}, session.artifact_dir / "metadata.json")
    metrics: dict = history[-1] if history else {}
    for fold in range(start_fold, cfg.folds):
        t0 = time.perf_counter()
        _, val_idx = folds[fold]
        fit_idx, stop_idx = inner[fold]
        model, _ = build_model(cfg, c, device)
        try:
            best, fold_history = fit_fold(model, x[fit_idx], y[fit_idx], x[stop_idx], y[stop_idx], cfg, c,
                                          transferred=cfg.encoder is not None)
        except Diverged as exc:
            metrics = dict(metrics, fold=fold + 1, diverged=True, error=str(exc))
            session.report(metrics)
            return metrics
        model.load_state_dict(best)
        model.eval()
        with torch.no_grad():
            prob = torch.softmax(model(x[val_idx]), dim=-1).cpu().numpy()
        oof_prob[val_idx], oof_fold[val_idx] = prob, fold
        fold_report = classification_report(y_np[val_idx], prob.argmax(1), classes)
        done = oof_fold >= 0
        oof = classification_report(y_np[done], oof_prob[done].argmax(1), classes)
        # `oof/*` appears only in the last report, when every window has its out-of-fold
        # prediction: a partial OOF score is not comparable, and Tune's "best over iterations"
        # of a metric reported once is its final value.
        prefix = "oof" if fold + 1 == cfg.folds else "oof_so_far"
        metrics = {
            "fold": fold + 1, "fold/accuracy": fold_report["accuracy"],
            "fold/balanced_accuracy": fold_report["balanced_accuracy"], "fold/epochs": len(fold_history),
            "train/loss": fold_history[-1]["train_loss"], "val/loss": fold_history[-1]["stop_loss"],
            **{f"{prefix}/{k}": v for k, v in oof.items() if k != "class_collapse"},
            "class_collapse": oof["class_collapse"], f"{prefix}/windows": int(done.sum()),
            "fold_time_s": time.perf_counter() - t0, "diverged": False,
        }
        history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoints.save({"fold": fold + 1, "history": history, "oof_prob": torch.as_tensor(oof_prob),
                              "oof_fold": torch.as_tensor(oof_fold), "rng": rng_state(),
                              "config": cfg.model_dump(), "classes": classes}, Path(tmp) / checkpoints.STATE_FILE)
            write_metrics_csv(history, session.artifact_dir / "metrics.csv")
            session.report(metrics, checkpoint_dir=tmp)
    _write_oof(session.artifact_dir / "oof_predictions.parquet", windows, y_np, oof_prob, oof_fold, classes)
    return metrics


def _inner(y: np.ndarray, train_idx: np.ndarray, starts: np.ndarray, cfg: Config, fold: int):
    """A fold's (fit, early-stopping) windows, as indices into all windows. Seeded by the trial's
    seed and the fold, so a trial resumed at fold k draws the split an uninterrupted one would."""
    seed = int(np.random.SeedSequence([cfg.seed, fold]).generate_state(1)[0])
    fit, stop = inner_split(y[train_idx], cfg.inner_val_fraction, seed, starts[train_idx], cfg.window_length)
    return train_idx[fit], train_idx[stop]


def _write_oof(path: Path, windows: ohlc_data.Windows, y: np.ndarray, prob: np.ndarray, fold: np.ndarray,
               classes: list[str]) -> None:
    import pandas as pd

    df = pd.DataFrame({"window_id": windows.window_id, "fold": fold, "label": np.asarray(classes)[y],
                       "prediction": np.asarray(classes)[np.nan_to_num(prob).argmax(1)]})
    for i, name in enumerate(classes):
        df[f"prob_{name}"] = prob[:, i]
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
