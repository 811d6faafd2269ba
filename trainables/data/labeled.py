"""Labeled windows as the fine-tuning trainables read them: integer labels over sorted class
names, and (for span models) the expansion span of each window; every error names the rows."""

from __future__ import annotations

import numpy as np

from trainables.data import ohlc


def load_classified(source: str, window_length: int, folds: int) -> tuple[ohlc.Windows, np.ndarray, list[str]]:
    """Windows to classify out-of-fold in `folds` folds: (windows, integer labels, class names);
    raises ValueError naming the problem."""
    windows = ohlc.load_windows(source, window_length, labeled=True)
    classes, y = _labels(source, windows)
    if folds > len(y):
        raise ValueError(f"{source}: {len(y)} windows are fewer than folds={folds}")
    return windows, y, classes


def load_spans(source: str, window_length: int):
    """Windows with their class and expansion span: (windows, class names, integer labels,
    starts, ends); raises ValueError naming bad rows."""
    windows = ohlc.load_windows(source, window_length, labeled=True)
    classes, y = _labels(source, windows)
    starts = np.asarray(windows.extra["expansion_start"])
    ends = np.asarray(windows.extra["expansion_end"])
    bad = np.flatnonzero(~((starts >= 0) & (starts <= ends) & (ends < window_length)))
    if bad.size:
        raise ValueError(
            f"{source}: {ohlc.row_list(bad)}: expected 0 <= expansion_start <= expansion_end "
            f"< window_length ({window_length})"
        )
    return windows, classes, y, starts.astype(np.int64), ends.astype(np.int64)


def _labels(source: str, windows: ohlc.Windows) -> tuple[list[str], np.ndarray]:
    """Sorted class names and each window's class index; at least two classes."""
    labels = np.asarray(windows.extra["label"]).astype(str)
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise ValueError(f"{source}: needs at least 2 classes in 'label', found {classes}")
    return classes, np.searchsorted(classes, labels)
