"""Seeded synthetic OHLC windows with planted, learnable structure (tests and the quick start).

Each window of T bars is generated independently:

1. *consolidation* from bar 0: a low-volatility, mean-reverting walk;
2. an *expansion* span [expansion_start, expansion_end] (onset uniform in [0.2T, 0.5T), length
   uniform in [0.15T, 0.3T]): a strong drift (up or down) at three times the volatility;
3. what follows decides the label: `retracement` gives back 40-70% of the expansion's move,
   `consolidation` goes sideways at low volatility.

Bars: close_t = close_{t-1} * exp(r_t); open_t = close_{t-1} * exp(gap noise);
high = max(open, close) * exp(|n| * vol), low = min(open, close) * exp(-|n| * vol), so the
OHLC invariants hold. Everything is vectorised over windows with one numpy Generator.

Used through the data URI `synthetic:ohlc?n=2000&length=105&seed=0` (add `&labeled=1` for labels).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import numpy as np

LABELS = ("consolidation", "retracement")


def generate(n: int, length: int = 105, seed: int = 0) -> dict[str, np.ndarray]:
    """Return {'ohlc': (n, length, 4) float64, 'label', 'expansion_start', 'expansion_end', 'window_id'}."""
    if n < 1 or length < 20:
        raise ValueError(f"synthetic data needs n >= 1 and length >= 20, got n={n}, length={length}")
    rng = np.random.default_rng(seed)
    t = np.arange(length)[None, :]
    start = rng.integers(int(0.2 * length), int(0.5 * length), size=(n, 1))
    span = rng.integers(int(0.15 * length), int(0.3 * length) + 1, size=(n, 1))
    end = np.minimum(start + span - 1, length - 1)
    label = rng.integers(0, 2, size=n)
    direction = rng.choice([-1.0, 1.0], size=(n, 1))
    vol = rng.uniform(0.002, 0.004, size=(n, 1))

    in_exp = (t >= start) & (t <= end)
    after = t > end
    drift = np.where(in_exp, direction * 3.0 * vol, 0.0)
    # retracement: give back 40-70% of the expansion move over the bars that follow
    expansion_move = direction * 3.0 * vol * (end - start + 1)
    give_back = rng.uniform(0.4, 0.7, size=(n, 1))
    after_len = np.maximum(length - 1 - end, 1)
    retrace = -expansion_move * give_back / after_len
    drift = drift + np.where(after & (label[:, None] == 1), retrace, 0.0)
    noise_scale = np.where(in_exp, 2.0 * vol, vol)
    returns = drift + noise_scale * rng.standard_normal((n, length))
    # mild mean reversion in the consolidation phases keeps them range-bound
    log_close = np.cumsum(returns, axis=1)
    base = np.log(rng.uniform(50, 150, size=(n, 1)))
    close = np.exp(base + log_close)
    prev_close = np.concatenate([np.exp(base), close[:, :-1]], axis=1)
    open_ = prev_close * np.exp(0.3 * vol * rng.standard_normal((n, length)))
    wick = noise_scale[..., None] * np.abs(rng.standard_normal((n, length, 2)))
    high = np.maximum(open_, close) * np.exp(wick[..., 0])
    low = np.minimum(open_, close) * np.exp(-wick[..., 1])
    ohlc = np.stack([open_, high, low, close], axis=-1)
    return {
        "window_id": np.array([f"syn-{seed}-{i:06d}" for i in range(n)]),
        "ohlc": ohlc,
        "label": np.array([LABELS[i] for i in label]),
        "expansion_start": start[:, 0].astype(np.int64),
        "expansion_end": end[:, 0].astype(np.int64),
    }


def parse_uri(uri: str) -> dict:
    """`synthetic:ohlc?n=..&length=..&seed=..&labeled=0|1` -> generator arguments."""
    body = uri[len("synthetic:") :]
    kind, _, query = body.partition("?")
    if kind != "ohlc":
        raise ValueError(f"{uri}: unknown synthetic data kind {kind!r}; expected 'synthetic:ohlc?n=...'")
    allowed = {"n": int, "length": int, "seed": int, "labeled": int}
    args: dict = {"n": 2000, "length": 105, "seed": 0, "labeled": 0}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise ValueError(f"{uri}: unknown parameter {key!r}; expected: {', '.join(allowed)}")
        try:
            args[key] = allowed[key](value)
        except ValueError:
            raise ValueError(f"{uri}: parameter {key!r} must be an integer, got {value!r}") from None
    if args["n"] < 1 or args["length"] < 20:
        raise ValueError(f"{uri}: needs n >= 1 and length >= 20")
    return args
