"""Multi-task span model of labeled OHLC windows (the seeds' "Jade" baseline), with the seed's
full diagnostics.

Input: the 12 per-bar features of `trainables/data/span_features.py`, z-scored with the training
windows' statistics. Encoder: an LSTM (bidirectional by default; hidden 96 = ~86k parameters).
Four heads:

- `type`: the window's class from mean- and max-pooled encoder states (cross-entropy);
- `ptr`: expansion start and end as fractions of the window, t / (T - 1). Each pointer is a
  soft-argmax over per-bar logits (the expected bar position under a softmax), not a
  regression from a pooled vector: the per-bar states already know where the expansion is,
  and this keeps the pointer differentiable and sharp (Huber, delta = 0.08);
- `span`: a per-bar logit z_t, p_t = sigmoid(z_t), trained with the *soft span loss*
  BCE(p, m) + (1 - soft Dice(p, m)) against the soft target m (`trainables/losses/span.py`, the
  targets in `trainables/data/span_targets.py`;
  Dice counters the imbalance: a span covers ~20% of the bars). With `use_crf: true` a
  linear-chain CRF over in/out tags (emissions (-z/2, z/2), parameters in a `torchcrf.CRF`)
  adds its negative log-likelihood per bar to the span loss, and spans are Viterbi-decoded
  (both batched on the device: `trainables/models/crf.py`);
- `countdown`: per bar (onset - t) / countdown_scale, negative after onset (Huber, delta = 1).

The four losses are combined by learned uncertainty weighting or fixed weights
(`trainables/losses/uncertainty.py`: type and span count as classification, ptr and countdown as
regression).

Training: AdamW, gradient clipping, a NaN guard (a non-finite loss ends the trial as
`diverged`, its last good checkpoint kept), optional early stopping. The best model is the
epoch with the lowest *unweighted* sum of validation task losses: the weighted objective
includes 0.5 * s_i terms that move as the weights learn, so it does not compare across
epochs (it can even turn negative). After training: a threshold sweep (0.1-0.9) on validation
with the best model, the chosen threshold evaluated on the test block (the last windows in
time, 20% by default when there are enough: validation chose the epoch and the threshold, so
its `final/val_*` scores are optimistic and `final/test_*` are the ones to report), an optional
ensemble of the last k periodic checkpoints (`ensemble/test_*` likewise), plots, and the seed's
success criteria in `diagnostics.json`, judged on the test block when there is one (rendered by
`python -m orchestrator report`).

Files of a trial: see `trainables/metrics/span_diagnostics.py`, plus metadata.json, best_model.pt,
checkpoint_epoch_N.pt, metrics.csv (every reported metric per epoch), threshold_sweep.csv.

This file is the recipe: `train` (setup), `fit` and its epoch (the fit loop), `_finish` (the
evaluation after the last epoch). Its parts: the windows split by time and standardised
(`trainables/data/span_windows.py`), the model and heads (`trainables/models/span_model.py`),
the per-epoch tables and diagnostics.json (`trainables/metrics/span_diagnostics.py`), the final
scores and the ensemble (`trainables/evaluation/span.py`).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainables.configs.multitask_span import TASKS, Config
from trainables.data import span_features
from trainables.data.span_targets import Batch
from trainables.data.span_windows import SpanData, load_data
from trainables.evaluation.span import ensemble, evaluate, final_scores
from trainables.losses.span import task_losses
from trainables.losses.uncertainty import TaskWeighting
from trainables.metrics import span as span_metrics
from trainables.metrics.span_diagnostics import DiagnosticLog, plot_all, write_epoch, write_summary
from trainables.models.span_model import SpanModel
from trainables.runtime import checkpoints, precision
from trainables.runtime.early_stopping import EarlyStopping
from trainables.runtime.metadata import environment, parameter_counts
from trainables.runtime.reproducibility import rng_state, set_rng_state, start_trial
from trainables.runtime.session import Session, write_json, write_metrics_csv

TASK_KINDS = {"type": "classification", "ptr": "regression", "span": "classification", "countdown": "regression"}
BEST_MODEL = "best_model.pt"


@dataclass
class TrainState:
    """Everything a checkpoint holds and a resumed trial continues from."""

    model: SpanModel
    weighting: TaskWeighting
    opt: torch.optim.Optimizer
    stopper: EarlyStopping
    diag: DiagnosticLog
    history: list[dict] = field(default_factory=list)
    epoch: int = 0  # epochs done
    best_state: dict | None = None  # the best epoch's weights (lowest unweighted validation task loss)

    def state_dict(self, cfg: Config) -> dict:
        return {
            "model": self.model.state_dict(),
            "weighting": self.weighting.state_dict(),
            "optimizer": self.opt.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "best_state": self.best_state,
            "diagnostics": self.diag.state_dict(),
            "rng": rng_state(),
            "config": cfg.model_dump(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.weighting.load_state_dict(state["weighting"])
        self.opt.load_state_dict(state["optimizer"])
        self.stopper = EarlyStopping.from_state(state["early_stopping"])
        self.epoch, self.history, self.best_state = state["epoch"], state["history"], state["best_state"]
        self.diag.load_state_dict(state["diagnostics"])
        set_rng_state(state["rng"])


@dataclass
class TrainPass:
    """What one epoch's training pass measured."""

    components: list[float]  # mean unweighted task losses, in TASKS order
    objective: float  # mean weighted objective
    prob: torch.Tensor  # per-bar span probabilities of every training window
    grad_row: list[float] | None  # total and per-parameter gradient norms of the last batch
    seconds: float


