"""Multi-task span model of labeled OHLC windows (the seeds' "Jade" baseline), with the seed's
full diagnostics.

Input: the 12 per-bar features of `trainables/span_features.py`, z-scored with the training
windows' statistics. Encoder: an LSTM (bidirectional by default; hidden 96 = ~86k parameters).
Four heads:

- `type`: the window's class from mean- and max-pooled encoder states (cross-entropy);
- `ptr`: expansion start and end as fractions of the window, t / (T - 1). Each pointer is a
  soft-argmax over per-bar logits (the expected bar position under a softmax), not a
  regression from a pooled vector: the per-bar states already know where the expansion is,
  and this keeps the pointer differentiable and sharp (Huber, delta = 0.08);
- `span`: a per-bar logit z_t, p_t = sigmoid(z_t), trained with the *soft span loss*
  BCE(p, m) + (1 - soft Dice(p, m)) against the soft target m (`trainables/span_metrics.py`;
  Dice counters the imbalance: a span covers ~20% of the bars). With `use_crf: true` a
  linear-chain CRF over in/out tags (emissions (-z/2, z/2), `torchcrf.CRF`) adds its negative
  log-likelihood per bar to the span loss, and spans are Viterbi-decoded;
- `countdown`: per bar (onset - t) / countdown_scale, negative after onset (Huber, delta = 1).

The four losses are combined by learned uncertainty weighting or fixed weights
(`trainables/uncertainty.py`: type and span count as classification, ptr and countdown as
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

Files of a trial: see `trainables/span_diagnostics.py`, plus metadata.json, best_model.pt,
checkpoint_epoch_N.pt, metrics.csv (every reported metric per epoch), threshold_sweep.csv.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trainables.runtime import checkpoints
from trainables.data import span_features
from trainables.metrics import span as span_metrics
from trainables.configs.multitask_span import INPUT_FIELDS, TASKS, Config, check_inputs, load_data, split  # noqa: F401
from trainables.data.folds import split_note
from trainables.runtime.early_stopping import EarlyStopping
from trainables.runtime.metadata import environment, parameter_counts
from trainables.runtime.reproducibility import rng_state, set_rng_state, start_trial
from trainables.runtime.session import Session, write_json, write_metrics_csv
from trainables.metrics.span_diagnostics import DIAGNOSTICS_FILE, DiagnosticLog, criteria, plot_all
from trainables.losses.uncertainty import TaskWeighting

TASK_KINDS = {"type": "classification", "ptr": "regression", "span": "classification", "countdown": "regression"}
BEST_MODEL = "best_model.pt"


class LockedDropout(nn.Module):
    """Dropout with one mask per window and channel, shared over time (variational dropout,
    Gal & Ghahramani 2016; AWD-LSTM's "locked" dropout): the usual regulariser of recurrent
    states, and ~100x fewer random numbers than element-wise dropout, whose mask generation
    cost 15% of a CPU training step here."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return h
        keep = torch.empty(h.shape[0], 1, h.shape[2], device=h.device, dtype=h.dtype).bernoulli_(1 - self.p)
        return h * keep / (1 - self.p)


class SpanModel(nn.Module):
    def __init__(self, n_features: int, n_classes: int, cfg: Config):
        super().__init__()
        self.lstm = nn.LSTM(n_features, cfg.hidden_size, cfg.num_layers, batch_first=True,
                            bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        width = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        self.drop = LockedDropout(cfg.dropout)
        self.bar_head = nn.Linear(width, 4)          # span logit, countdown, start logit, end logit
        self.type_head = nn.Linear(2 * width, n_classes)
        self.crf = None
        if cfg.use_crf:
            from torchcrf import CRF

            self.crf = CRF(2, batch_first=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.drop(self.lstm(x)[0])
        span, countdown, start, end = self.bar_head(h).unbind(-1)
        pos = torch.linspace(0, 1, x.shape[1], device=x.device)
        ptr = torch.stack([(start.softmax(-1) * pos).sum(-1), (end.softmax(-1) * pos).sum(-1)], dim=-1)
        pooled = torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=-1)
        return {"type": self.type_head(pooled), "ptr": ptr, "span": span, "countdown": countdown}

    @staticmethod
    def emissions(span_logit: torch.Tensor) -> torch.Tensor:
        return torch.stack([-0.5 * span_logit, 0.5 * span_logit], dim=-1)

    def decode(self, span_logit: torch.Tensor) -> torch.Tensor:
        """Viterbi paths (N, T) of in-span tags (CRF models only)."""
        em = self.emissions(span_logit)
        paths = self.crf.decode(em, mask=torch.ones(em.shape[:2], dtype=torch.bool, device=em.device))
        return torch.tensor(paths, device=span_logit.device, dtype=torch.bool)


class Batch:
    """Inputs and every target of a set of windows, on the device."""

    def __init__(self, x, y, starts, ends, cfg: Config):
        t = x.shape[1]
        self.x, self.y = x, y
        self.hard, self.soft = span_metrics.span_masks(starts, ends, t, cfg.span_edge_softness)
        self.ptr = torch.stack([starts, ends], dim=-1).float() / (t - 1)
        bars = torch.arange(t, device=x.device, dtype=torch.float32)
        self.countdown = (starts.float()[:, None] - bars[None]) / cfg.countdown_scale

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: torch.Tensor) -> "Batch":
        sub = object.__new__(Batch)
        for name, value in vars(self).items():
            setattr(sub, name, value[idx])
        return sub


def task_losses(model: SpanModel, out: dict, b: Batch, cfg: Config) -> torch.Tensor:
    """(4,) unweighted losses in TASKS order: type, ptr, span, countdown."""
    loss_type = F.cross_entropy(out["type"], b.y)
    loss_ptr = F.huber_loss(out["ptr"], b.ptr, delta=cfg.pointer_delta)
    p = torch.sigmoid(out["span"])
    dice = (2 * (p * b.soft).sum(-1) + 1e-6) / (p.sum(-1) + b.soft.sum(-1) + 1e-6)
    loss_span = F.binary_cross_entropy_with_logits(out["span"], b.soft) + (1 - dice).mean()
    if model.crf is not None:
        tags = b.hard.long()
        nll = -model.crf(model.emissions(out["span"]), tags, mask=torch.ones_like(tags, dtype=torch.bool),
                         reduction="mean")
        loss_span = loss_span + nll / b.x.shape[1]
    loss_countdown = F.huber_loss(out["countdown"], b.countdown, delta=cfg.countdown_delta)
    return torch.stack([loss_type, loss_ptr, loss_span, loss_countdown])


def build(cfg: Config, n_classes: int, device: torch.device):
    model = SpanModel(len(span_features.FEATURES), n_classes, cfg).to(device)
    weighting = TaskWeighting(TASK_KINDS, cfg.loss_weighting, cfg.loss_weights).to(device)
    opt = torch.optim.AdamW([{"params": model.parameters(), "weight_decay": cfg.weight_decay},
                             {"params": [weighting.log_var], "weight_decay": 0.0}], lr=cfg.lr,
                            foreach=True)
    return model, weighting, opt


@torch.no_grad()
def evaluate(model: SpanModel, weighting: TaskWeighting, b: Batch, cfg: Config) -> dict:
    model.eval()
    out = model(b.x)
    losses = task_losses(model, out, b, cfg)
    model.train()
    prob = torch.sigmoid(out["span"])
    return {"losses": losses, "objective": weighting(losses), "prob": prob, "out": out,
            "pointer_mae": float((out["ptr"] - b.ptr).abs().mean()),
            "accuracy": float((out["type"].argmax(-1) == b.y).float().mean()),
            "decoded": model.decode(out["span"]) if model.crf is not None else None}


def train(config: dict, session: Session | None = None) -> dict:
    """Run one multi-task span trial; returns the last reported metrics."""
    cfg = Config.model_validate(config)
    session, device = start_trial(cfg, session)
    folder = session.artifact_dir
    windows, classes, y, starts, ends = load_data(cfg)
    line, (train_idx, val_idx, test_idx) = split(windows, cfg)
    raw = span_features.compute(torch.as_tensor(windows.ohlc, device=device))
    mean, std = span_features.standardiser(raw[torch.as_tensor(train_idx, device=device)])
    feats = (raw - mean) / std

    def subset(idx):
        i = torch.as_tensor(idx, device=device)
        return Batch(feats[i], torch.as_tensor(y[idx], device=device), torch.as_tensor(starts[idx], device=device),
                     torch.as_tensor(ends[idx], device=device), cfg)

    train_set, val_set, test_set = subset(train_idx), subset(val_idx), subset(test_idx)
    raw_by_phase = {"train": raw[torch.as_tensor(train_idx, device=device)],
                    "val": raw[torch.as_tensor(val_idx, device=device)]}

    model, weighting, opt = build(cfg, len(classes), device)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    diag = DiagnosticLog(folder, [n for n, _ in params])
    stopper = EarlyStopping(cfg.early_stopping_patience)
    start_epoch, history, best_state = 0, [], None
    state = session.restore_state(map_location=device)
    if state is not None:
        model.load_state_dict(state["model"])
        weighting.load_state_dict(state["weighting"])
        opt.load_state_dict(state["optimizer"])
        stopper = EarlyStopping.from_state(state["early_stopping"])
        start_epoch, history, best_state = state["epoch"], state["history"], state["best_state"]
        diag.load_state_dict(state["diagnostics"])
        set_rng_state(state["rng"])
        diag.log(f"resumed after epoch {start_epoch}")
    else:
        for name in diag.columns:  # a fresh start: no stale files from an earlier attempt
            (folder / name).unlink(missing_ok=True)
        (folder / "training.log").unlink(missing_ok=True)
    counts = parameter_counts(model)
    write_json({**session.context, "trainable": "multitask_span", "config": cfg.model_dump(), "classes": classes,
                "data": {"source": cfg.data, "windows": len(windows), "train": len(train_idx), "val": len(val_idx),
                         "test": len(test_idx), "window_length": cfg.window_length,
                         "split": split_note(line, len(windows), (train_idx, val_idx, test_idx), ("train", "val", "test")),
                         "overlap": line.describe(cfg.window_length), "features": list(span_features.FEATURES),
                         "class_counts": {c: int((y == i).sum()) for i, c in enumerate(classes)}},
                "parameters": counts, "uncertainty_parameters": len(TASKS), "device": str(device),
                "environment": environment()}, folder / "metadata.json")
    if state is None:
        diag.log(f"data {cfg.data}: train {len(train_idx)}, val {len(val_idx)}, test {len(test_idx)} windows; "
                 f"parameters {counts['total']:,} total, {counts['trainable']:,} trainable; device {device}")

    metrics: dict = history[-1] if history else {}
    n = len(train_set)
    if start_epoch < cfg.epochs and not stopper.should_stop:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            metrics = _epoch(epoch, model, weighting, opt, params, train_set, val_set, raw_by_phase, diag, cfg, n)
            if metrics["diverged"]:
                history.append(metrics)
                diag.log(f"epoch {epoch}: non-finite loss; stopping (last good checkpoint kept)")
                session.report(metrics)
                return metrics
            if stopper.update(metrics["val/task_loss"], epoch) or best_state is None:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                checkpoints.save({"model": best_state, "epoch": epoch, "config": cfg.model_dump(), "classes": classes,
                                  "feature_mean": mean, "feature_std": std}, folder / BEST_MODEL)
            metrics.update({"best/epoch": stopper.best_epoch, "best/val_task_loss": stopper.best})
            if cfg.checkpoint_epoch_interval and (epoch % cfg.checkpoint_epoch_interval == 0 or epoch == cfg.epochs):
                checkpoints.save({"model": model.state_dict(), "epoch": epoch, "config": cfg.model_dump()},
                                 folder / f"checkpoint_epoch_{epoch}.pt")
            history.append(metrics)
            last = epoch == cfg.epochs or stopper.should_stop
            if last:
                metrics.update(_finish(model, best_state, stopper.best_epoch, val_set, test_set, diag, cfg, folder, weighting))
            if session.checkpoint_due(epoch, metrics) or last:
                with tempfile.TemporaryDirectory() as tmp:
                    checkpoints.save({"model": model.state_dict(), "weighting": weighting.state_dict(),
                                      "optimizer": opt.state_dict(), "early_stopping": stopper.state_dict(),
                                      "epoch": epoch, "history": history, "best_state": best_state,
                                      "diagnostics": diag.state_dict(), "rng": rng_state(),
                                      "config": cfg.model_dump()}, Path(tmp) / checkpoints.STATE_FILE)
                    write_metrics_csv(history, folder / "metrics.csv")
                    session.report(metrics, checkpoint_dir=tmp)
            else:
                session.report(metrics)
            if last:
                break
    write_metrics_csv(history, folder / "metrics.csv")
    return metrics


def _epoch(epoch, model, weighting, opt, params, train_set: Batch, val_set: Batch, raw_by_phase, diag: DiagnosticLog,
           cfg: Config, n: int) -> dict:
    t0 = time.perf_counter()
    model.train()
    perm = torch.randperm(n, device=train_set.x.device)
    comp_sum = torch.zeros(len(TASKS), device=train_set.x.device)
    objective_sum = torch.zeros((), device=train_set.x.device)
    train_prob = torch.empty_like(train_set.hard)
    grad_row = None
    grad_params = [p for _, p in params]
    # Epoch 1 too: a baseline row, and a short run has the file.
    want_grads = epoch % cfg.gradient_stats_interval == 0 or epoch == 1
    batches = range(0, n, cfg.batch_size)
    for i in batches:
        idx = perm[i:i + cfg.batch_size]
        b = train_set.take(idx)
        out = model(b.x)
        losses = task_losses(model, out, b, cfg)
        objective = weighting(losses)
        opt.zero_grad(set_to_none=True)
        objective.backward()
        if want_grads and i + cfg.batch_size >= n:  # the epoch's last batch, before clipping
            norms = torch.stack([p.grad.norm() if p.grad is not None else torch.zeros((), device=p.device)
                                 for _, p in params])
            grad_row = [float(torch.linalg.vector_norm(norms)), *norms.tolist()]
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(grad_params, cfg.grad_clip, foreach=True)
        opt.step()
        comp_sum += losses.detach() * len(idx)
        objective_sum += objective.detach() * len(idx)
        train_prob[idx] = torch.sigmoid(out["span"].detach())
    train_components = (comp_sum / n).tolist()
    train_loss = float(objective_sum / n)
    train_time = time.perf_counter() - t0
    val = evaluate(model, weighting, val_set, cfg)
    val_components = val["losses"].tolist()
    val_loss = float(val["objective"])
    diverged = not all(math.isfinite(v) for v in [train_loss, val_loss, *train_components, *val_components])
    at = span_metrics.at_threshold(val["prob"], val_set.hard, cfg.threshold)
    epoch_time = time.perf_counter() - t0

    d0, s0 = time.perf_counter(), diag.seconds
    val_stats = span_metrics.probability_stats(val["prob"], val_set.hard)
    train_stats = span_metrics.probability_stats(train_prob, train_set.hard)
    sigmas, shares = weighting.sigmas().tolist(), weighting.shares().tolist()
    diag.add("epoch_metrics.csv", [{"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, **at,
                                    "epoch_time": epoch_time}])
    diag.add("loss_components.csv", [
        {"epoch": epoch, "phase": phase, **{f"loss_{t}": v for t, v in zip(TASKS, comps)}, "total_loss": total}
        for phase, comps, total in (("train", train_components, train_loss), ("val", val_components, val_loss))])
    diag.add("uncertainty_params.csv", [{"epoch": epoch, **{f"sigma_{t}": s for t, s in zip(TASKS, sigmas)},
                                         **{f"weight_{t}": w for t, w in zip(TASKS, shares)}}])
    diag.add("probability_stats.csv", [{"epoch": epoch, "phase": "train", **train_stats},
                                       {"epoch": epoch, "phase": "val", **val_stats}])
    if epoch == 1:   # the inputs are fixed: their statistics are the same at every epoch
        diag.add("feature_stats.csv", _feature_rows(epoch, raw_by_phase))
    if grad_row is not None:
        diag.add("gradient_stats.csv", [dict(zip(diag.columns["gradient_stats.csv"], [epoch, *grad_row]))])
    diag.log(f"Epoch {epoch:3d}/{cfg.epochs}: train_loss={train_loss:.4f}, val_loss={val_loss:.4f}, "
             f"span_F1={at['span_f1']:.3f}, separation={val_stats['separation']:.3f}, "
             f"ptr_MAE={val['pointer_mae']:.3f}, acc={val['accuracy']:.3f}, time={epoch_time:.2f}s")
    diagnostics_time = time.perf_counter() - d0
    metrics = {
        "epoch": epoch, "train/loss": train_loss, "val/loss": val_loss, "val/task_loss": float(sum(val_components)),
        **{f"val/{k}": v for k, v in at.items()}, "val/separation": val_stats["separation"],
        "val/pointer_mae": val["pointer_mae"], "val/accuracy": val["accuracy"],
        **{f"val/loss_{t}": v for t, v in zip(TASKS, val_components)},
        **{f"sigma/{t}": s for t, s in zip(TASKS, sigmas)}, **{f"weight/{t}": w for t, w in zip(TASKS, shares)},
        "epoch_time_s": epoch_time, "diagnostics_time_s": diagnostics_time,
        "diagnostics_io_s": diag.seconds - s0, "samples_per_s": n / train_time, "diverged": diverged,
    }
    if val["decoded"] is not None:
        metrics.update({f"val/crf_{k}": v for k, v in span_metrics.decoded(val["decoded"], val_set.hard).items()})
    return metrics


def _feature_rows(epoch: int, raw_by_phase: dict[str, torch.Tensor]) -> list[dict]:
    rows = []
    for phase, x in raw_by_phase.items():
        flat = x.reshape(-1, x.shape[-1])
        stats = torch.stack([flat.mean(0), flat.std(0), flat.amin(0), flat.amax(0), flat.median(0).values]).T.tolist()
        rows += [{"epoch": epoch, "phase": phase, "feature_name": name, "mean": s[0], "std": s[1], "min": s[2],
                  "max": s[3], "median": s[4]} for name, s in zip(span_features.FEATURES, stats)]
    return rows


def _finish(model: SpanModel, best_state: dict, best_epoch: int | None, val_set: Batch, test_set: Batch, diag: DiagnosticLog, cfg: Config,
            folder: Path, weighting: TaskWeighting) -> dict:
    """Threshold sweep, evaluation, ensemble, plots and criteria (after the last epoch)."""
    current = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    val = evaluate(model, weighting, val_set, cfg)
    sweep = span_metrics.sweep(val["prob"], val_set.hard)
    write_metrics_csv(sweep, folder / "threshold_sweep.csv")
    chosen = span_metrics.best_threshold(sweep)
    stats = span_metrics.probability_stats(val["prob"], val_set.hard)
    out = {"final/threshold": chosen["threshold"], "final/val_span_f1": chosen["span_f1"],
           "final/val_span_precision": chosen["span_precision"], "final/val_span_recall": chosen["span_recall"],
           "final/val_separation": stats["separation"], "final/val_pointer_mae": val["pointer_mae"],
           "final/val_accuracy": val["accuracy"]}
    if val["decoded"] is not None:
        out.update({f"final/val_crf_{k}": v for k, v in span_metrics.decoded(val["decoded"], val_set.hard).items()})
    if len(test_set):
        test = evaluate(model, weighting, test_set, cfg)
        out.update({f"final/test_{k}": v for k, v in
                    span_metrics.at_threshold(test["prob"], test_set.hard, chosen["threshold"]).items()})
        out.update({"final/test_separation": span_metrics.probability_stats(test["prob"], test_set.hard)["separation"],
                    "final/test_pointer_mae": test["pointer_mae"], "final/test_accuracy": test["accuracy"]})
        if test["decoded"] is not None:
            out.update({f"final/test_crf_{k}": v for k, v in span_metrics.decoded(test["decoded"], test_set.hard).items()})
    if cfg.ensemble_last_k:
        out.update(_ensemble(model, val_set, test_set, cfg, folder))
    figures = plot_all(folder, diag, val["prob"], val_set.hard) if cfg.plots else []
    em = diag.rows["epoch_metrics.csv"]
    task_loss = [sum(r[f"loss_{t}"] for t in TASKS) for r in diag.rows["loss_components.csv"] if r["phase"] == "val"]
    reduction = (task_loss[0] - min(task_loss)) / task_loss[0] if task_loss and task_loss[0] > 0 else None
    # The criteria judge the scores of windows that chose nothing (the test block) when there is
    # one; validation chose the threshold and the best epoch, so its scores are optimistic.
    scored = "test" if len(test_set) else "val"
    lines = criteria({"val_loss_reduction": reduction, "span_f1": out[f"final/{scored}_span_f1"],
                      "separation": out[f"final/{scored}_separation"]})
    write_json({"trainable": "multitask_span", "epochs": len(em), "best_epoch": best_epoch,
                "val_task_loss_first": task_loss[0] if task_loss else None,
                "val_task_loss_best": min(task_loss) if task_loss else None, "val_loss_reduction": reduction,
                "final": out, "criteria": lines, "figures": figures,
                "scored_on": scored,
                "notes": "val_loss_reduction uses the unweighted sum of validation task losses (first epoch vs "
                         "best). The threshold and the best epoch were chosen on the validation windows; "
                         + (f"span F1 and separation are of the {len(test_set)} test windows, at that threshold."
                            if scored == "test" else "there is no test block (test_fraction 0, or too few windows), "
                            "so span F1 and separation are of the validation windows themselves: optimistic.")},
               folder / DIAGNOSTICS_FILE)
    diag.log("final: " + ", ".join(f"{k}={v:.4f}" for k, v in out.items()))
    for line in lines:
        diag.log(f"criterion {line['level']}: {line['metric']} {line['condition']}: "
                 f"{'PASS' if line['passed'] else 'FAIL'} ({line['value']})")
    model.load_state_dict(current)
    return out


def _ensemble(model: SpanModel, val_set: Batch, test_set: Batch, cfg: Config, folder: Path) -> dict:
    """Average the soft span predictions of the last k periodic checkpoints."""
    found = sorted(((int(m.group(1)), p) for p in folder.glob("checkpoint_epoch_*.pt")
                    if (m := re.fullmatch(r"checkpoint_epoch_(\d+)\.pt", p.name))))
    chosen = [p for _, p in found[-cfg.ensemble_last_k:]]
    if not chosen:
        return {}
    probs_val, probs_test = [], []
    model.eval()
    with torch.no_grad():
        for path in chosen:
            model.load_state_dict(checkpoints.load(path, map_location=val_set.x.device)["model"])
            probs_val.append(torch.sigmoid(model(val_set.x)["span"]))
            if len(test_set):
                probs_test.append(torch.sigmoid(model(test_set.x)["span"]))
    model.train()
    p_val = torch.stack(probs_val).mean(0)
    best = span_metrics.best_threshold(span_metrics.sweep(p_val, val_set.hard))
    out = {"ensemble/members": len(chosen), "ensemble/threshold": best["threshold"],
           "ensemble/val_span_f1": best["span_f1"],
           "ensemble/val_separation": span_metrics.probability_stats(p_val, val_set.hard)["separation"]}
    if probs_test:
        p_test = torch.stack(probs_test).mean(0)
        out["ensemble/test_span_f1"] = span_metrics.at_threshold(p_test, test_set.hard, best["threshold"])["span_f1"]
        out["ensemble/test_separation"] = span_metrics.probability_stats(p_test, test_set.hard)["separation"]
    return out
