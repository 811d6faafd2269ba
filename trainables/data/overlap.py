"""Where windows sit on a common timeline, and which of them share bars, also without `start`.

Windows cut from one series with a stride shorter than their length share bars, and a window
that shares bars with a validation window gives the model the answer's neighbourhood: every
split (train / validation / test, folds, the inner early-stopping split) must keep them apart.
With a `start` column that column is the timeline. Without one, this module reconstructs it
from the prices: two windows of one series that overlap by T - q bars have identical bars
there, so the later window's first bar appears, verified by every other shared bar, at
position q of the earlier one.

Why our own code: no library infers window offsets from content; the steps are short, exact
and vectorised with numpy (no per-window Python loop), O(N·T·log(N·T)) for N windows of T bars:

1. Every bar gets a 64-bit key from its four values (a hash; step 3 checks equality).
2. For window w, every other window b holding w's first bar at position q is a candidate
   predecessor: b starts q bars before w (q = 0: an exact duplicate, only a lower-index b).
3. A candidate is kept when all T - q bars they would share are equal (float equality), so a
   price that merely recurs elsewhere is not an overlap unless everything around it recurs too.
4. Each window keeps its nearest verified predecessor (smallest q): a forest whose edges say
   "starts q bars after"; summing offsets up to each root gives positions within a chain.
5. Chains (connected windows) are laid end to end in the order of their first window in the
   file, with a gap of T bars, so windows of different chains never look overlapping and the
   file order between chains is kept (it is the time order when nothing else says otherwise).

A chain whose prices repeat exactly (a flat, illiquid stretch) can be linked where the series
was not: that errs on the side of keeping windows apart, never of leaking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)


@dataclass
class Timeline:
    """Start bar of every window on one timeline, and how it was found."""

    start: np.ndarray  # (N,) int64
    source: str  # "start column" | "inferred from shared bars"
    overlapping: int  # windows that share at least one bar with another window
    chains: int  # groups of windows connected by shared bars (singletons included)

    def describe(self, length: int) -> dict:
        return {
            "positions": self.source,
            "windows": len(self.start),
            "overlapping_windows": self.overlapping,
            "chains": self.chains,
            "window_length": length,
        }


def bar_keys(ohlc: np.ndarray) -> np.ndarray:
    """(N, T) uint64 keys of the bars of (N, T, 4) prices: equal bars have equal keys (a few
    unequal ones may share one: candidates are verified on the prices themselves)."""
    pairs = np.ascontiguousarray(ohlc, dtype=np.float32).view(np.uint64)  # (N, T, 2): (open, high), (low, close)
    with np.errstate(over="ignore"):
        return (pairs[..., 0] * _MIX[0]) ^ ((pairs[..., 1] + _MIX[2]) * _MIX[1])


def infer_starts(ohlc: np.ndarray, max_candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Start bar of every window (N, T, 4) on a reconstructed timeline, and its chain id.

    `max_candidates` (default 4·T) bounds the candidates per window: a real series puts a bar
    in at most T windows; a price that recurs more often (a flat stretch) is looked up only
    among its occurrences nearest in the file.
    """
    n, t = ohlc.shape[:2]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    limit = max_candidates or 4 * t
    keys = bar_keys(ohlc).ravel()
    order = np.argsort(keys, kind="stable")  # equal keys stay in file order
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    sorted_keys = keys[order]
    first = keys.reshape(n, t)[:, 0]
    own = where[np.arange(n) * t]  # each window's first bar in the sorted keys
    lo = np.maximum(np.searchsorted(sorted_keys, first, "left"), own - limit)
    hi = np.minimum(np.searchsorted(sorted_keys, first, "right"), own + limit + 1)
    counts = hi - lo
    w = np.repeat(np.arange(n), counts)
    flat = order[np.repeat(lo, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)]
    b, q = flat // t, flat % t
    keep = (b != w) & ((q > 0) | (b < w))
    w, b, q = w[keep], b[keep], q[keep]
    # nearest first: sorted by (w, q, b); each window's first candidate that verifies wins.
    # Verified in rounds, one candidate per window each (almost every window is done in the
    # first round: its nearest candidate is its predecessor), not all candidates at once.
    idx = np.argsort(w * t + q, kind="stable")  # stable: equal (w, q) stay in file order of b
    w, b, q = w[idx], b[idx], q[idx]
    parent = np.arange(n)
    offset = np.zeros(n, dtype=np.int64)  # bars after the parent's start
    if len(w):
        begin = np.flatnonzero(np.r_[True, w[1:] != w[:-1]])
        end = np.r_[begin[1:], len(w)]
        ptr = begin.copy()
        live = np.ones(len(begin), dtype=bool)
        while live.any():
            at = ptr[live]
            ok = _verify(ohlc, w[at], b[at], q[at])
            parent[w[at[ok]]], offset[w[at[ok]]] = b[at[ok]], q[at[ok]]
            ptr[live] += 1
            live[np.flatnonzero(live)[ok]] = False
            live &= ptr < end
    # pointer jumping to the roots (edges point to earlier starts or lower-index duplicates,
    # so there are no cycles); a root's offset is 0, so jumping adds the skipped distance
    while not np.array_equal(parent[parent], parent):
        offset = offset + offset[parent]
        parent = parent[parent]
    roots, chain = np.unique(parent, return_inverse=True)
    span = np.zeros(len(roots), dtype=np.int64)
    np.maximum.at(span, chain, offset + t)
    first_row = np.full(len(roots), n, dtype=np.int64)
    np.minimum.at(first_row, chain, np.arange(n))
    placed = np.argsort(first_row, kind="stable")  # chains in file order of their first window
    base = np.zeros(len(roots), dtype=np.int64)
    base[placed] = np.concatenate([[0], np.cumsum(span[placed] + t)[:-1]])
    return base[chain] + offset, chain


