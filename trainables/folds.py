"""Cross-validation folds for windows, with no leakage between overlapping windows.

- Windows with a `start` bar index (cut from one series, possibly overlapping): *blocked,
  purged* K-fold. Windows sorted by start are cut into K contiguous blocks; each block is a
  validation fold and the training set is every other window that shares no bar with it.
  Overlapping windows therefore never straddle train and validation. Classes are as balanced
  as time allows (not stratified).
- Independent windows (no `start`): stratified K-fold: each class's windows are shuffled
  (seeded) and dealt round-robin to the folds, so every fold has the class mix of the whole.
"""

from __future__ import annotations

import numpy as np


def make_folds(labels: np.ndarray, k: int, seed: int, starts: np.ndarray | None = None,
               length: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(labels)
    if k < 2 or k > n:
        raise ValueError(f"folds must be between 2 and the number of windows ({n}), got {k}")
    if starts is not None:
        if length is None:
            raise ValueError("blocked folds need the window length")
        order = np.argsort(starts, kind="stable")
        out = []
        for block in np.array_split(order, k):
            lo, hi = starts[block].min(), starts[block].max() + length  # bars [lo, hi) are validation
            others = np.setdiff1d(order, block)
            keep = (starts[others] + length <= lo) | (starts[others] >= hi)
            out.append((np.sort(others[keep]), np.sort(block)))
        return out
    rng = np.random.default_rng(seed)
    fold_of = np.empty(n, dtype=np.int64)
    offset = 0
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        fold_of[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)  # continue dealing where the last class stopped: folds stay even in size
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]
