"""Scores of a `multitask_span` model: one forward pass over a block (losses, span
probabilities, pointer error, accuracy, CRF decoding); after training, the threshold chosen on
validation (`threshold_sweep.csv`) and applied to the test block; the ensemble of the last k
periodic checkpoints, scored the same way."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from trainables.configs.multitask_span import Config
from trainables.data.span_targets import Batch
from trainables.data.span_windows import SpanData
from trainables.losses.span import task_losses
from trainables.losses.uncertainty import TaskWeighting
from trainables.metrics import span as span_metrics
from trainables.models.span_model import SpanModel
from trainables.runtime import checkpoints
from trainables.runtime.session import write_metrics_csv


@torch.no_grad()
def evaluate(model: SpanModel, weighting: TaskWeighting, b: Batch, cfg: Config) -> dict:
    """One forward pass over the windows of `b` in eval mode: task losses, weighted objective,
    span probabilities, pointer MAE, accuracy and (with a CRF) the decoded spans."""
    model.eval()
    out = model(b.x)
    losses = task_losses(model, out, b, cfg)
    model.train()
    prob = torch.sigmoid(out["span"])
    return {
        "losses": losses,
        "objective": weighting(losses),
        "prob": prob,
        "out": out,
        "pointer_mae": float((out["ptr"] - b.ptr).abs().mean()),
        "accuracy": float((out["type"].argmax(-1) == b.y).float().mean()),
        "decoded": model.decode(out["span"]) if model.crf is not None else None,
    }


def final_scores(
    model: SpanModel, weighting: TaskWeighting, data: SpanData, cfg: Config, folder: Path
) -> tuple[dict, torch.Tensor]:
    """The threshold chosen on validation (sweep in threshold_sweep.csv), the validation scores
    at it, and the test block's at the same threshold; (scores, validation probabilities)."""
    val_set, test_set = data.val, data.test
    val = evaluate(model, weighting, val_set, cfg)
    sweep = span_metrics.sweep(val["prob"], val_set.hard)
    write_metrics_csv(sweep, folder / "threshold_sweep.csv")
    chosen = span_metrics.best_threshold(sweep)
    stats = span_metrics.probability_stats(val["prob"], val_set.hard)
    out = {
        "final/threshold": chosen["threshold"],
        "final/val_span_f1": chosen["span_f1"],
        "final/val_span_precision": chosen["span_precision"],
        "final/val_span_recall": chosen["span_recall"],
        "final/val_separation": stats["separation"],
        "final/val_pointer_mae": val["pointer_mae"],
        "final/val_accuracy": val["accuracy"],
    }
    if val["decoded"] is not None:
        out.update({f"final/val_crf_{k}": v for k, v in span_metrics.decoded(val["decoded"], val_set.hard).items()})
    if not len(test_set):
        return out, val["prob"]
    test = evaluate(model, weighting, test_set, cfg)
    at = span_metrics.at_threshold(test["prob"], test_set.hard, chosen["threshold"])
    out.update({f"final/test_{k}": v for k, v in at.items()})
    out.update(
        {
            "final/test_separation": span_metrics.probability_stats(test["prob"], test_set.hard)["separation"],
            "final/test_pointer_mae": test["pointer_mae"],
            "final/test_accuracy": test["accuracy"],
        }
    )
    if test["decoded"] is not None:
        out.update({f"final/test_crf_{k}": v for k, v in span_metrics.decoded(test["decoded"], test_set.hard).items()})
    return out, val["prob"]


def ensemble(model: SpanModel, val_set: Batch, test_set: Batch, cfg: Config, folder: Path) -> dict:
    """Average the soft span predictions of the last k periodic checkpoints."""
    found = sorted(
        (int(m.group(1)), p)
        for p in folder.glob("checkpoint_epoch_*.pt")
        if (m := re.fullmatch(r"checkpoint_epoch_(\d+)\.pt", p.name))
    )
    chosen = [p for _, p in found[-cfg.ensemble_last_k :]]
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
    out = {
        "ensemble/members": len(chosen),
        "ensemble/threshold": best["threshold"],
        "ensemble/val_span_f1": best["span_f1"],
        "ensemble/val_separation": span_metrics.probability_stats(p_val, val_set.hard)["separation"],
    }
    if probs_test:
        p_test = torch.stack(probs_test).mean(0)
        out["ensemble/test_span_f1"] = span_metrics.at_threshold(p_test, test_set.hard, best["threshold"])["span_f1"]
        out["ensemble/test_separation"] = span_metrics.probability_stats(p_test, test_set.hard)["separation"]
    return out