def _verify(ohlc: np.ndarray, w: np.ndarray, b: np.ndarray, q: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Whether window w[i] equals window b[i] shifted by q[i] on all their shared bars."""
    t = ohlc.shape[1]
    ok = np.zeros(len(w), dtype=bool)
    cols = np.arange(t)
    for s in range(0, len(w), chunk):
        ww, bb, qq = w[s : s + chunk], b[s : s + chunk], q[s : s + chunk]
        src = cols[None, :] + qq[:, None]  # bar j of w is bar j + q of b
        valid = src < t
        a = ohlc[ww]
        other = ohlc[bb[:, None], np.minimum(src, t - 1)]
        same = (a == other).all(axis=-1) | ~valid
        ok[s : s + chunk] = same.all(axis=1)
    return ok


def chains_of(starts: np.ndarray, length: int) -> np.ndarray:
    """Chain id per window for known starts: windows linked by shared bars (sweep over starts)."""
    if len(starts) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(starts, kind="stable")
    s = starts[order]
    reach = np.maximum.accumulate(s + length)
    new = np.r_[True, s[1:] >= reach[:-1]]
    chain = np.empty(len(starts), dtype=np.int64)
    chain[order] = np.cumsum(new) - 1
    return chain


def timeline(ohlc: np.ndarray, start: np.ndarray | None) -> Timeline:
    """The windows' timeline: the `start` column when there is one, else inferred from prices."""
    length = ohlc.shape[1]
    if start is not None:
        starts = np.asarray(start, dtype=np.int64)
        chain, source = chains_of(starts, length), "start column"
    else:
        starts, chain = infer_starts(ohlc)
        source = "inferred from shared bars"
    sizes = np.bincount(chain) if len(chain) else np.zeros(0, dtype=np.int64)
    overlapping = int((sizes[chain] > 1).sum()) if len(chain) else 0
    return Timeline(starts, source, overlapping, int(len(sizes)))


def overlaps_any(starts: np.ndarray, others: np.ndarray, length: int) -> np.ndarray:
    """For each start, whether its window shares a bar with any window starting at `others`."""
    if len(others) == 0 or len(starts) == 0:
        return np.zeros(len(starts), dtype=bool)
    ref = np.sort(others)
    i = np.searchsorted(ref, starts)
    left = np.abs(starts - ref[np.clip(i - 1, 0, len(ref) - 1)])
    right = np.abs(ref[np.clip(i, 0, len(ref) - 1)] - starts)
    return np.minimum(left, right) < length
