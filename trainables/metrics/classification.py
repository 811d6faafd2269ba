"""Classification metrics from integer labels and predictions (numpy, no sklearn needed).

- accuracy: share of correct predictions;
- per-class accuracy (= recall of that class) and balanced accuracy (their mean);
- macro-F1: mean over classes of 2PR / (P + R), a class with no predictions and no
  examples counting as 0 (sklearn's `zero_division=0`);
- class_collapse: True when some class present in the labels is never predicted right.
"""

from __future__ import annotations

import numpy as np


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_report(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    n = len(classes)
    cm = confusion(np.asarray(y), np.asarray(pred), n)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(n), where=present)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n), where=denom > 0)
    out = {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "class_collapse": bool((recall[present] == 0).any()),
    }
    for i, name in enumerate(classes):
        out[f"acc/{name}"] = float(recall[i]) if present[i] else float("nan")
    return out