def build(cfg: Config, n_classes: int, device: torch.device):
    model = SpanModel(len(span_features.FEATURES), n_classes, cfg).to(device)
    weighting = TaskWeighting(TASK_KINDS, cfg.loss_weighting, cfg.loss_weights).to(device)
    opt = torch.optim.AdamW(
        [
            {"params": model.parameters(), "weight_decay": cfg.weight_decay},
            {"params": [weighting.log_var], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        foreach=True,
    )
    return model, weighting, opt


def train(config: dict, session: Session | None = None) -> dict:
    """Run one multi-task span trial; returns the last reported metrics."""
    cfg = Config.model_validate(config)
    session, device = start_trial(cfg, session)
    folder = session.artifact_dir
    data = load_data(cfg, device)
    model, weighting, opt = build(cfg, len(data.classes), device)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    state = TrainState(
        model, weighting, opt, EarlyStopping(cfg.early_stopping_patience), DiagnosticLog(folder, [n for n, _ in params])
    )
    saved = session.restore_state(map_location=device)
    if saved is not None:
        state.load_state_dict(saved)
        state.diag.log(f"resumed after epoch {state.epoch}")
    else:
        for name in state.diag.columns:  # a fresh start: no stale files from an earlier attempt
            (folder / name).unlink(missing_ok=True)
        (folder / "training.log").unlink(missing_ok=True)
    counts = parameter_counts(model)
    write_json(
        {
            **session.context,
            "trainable": "multitask_span",
            "config": cfg.model_dump(),
            "classes": data.classes,
            "data": data.meta,
            "parameters": counts,
            "uncertainty_parameters": len(TASKS),
            "device": str(device),
            "mixed_precision": precision.describe(device, cfg.mixed_precision),
            "environment": environment(),
        },
        folder / "metadata.json",
    )
    if saved is None:
        state.diag.log(
            f"data {cfg.data}: train {len(data.train)}, val {len(data.val)}, test {len(data.test)} "
            f"windows; parameters {counts['total']:,} total, {counts['trainable']:,} trainable; "
            f"device {device}"
        )
    metrics = fit(state, data, cfg, session)
    if not metrics.get("diverged"):
        write_metrics_csv(state.history, folder / "metrics.csv")
    return metrics


def fit(state: TrainState, data: SpanData, cfg: Config, session: Session) -> dict:
    """The epochs after `state.epoch`: train, validate, write diagnostics, keep the best model,
    report (with a checkpoint when due); after the last one the final evaluation. Returns the
    last epoch's metrics; stops at a non-finite loss (`diverged`)."""
    folder = session.artifact_dir
    metrics: dict = state.history[-1] if state.history else {}
    if state.epoch >= cfg.epochs or state.stopper.should_stop:
        return metrics
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        metrics = _epoch(epoch, state, data, cfg)
        if metrics["diverged"]:
            state.history.append(metrics)
            state.diag.log(f"epoch {epoch}: non-finite loss; stopping (last good checkpoint kept)")
            session.report(metrics)
            return metrics
        if state.stopper.update(metrics["val/task_loss"], epoch) or state.best_state is None:
            state.best_state = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
            checkpoints.save(
                {
                    "model": state.best_state,
                    "epoch": epoch,
                    "config": cfg.model_dump(),
                    "classes": data.classes,
                    "feature_mean": data.mean,
                    "feature_std": data.std,
                },
                folder / BEST_MODEL,
            )
        metrics.update({"best/epoch": state.stopper.best_epoch, "best/val_task_loss": state.stopper.best})
        if cfg.checkpoint_epoch_interval and (epoch % cfg.checkpoint_epoch_interval == 0 or epoch == cfg.epochs):
            checkpoints.save(
                {"model": state.model.state_dict(), "epoch": epoch, "config": cfg.model_dump()},
                folder / f"checkpoint_epoch_{epoch}.pt",
            )
        state.history.append(metrics)
        state.epoch = epoch
        last = epoch == cfg.epochs or state.stopper.should_stop
        if last:
            metrics.update(_finish(state, data, cfg, folder))
        if session.checkpoint_due(epoch, metrics) or last:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoints.save(state.state_dict(cfg), Path(tmp) / checkpoints.STATE_FILE)
                write_metrics_csv(state.history, folder / "metrics.csv")
                session.report(metrics, checkpoint_dir=tmp)
        else:
            session.report(metrics)
        if last:
            break
    return metrics


def _epoch(epoch: int, state: TrainState, data: SpanData, cfg: Config) -> dict:
    """Train one epoch, validate, write its diagnostics; the epoch's metrics."""
    t0 = time.perf_counter()
    # Epoch 1 too: a baseline row, and a short run has the file.
    passed = _train_pass(state, data.train, cfg, want_grads=epoch % cfg.gradient_stats_interval == 0 or epoch == 1)
    val = evaluate(state.model, state.weighting, data.val, cfg)
    train_components, val_components = passed.components, val["losses"].tolist()
    train_loss, val_loss = passed.objective, float(val["objective"])
    at = span_metrics.at_threshold(val["prob"], data.val.hard, cfg.threshold)
    epoch_time = time.perf_counter() - t0
    d0, s0 = time.perf_counter(), state.diag.seconds
    val_stats = span_metrics.probability_stats(val["prob"], data.val.hard)
    sigmas, shares = state.weighting.sigmas().tolist(), state.weighting.shares().tolist()
    write_epoch(
        state.diag,
        epoch,
        {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "train_components": train_components,
            "val_components": val_components,
            "at": at,
            "epoch_time": epoch_time,
            "sigmas": sigmas,
            "shares": shares,
            "val_stats": val_stats,
            "train_stats": span_metrics.probability_stats(passed.prob, data.train.hard),
            "grad_row": passed.grad_row,
        },
        data.raw_by_phase,
    )
    state.diag.log(
        f"Epoch {epoch:3d}/{cfg.epochs}: train_loss={train_loss:.4f}, val_loss={val_loss:.4f}, "
        f"span_F1={at['span_f1']:.3f}, separation={val_stats['separation']:.3f}, "
        f"ptr_MAE={val['pointer_mae']:.3f}, acc={val['accuracy']:.3f}, time={epoch_time:.2f}s"
    )
    diagnostics_time = time.perf_counter() - d0
    metrics = {
        "epoch": epoch,
        "train/loss": train_loss,
        "val/loss": val_loss,
        "val/task_loss": float(sum(val_components)),
        **{f"val/{k}": v for k, v in at.items()},
        "val/separation": val_stats["separation"],
        "val/pointer_mae": val["pointer_mae"],
        "val/accuracy": val["accuracy"],
        **{f"val/loss_{t}": v for t, v in zip(TASKS, val_components)},
        **{f"sigma/{t}": s for t, s in zip(TASKS, sigmas)},
        **{f"weight/{t}": w for t, w in zip(TASKS, shares)},
        "epoch_time_s": epoch_time,
        "diagnostics_time_s": diagnostics_time,
        "diagnostics_io_s": state.diag.seconds - s0,
        "samples_per_s": len(data.train) / passed.seconds,
        "diverged": not all(math.isfinite(v) for v in [train_loss, val_loss, *train_components, *val_components]),
    }
    if val["decoded"] is not None:
        metrics.update({f"val/crf_{k}": v for k, v in span_metrics.decoded(val["decoded"], data.val.hard).items()})
    return metrics


def _train_pass(state: TrainState, train_set: Batch, cfg: Config, want_grads: bool) -> TrainPass:
    """One pass over the shuffled training windows; losses summed on the device (the pass has
    one host synchronisation, at its end)."""
    t0 = time.perf_counter()
    device, n = train_set.x.device, len(train_set)
    state.model.train()
    perm = torch.randperm(n, device=device)
    comp_sum = torch.zeros(len(TASKS), device=device)
    objective_sum = torch.zeros((), device=device)
    train_prob = torch.empty_like(train_set.hard)
    norms = None
    params = [p for p in state.model.parameters() if p.requires_grad]
    for i in range(0, n, cfg.batch_size):
        idx = perm[i : i + cfg.batch_size]
        last = i + cfg.batch_size >= n
        losses, objective, span_logit, grads = _train_step(state, train_set.take(idx), cfg, params, want_grads and last)
        comp_sum += losses * len(idx)
        objective_sum += objective * len(idx)
        train_prob[idx] = torch.sigmoid(span_logit)
        norms = grads if grads is not None else norms
    components, objective = (comp_sum / n).tolist(), float(objective_sum / n)
    grad_row = None if norms is None else [float(torch.linalg.vector_norm(norms)), *norms.tolist()]
    return TrainPass(components, objective, train_prob, grad_row, time.perf_counter() - t0)


def _train_step(state: TrainState, b: Batch, cfg: Config, params: list, want_grads: bool):
    """One optimisation step on batch `b`, without host synchronisation: (task losses, weighted
    objective, span logits, the norms of the gradients of `params` (the model's trainable
    parameters) before clipping when `want_grads`), all detached tensors on the device."""
    with precision.autocast(b.x.device, cfg.mixed_precision):
        out = state.model(b.x)
        losses = task_losses(state.model, out, b, cfg)
        objective = state.weighting(losses)
    state.opt.zero_grad(set_to_none=True)
    objective.backward()
    norms = None
    if want_grads:
        norms = torch.stack([p.grad.norm() if p.grad is not None else torch.zeros((), device=p.device) for p in params])
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
    state.opt.step()
    return losses.detach(), objective.detach(), out["span"].detach(), norms


def _finish(state: TrainState, data: SpanData, cfg: Config, folder: Path) -> dict:
    """Threshold sweep, evaluation, ensemble, plots and criteria (after the last epoch), with the
    best epoch's weights; the model keeps its last weights afterwards."""
    model, diag = state.model, state.diag
    current = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state.best_state)
    out, val_prob = final_scores(model, state.weighting, data, cfg, folder)
    if cfg.ensemble_last_k:
        out.update(ensemble(model, data.val, data.test, cfg, folder))
    figures = plot_all(folder, diag, val_prob, data.val.hard) if cfg.plots else []
    lines = write_summary(diag, state.stopper.best_epoch, out, figures, len(data.test))
    diag.log("final: " + ", ".join(f"{k}={v:.4f}" for k, v in out.items()))
    for line in lines:
        diag.log(
            f"criterion {line['level']}: {line['metric']} {line['condition']}: "
            f"{'PASS' if line['passed'] else 'FAIL'} ({line['value']})"
        )
    model.load_state_dict(current)
    return out
