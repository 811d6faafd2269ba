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


def time_split(n: int, fractions: tuple[float, ...], starts: np.ndarray | None = None,
               length: int | None = None) -> list[np.ndarray]:
    """Split n windows into consecutive blocks: train first, then one block per fraction (e.g.
    validation, test), each the last windows by `start` (file order without `start`). A window
    that shares a bar with any later block is purged, so overlapping windows never straddle
    two blocks. Returns [train, *blocks] as sorted index arrays."""
    order = np.argsort(starts, kind="stable") if starts is not None else np.arange(n)
    sizes = [int(np.ceil(n * f)) if f > 0 else 0 for f in fractions]
    if n - sum(sizes) < 1 or any(f > 0 and s < 1 for f, s in zip(fractions, sizes)):
        raise ValueError(f"{n} windows are too few for the split fractions {fractions}")
    bounds = np.cumsum([0, n - sum(sizes), *sizes])
    blocks = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if starts is not None:
        if length is None:
            raise ValueError("purging overlapping windows needs the window length")
        for i in range(len(blocks) - 1):
            later = np.concatenate(blocks[i + 1:])
            if len(later):
                blocks[i] = blocks[i][starts[blocks[i]] + length <= starts[later].min()]
    if len(blocks[0]) == 0:
        raise ValueError("no training windows left after purging windows that overlap the later blocks")
    return [np.sort(b) for b in blocks]
