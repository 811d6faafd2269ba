"""Splits of windows with no leakage between windows that share bars.

Every function takes the windows' `starts` on one timeline (`trainables.data.overlap.timeline`: the
file's `start` column, or positions inferred from the prices when there is none) and their
`length`. Two windows share a bar when their starts are less than `length` apart.

- `make_folds`: K folds for out-of-fold evaluation. Windows that share no bar with any other
  (independent windows) get stratified K-fold: each class's windows shuffled (seeded) and dealt
  round-robin. Otherwise *grouped, purged* K-fold: chains of windows linked by shared bars are
  the groups, a chain longer than its share of a fold is cut into contiguous pieces along its
  timeline, pieces are dealt to folds by scikit-learn's `StratifiedGroupKFold` (class mix as
  even as whole pieces allow), and a fold's training set drops every window that shares a bar
  with one of its validation windows. One long series thus gives K contiguous blocks (the
  classic blocked, purged K-fold); many short chains give grouped, stratified folds.
- `time_split`: train / validation (/ test) as consecutive blocks along the timeline, the last
  ones last; a window that shares a bar with a later block is purged from its own block.
- `inner_split`: a fold's early-stopping windows: stratified at random for independent
  windows, else the first of `make_folds` at about the same fraction (grouped, purged).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from trainables.data.overlap import Timeline, chains_of, overlaps_any, timeline


def _independent(starts: np.ndarray | None, length: int | None) -> bool:
    if starts is None or len(starts) < 2:
        return True
    s = np.sort(starts)
    return bool((np.diff(s) >= length).all())


def _stratified(labels: np.ndarray, k: int, seed) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        fold_of[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)  # continue dealing where the last class stopped: folds stay even in size
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def pieces(starts: np.ndarray, length: int, k: int) -> np.ndarray:
    """Group id per window: chains of windows sharing bars, each cut along its timeline into
    ceil(len(chain) · k / n) contiguous pieces, so that no piece is more than about a fold and
    there are at least k pieces."""
    n = len(starts)
    chain = chains_of(starts, length)
    group = np.empty(n, dtype=np.int64)
    next_id = 0
    order = np.lexsort((starts, chain))
    bounds = np.flatnonzero(np.r_[True, chain[order][1:] != chain[order][:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        members = order[a:b]
        parts = max(1, math.ceil(len(members) * k / n))
        for part in np.array_split(members, min(parts, len(members))):
            group[part] = next_id
            next_id += 1
    return group


def make_folds(
    labels: np.ndarray, k: int, seed: int, starts: np.ndarray | None = None, length: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, validation) index pairs; see the module docstring."""
    n = len(labels)
    if k < 2 or k > n:
        raise ValueError(f"folds must be between 2 and the number of windows ({n}), got {k}")
    if starts is not None and length is None:
        raise ValueError("folds of overlapping windows need the window length")
    if _independent(starts, length):
        return _stratified(labels, k, seed)
    from sklearn.model_selection import StratifiedGroupKFold

    groups = pieces(starts, length, k)
    # a class too rare for k folds only makes StratifiedGroupKFold warn; the folds stay valid
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed % 2**32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(np.zeros(n), labels, groups))
    out = []
    for train, val in splits:
        train = train[~overlaps_any(starts[train], starts[val], length)]
        out.append((np.sort(train), np.sort(val)))
    return out


def time_split(
    n: int, fractions: tuple[float, ...], starts: np.ndarray | None = None, length: int | None = None
) -> list[np.ndarray]:
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
            later = np.concatenate(blocks[i + 1 :])
            if len(later):
                blocks[i] = blocks[i][starts[blocks[i]] + length <= starts[later].min()]
    if len(blocks[0]) == 0:
        raise ValueError("no training windows left after purging windows that overlap the later blocks")
    return [np.sort(b) for b in blocks]


def inner_split(
    labels: np.ndarray, fraction: float, seed: int, starts: np.ndarray | None = None, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, early-stopping) indices of a fold's training windows; see the module docstring."""
    n = len(labels)
    if _independent(starts, length):
        rng = np.random.default_rng(seed)
        fit, stop = [], []
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            n_stop = min(len(idx) - 1, max(1, round(len(idx) * fraction))) if len(idx) > 1 else 0
            stop.append(idx[:n_stop])
            fit.append(idx[n_stop:])
        return np.sort(np.concatenate(fit)), np.sort(np.concatenate(stop))
    k = min(n, max(2, round(1 / fraction)))
    return make_folds(labels, k, seed, starts, length)[0]


def split_note(line, n: int, blocks, names: tuple[str, ...]) -> str:
    """One line on how windows were split into `blocks` (metadata.json, `validate`)."""
    sizes = ", ".join(f"{name} {len(b)}" for name, b in zip(names, blocks))
    purged = n - sum(len(b) for b in blocks)
    if line.overlapping:
        return (
            f"{line.overlapping} of {n} windows share bars with another (positions: {line.source}); split by "
            f"time with {purged} purged so that none shares a bar across blocks: {sizes}"
        )
    return f"no window shares a bar with another (positions: {line.source}); split by time: {sizes}"


def time_blocks(windows, fractions: tuple[float, ...], length: int) -> tuple[Timeline, list[np.ndarray]]:
    """(timeline, blocks): the windows' timeline (`start`, or positions inferred from the prices)
    and `time_split` along it. Independent of the seed: every trial gets the same blocks."""
    line = timeline(windows.ohlc, windows.start)
    return line, time_split(len(windows), fractions, line.start, length)


def folds_note(line: Timeline, folds: list, n: int) -> str:
    """One line on how n windows were folded (`validate`, metadata.json): grouped, purged folds
    when some share bars (trainables/data/overlap.py), else stratified ones."""
    purged = sum(n - len(tr) - len(va) for tr, va in folds)
    if line.overlapping:
        return (
            f"{line.overlapping} of {n} windows share bars with another (positions: {line.source}); "
            f"{len(folds)} grouped, purged folds ({purged} training windows purged over all folds), early "
            "stopping split the same way; no window shares a bar with one on the other side"
        )
    return f"no window shares a bar with another (positions: {line.source}); {len(folds)} stratified folds"
