"""Per-bar features of OHLC windows for span detection (the `multitask_span` trainable's input).

Computed once per dataset on the device, vectorised over windows and bars (no per-sample
Python). Input: raw prices `x` of shape (N, T, 4) = open, high, low, close. Output (N, T, 12),
in the order of `FEATURES`.

Notation, per window: o_t, h_t, l_t, c_t the bar's prices; ref = o_0 (the window's reference
price, its first open); r_t = h_t - l_t the bar's range; atr = mean_t r_t (the window's average
range, the unit of every price distance below, so features are free of price level and scale);
eps = 1e-12 guards divisions.

| # | name | formula |
|---|---|---|
| 0 | open_rel | (o_t - ref) / atr |
| 1 | high_rel | (h_t - ref) / atr |
| 2 | low_rel | (l_t - ref) / atr |
| 3 | close_rel | (c_t - ref) / atr |
| 4 | body | (c_t - o_t) / atr |
| 5 | upper_wick | (h_t - max(o_t, c_t)) / atr |
| 6 | lower_wick | (min(o_t, c_t) - l_t) / atr |
| 7 | log_return | log(c_t / c_{t-1}) / std_t' log(c_t' / c_{t'-1}); 0 at t = 0 |
| 8 | swing_high_dist | (c_t - H_t) / atr, H_t the high of the last swing high confirmed by bar t |
| 9 | swing_low_dist | (c_t - L_t) / atr, L_t the low of the last swing low confirmed by bar t |
| 10 | bars_since_swing | (t - s_t) / T, s_t the bar of the last swing (high or low) confirmed by t |
| 11 | expansion_proxy | min(r_t / mean(r_{t-n} .. r_{t-1}), 10), n = `EXPANSION_LOOKBACK` (fewer near t = 0; 1 at 0) |

Swings (the zig-zag structure): bar j is a swing high when h_j is the strict maximum of
h_{j-k} .. h_{j+k} (k = `SWING_ORDER`), a swing low likewise with the minimum of lows. A swing
at j is *confirmed* at bar j + k, when the k bars after it are known, so features 8-10 never
look ahead. Before the first confirmed swing, H_t and L_t are the window's running high and
low and s_t = 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FEATURES = (
    "open_rel",
    "high_rel",
    "low_rel",
    "close_rel",
    "body",
    "upper_wick",
    "lower_wick",
    "log_return",
    "swing_high_dist",
    "swing_low_dist",
    "bars_since_swing",
    "expansion_proxy",
)
SWING_ORDER = 2
EXPANSION_LOOKBACK = 10
EXPANSION_CLIP = 10.0
EPS = 1e-12


def _confirmed_swings(values: torch.Tensor, k: int, highs: bool) -> torch.Tensor:
    """(N, T) bool: bar t confirms a swing at bar t - k (strict local extremum over a 2k+1 window)."""
    n, t = values.shape
    sign = 1.0 if highs else -1.0
    v = sign * values
    padded = F.pad(v[:, None], (k, k), value=float("-inf"))[:, 0]  # (N, T + 2k)
    windows = padded.unfold(1, 2 * k + 1, 1)  # (N, T, 2k+1), centred on j
    centre = windows[..., k]
    others = torch.cat([windows[..., :k], windows[..., k + 1 :]], dim=-1)
    is_swing = centre > others.max(dim=-1).values
    # A swing needs its k bars on both sides inside the window.
    idx = torch.arange(t, device=values.device)
    is_swing &= (idx >= k) & (idx < t - k)
    confirmed = torch.zeros_like(is_swing)
    confirmed[:, k:] = is_swing[:, : t - k]
    return confirmed


def _last_value(flags: torch.Tensor, values: torch.Tensor, fallback: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward fill: at each t, the value at the last flagged bar (its source bar, shifted by the
    caller) and its index; `fallback` (N, T) and index -1 before the first flag."""
    n, t = flags.shape
    idx = torch.arange(t, device=flags.device).expand(n, t)
    last = torch.where(flags, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    filled = torch.where(last >= 0, values.gather(1, last.clamp_min(0)), fallback)
    return filled, last


def compute(x: torch.Tensor) -> torch.Tensor:
    """(N, T, 4) raw OHLC -> (N, T, 12) features (see the module docstring for the formulas)."""
    if x.ndim != 3 or x.shape[-1] != 4:
        raise ValueError(f"expected OHLC windows of shape (N, T, 4), got {tuple(x.shape)}")
    x = x.to(torch.float64)  # price differences of large prices lose digits in float32
    o, h, lo, c = x.unbind(-1)
    n, t = o.shape
    k = SWING_ORDER
    rng = h - lo
    atr = rng.mean(dim=1, keepdim=True).clamp_min(EPS)
    ref = o[:, :1]
    rel = (x - ref[..., None]) / atr[..., None]
    body = (c - o) / atr
    upper = (h - torch.maximum(o, c)) / atr
    lower = (torch.minimum(o, c) - lo) / atr

    log_ret = torch.zeros_like(c)
    log_ret[:, 1:] = torch.log(c[:, 1:] / c[:, :-1])
    ret_std = log_ret[:, 1:].std(dim=1, keepdim=True).clamp_min(EPS) if t > 2 else torch.ones_like(ref)
    log_ret = log_ret / ret_std

    # The swing at j is confirmed at j + k: shift the swing's price by k so gather at the
    # confirming bar returns the swing bar's high/low.
    hi_conf = _confirmed_swings(h, k, highs=True)
    lo_conf = _confirmed_swings(lo, k, highs=False)
    h_shift = torch.cat([h[:, :1].expand(n, k), h[:, : t - k]], dim=1)
    l_shift = torch.cat([lo[:, :1].expand(n, k), lo[:, : t - k]], dim=1)
    last_high, hi_idx = _last_value(hi_conf, h_shift, h.cummax(dim=1).values)
    last_low, lo_idx = _last_value(lo_conf, l_shift, lo.cummin(dim=1).values)
    swing_high_dist = (c - last_high) / atr
    swing_low_dist = (c - last_low) / atr
    bar = torch.arange(t, device=x.device, dtype=x.dtype).expand(n, t)
    last_swing_bar = torch.maximum(hi_idx, lo_idx).to(x.dtype) - k  # confirming bar -> swing bar
    since = torch.where(last_swing_bar >= 0, bar - last_swing_bar, bar) / t

    csum = F.pad(rng.cumsum(dim=1), (1, 0))  # csum[:, j] = sum r_0 .. r_{j-1}
    lo_edge = (torch.arange(t, device=x.device) - EXPANSION_LOOKBACK).clamp_min(0)
    count = (torch.arange(t, device=x.device) - lo_edge).to(x.dtype)
    prior_sum = csum[:, :t] - csum[:, lo_edge]
    prior_mean = prior_sum / count.clamp_min(1)
    expansion = torch.where(count > 0, rng / prior_mean.clamp_min(EPS), torch.ones_like(rng)).clamp(max=EXPANSION_CLIP)

    feats = torch.stack(
        [
            rel[..., 0],
            rel[..., 1],
            rel[..., 2],
            rel[..., 3],
            body,
            upper,
            lower,
            log_ret,
            swing_high_dist,
            swing_low_dist,
            since,
            expansion,
        ],
        dim=-1,
    )
    return feats.to(torch.float32)


def standardiser(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std over windows and bars (of the training windows), for z-scoring."""
    flat = features.reshape(-1, features.shape[-1])
    return flat.mean(dim=0), flat.std(dim=0).clamp_min(1e-6)
