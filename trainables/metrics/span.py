"""Span metrics, vectorised over windows, bars and thresholds.

- Span precision / recall / F1 are *per bar*, micro-averaged over all bars of all windows:
  predicted in-span = prob >= threshold, true in-span = the hard mask.
- Separation = mean probability on in-span bars - mean probability on out-of-span bars.
"""

from __future__ import annotations

import torch

SWEEP = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))  # 0.10, 0.15, ..., 0.90


def counts(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """pred (..., N, T) bool, truth (N, T) -> (..., 3) true positives, false positives, false negatives."""
    truth = truth.bool()
    tp = (pred & truth).sum(dim=(-2, -1))
    fp = (pred & ~truth).sum(dim=(-2, -1))
    fn = (~pred & truth).sum(dim=(-2, -1))
    return torch.stack([tp, fp, fn], dim=-1).double()


def prf(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Counts (..., 3) -> precision, recall, F1 (0 where undefined)."""
    tp, fp, fn = c.unbind(-1)
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), torch.zeros_like(tp)
    )
    return precision, recall, f1


def at_threshold(prob: torch.Tensor, truth: torch.Tensor, threshold: float) -> dict[str, float]:
    p, r, f = prf(counts(prob >= threshold, truth))
    return {"span_precision": float(p), "span_recall": float(r), "span_f1": float(f)}


def decoded(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Metrics of hard predicted masks (e.g. CRF Viterbi paths)."""
    p, r, f = prf(counts(pred.bool(), truth))
    return {"span_precision": float(p), "span_recall": float(r), "span_f1": float(f)}


def sweep(prob: torch.Tensor, truth: torch.Tensor, thresholds=SWEEP) -> list[dict[str, float]]:
    """Precision/recall/F1 at every threshold, in one vectorised pass."""
    thr = torch.tensor(thresholds, device=prob.device, dtype=prob.dtype)
    p, r, f = prf(counts(prob[None] >= thr[:, None, None], truth))
    return [
        {"threshold": float(t), "span_precision": float(a), "span_recall": float(b), "span_f1": float(c)}
        for t, a, b, c in zip(thresholds, p.tolist(), r.tolist(), f.tolist())
    ]


def best_threshold(rows: list[dict[str, float]]) -> dict[str, float]:
    """The sweep row with the highest F1 (the lower threshold on ties)."""
    return max(rows, key=lambda row: (row["span_f1"], -row["threshold"]))


def probability_stats(prob: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean/std of span probabilities on in-span and out-of-span bars, and their separation."""
    inside = truth.bool()
    vin, vout = prob[inside], prob[~inside]
    stats = (
        torch.stack([vin.mean(), vin.std(), vout.mean(), vout.std()]).tolist()
        if vin.numel() > 1 and vout.numel() > 1
        else [float("nan")] * 4
    )
    return {
        "in_span_mean": stats[0],
        "in_span_std": stats[1],
        "out_span_mean": stats[2],
        "out_span_std": stats[3],
        "separation": stats[0] - stats[2],
    }


def spans_from_mask(pred: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Hard masks (N, T) -> per window the list of (start, end) runs of in-span bars."""
    padded = torch.nn.functional.pad(pred.int(), (1, 1))
    diff = padded[:, 1:] - padded[:, :-1]
    out: list[list[tuple[int, int]]] = [[] for _ in range(len(pred))]
    for (w, s), (_, e) in zip((diff == 1).nonzero().tolist(), (diff == -1).nonzero().tolist()):
        out[w].append((s, e - 1))
    return out
