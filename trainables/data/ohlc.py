"""OHLC windows: loading and validating Parquet files, the CSV converter, normalisation.

Formats (see the README):
- unlabeled windows: `window_id` (string), `ohlc` (list of T bars x [open, high, low, close]),
  optional `start` (bar index of the window in its series, used to purge overlapping windows
  between train and validation);
- labeled windows add `label`, `expansion_start`, `expansion_end`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainables.data import synthetic_ohlc

OHLC = ("open", "high", "low", "close")


@dataclass
class Windows:
    ohlc: np.ndarray  # (N, T, 4) float32, raw prices
    window_id: np.ndarray  # (N,) str
    start: np.ndarray | None = None  # (N,) bar index in the source series, if known
    extra: dict | None = None  # other columns (labels, spans) as numpy arrays

    def __len__(self) -> int:
        return len(self.ohlc)


def row_list(idx: np.ndarray, limit: int = 5, noun: str = "row") -> str:
    """`rows 3, 7, 9 (and 12 more)`: the rows an error is about (0-based, as in the file)."""
    idx = np.asarray(idx).ravel()
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return f"{noun}{'s' if len(idx) > 1 else ''} {shown}" + (
        f" (and {len(idx) - limit} more)" if len(idx) > limit else ""
    )


def broken_bars(ohlc: np.ndarray) -> np.ndarray:
    """Bars (last axis: open, high, low, close) breaking high >= max(open, close) >= min(...) >= low,
    with a relative tolerance of 1e-9 so that float rounding in real price feeds is not an error."""
    o, h, lo, c = (ohlc[..., i] for i in range(4))
    tol = 1e-9 * np.abs(ohlc).max(axis=-1)
    return (h + tol < np.maximum(o, c)) | (lo - tol > np.minimum(o, c)) | (h + tol < lo)


def check_invariants(ohlc: np.ndarray, name: str) -> None:
    """Raise ValueError naming the rows with NaN/inf or high < max(open, close) or low > min(open, close)."""
    bad = ~np.isfinite(ohlc).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{name}: {row_list(np.flatnonzero(bad))}: NaN or infinite prices")
    broken = broken_bars(ohlc).any(axis=1)
    if broken.any():
        raise ValueError(
            f"{name}: {row_list(np.flatnonzero(broken))}: OHLC invariant broken "
            "(expected high >= max(open, close) >= min(open, close) >= low)"
        )


def load_windows(source: str, length: int | None = None, labeled: bool = False) -> Windows:
    """Load and validate windows from a Parquet file or a `synthetic:` URI.

    Raises ValueError with one line naming the file, the column or rows, and what was expected.
    """
    if source.startswith("synthetic:"):
        args = synthetic_ohlc.parse_uri(source)
        if length is not None and args["length"] != length:
            raise ValueError(f"{source}: window length {args['length']} != expected length {length}")
        data = synthetic_ohlc.generate(args["n"], args["length"], args["seed"])
        extra = {k: data[k] for k in ("label", "expansion_start", "expansion_end")}
        return Windows(data["ohlc"].astype(np.float32), data["window_id"], None, extra)
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{source}: data file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{source}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})") from None
    required = ["window_id", "ohlc"] + (["label", "expansion_start", "expansion_end"] if labeled else [])
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)}; found: {', '.join(table.column_names)}")
    if table.num_rows == 0:
        raise ValueError(f"{source}: no rows")
    ohlc = _ohlc_array(table.column("ohlc"), source, length)
    check_invariants(ohlc, source)
    if labeled:
        _check_label_columns(table, source)
    start = table.column("start").to_numpy() if "start" in table.column_names else None
    extra = {
        c: table.column(c).to_numpy(zero_copy_only=False)
        for c in ("label", "expansion_start", "expansion_end")
        if c in table.column_names
    }
    return Windows(
        ohlc.astype(np.float32),
        table.column("window_id").to_numpy(zero_copy_only=False).astype(str),
        start,
        extra or None,
    )


def _check_label_columns(table: pa.Table, source: str) -> None:
    """`label` present on every row; expansion_start/end integer bar indices (integral floats pass)."""
    label = table.column("label")
    empty = label.is_null().to_numpy(zero_copy_only=False)
    empty |= np.char.strip(np.asarray(label.to_numpy(zero_copy_only=False)).astype(str)) == ""
    if empty.any():
        raise ValueError(f"{source}: {row_list(np.flatnonzero(empty))}: label is empty; expected a class name")
    for name in ("expansion_start", "expansion_end"):
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise ValueError(f"{source}: column '{name}' has type {col.type}; expected integer bar indices")
        values = col.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if bad.size:
            raise ValueError(f"{source}: {row_list(bad)}: {name} is missing or not a whole bar index")


def _ohlc_array(column: pa.ChunkedArray, source: str, length: int | None) -> np.ndarray:
    col = column.combine_chunks()
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) or not (
        pa.types.is_list(col.type.value_type)
        or pa.types.is_large_list(col.type.value_type)
        or pa.types.is_fixed_size_list(col.type.value_type)
    ):
        raise ValueError(
            f"{source}: column 'ohlc' has type {col.type}; expected a list of [open, high, low, close] bars"
        )
    if col.null_count:
        raise ValueError(
            f"{source}: {row_list(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False)))}: 'ohlc' is null"
        )
    outer = col.value_lengths().to_numpy()
    expected = length if length is not None else int(outer[0])
    wrong = np.flatnonzero(outer != expected)
    if wrong.size:
        raise ValueError(f"{source}: {row_list(wrong)}: window has {int(outer[wrong[0]])} bars; expected {expected}")
    bars = col.flatten()
    if bars.null_count:
        raise ValueError(f"{source}: a bar in 'ohlc' is null")
    inner = (
        bars.value_lengths().to_numpy()
        if not pa.types.is_fixed_size_list(bars.type)
        else np.full(len(bars), bars.type.list_size)
    )
    bad_bars = np.flatnonzero(inner != 4)
    if bad_bars.size:
        raise ValueError(
            f"{source}: {row_list(np.unique(bad_bars // expected))}: a bar has {int(inner[bad_bars[0]])} "
            "values; expected 4 (open, high, low, close)"
        )
    values = bars.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    return values.reshape(len(col), expected, 4)


def normalise(x):
    """Per-window z-score with one mean and one std over all four channels and all bars.

    A single positive affine map per window keeps the OHLC ordering (high >= open, close >= low),
    removes the price level and scale (windows from different assets and eras compare), and
    keeps relative moves between bars. Works on numpy arrays and torch tensors of shape (N, T, 4).
    """
    mean = x.mean(axis=(1, 2), keepdims=True) if isinstance(x, np.ndarray) else x.mean(dim=(1, 2), keepdim=True)
    std = x.std(axis=(1, 2), keepdims=True) if isinstance(x, np.ndarray) else x.std(dim=(1, 2), keepdim=True)
    return (x - mean) / (std + 1e-8)


def windows_table(ohlc: np.ndarray, ids: list[str], start: np.ndarray | None = None, **columns) -> pa.Table:
    n, t, _ = ohlc.shape
    bars = pa.FixedSizeListArray.from_arrays(pa.array(ohlc.reshape(-1), pa.float64()), 4)
    offsets = pa.array(np.arange(0, (n + 1) * t, t, dtype=np.int32))
    data = {
        "window_id": pa.array(ids, pa.string()),
        "ohlc": pa.ListArray.from_arrays(offsets, bars.cast(pa.list_(pa.float64()))),
    }
    if start is not None:
        data["start"] = pa.array(start, pa.int64())
    for name, values in columns.items():
        data[name] = pa.array(values)
    return pa.table(data)


def csv_to_windows(csv_path: str, out_path: str, length: int = 105, stride: int = 5) -> int:
    """Slide a window of `length` bars with `stride` over an OHLC CSV; write unlabeled windows Parquet.

    The CSV needs a column each for open, high, low, close (any case; an optional timestamp
    column orders the rows). Returns the number of windows written.
    """
    import pandas as pd

    try:
        df = pd.read_csv(csv_path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{csv_path}: cannot read CSV ({' '.join(str(exc).split())[:200]})") from None
    cols = {c.lower().strip(): c for c in df.columns}
    missing = [c for c in OHLC if c not in cols]
    if missing:
        raise ValueError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; found: {', '.join(map(str, df.columns))}"
        )
    for ts in ("timestamp", "time", "date", "datetime"):
        if ts in cols:
            df = df.sort_values(cols[ts], kind="stable")
            break
    try:
        prices = df[[cols[c] for c in OHLC]].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{csv_path}: open/high/low/close must be numbers") from None
    bad = ~np.isfinite(prices).all(axis=1)
    if bad.any():
        raise ValueError(f"{csv_path}: {row_list(np.flatnonzero(bad) + 2, noun='line')}: missing or non-numeric price")
    broken = broken_bars(prices)
    if broken.any():
        raise ValueError(
            f"{csv_path}: {row_list(np.flatnonzero(broken) + 2, noun='line')}: OHLC invariant broken "
            "(expected high >= max(open, close) >= min(open, close) >= low)"
        )
    if length < 2 or stride < 1:
        raise ValueError(f"length must be >= 2 and stride >= 1, got {length}, {stride}")
    if len(prices) < length:
        raise ValueError(f"{csv_path}: {len(prices)} bars is fewer than one window of {length}")
    starts = np.arange(0, len(prices) - length + 1, stride)
    windows = np.lib.stride_tricks.sliding_window_view(prices, (length, 4))[starts, 0]
    stem = Path(csv_path).stem
    table = windows_table(np.ascontiguousarray(windows), [f"{stem}-{s:08d}" for s in starts], starts)
    tmp = f"{out_path}.tmp"
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, tmp)
    Path(tmp).replace(out_path)
    return len(starts)


def head(source: str, n: int, out_dir: str | Path, length: int = 105, labeled: bool = False) -> str:
    """A source with at most the first `n` windows (for pre-flight runs): a smaller synthetic URI,
    or a Parquet file with the first rows written into `out_dir`. A file that is not on this
    machine (it may live on the cluster) is stood in for by synthetic windows of `length` bars."""
    if not source.startswith("synthetic:") and not Path(source).exists():
        return f"synthetic:ohlc?n={n}&length={length}&seed=0&labeled={int(labeled)}"
    if source.startswith("synthetic:"):
        args = synthetic_ohlc.parse_uri(source)
        args["n"] = min(args["n"], n)
        return "synthetic:ohlc?" + "&".join(f"{k}={v}" for k, v in args.items())
    table = pq.read_table(source)
    out = Path(out_dir) / f"head{n}_{Path(source).name}"
    pq.write_table(table.slice(0, n), out)
    return str(out)
