"""Time-series augmentation for OHLC batches (Um et al. 2017), vectorised on the device.

All functions take `x` of shape (B, T, 4) in [open, high, low, close] order and return a new
tensor. One warp and one scale are drawn per window and shared by its four channels, so the
OHLC ordering survives:
- time warp resamples every channel at the same positions with linear interpolation, i.e. a
  convex combination of two bars, which preserves `high >= max(open, close) >= min(...) >= low`;
- scaling multiplies by s > 0, which preserves any ordering;
- jitter adds independent noise, then repairs the bar: high = max(open, high, close),
  low = min(open, low, close).
"""

from __future__ import annotations

import torch


def _catmull_rom(knots: torch.Tensor, length: int) -> torch.Tensor:
    """Interpolating cubic (Catmull-Rom) spline through `knots` (B, K), evaluated at `length` points."""
    b, k = knots.shape
    pos = torch.linspace(0, k - 1, length, device=knots.device, dtype=knots.dtype)
    i = pos.floor().long().clamp(max=k - 2)
    u = (pos - i.to(pos.dtype)).unsqueeze(0)
    padded = torch.cat([knots[:, :1], knots, knots[:, -1:]], dim=1)  # clamp the ends
    p0, p1, p2, p3 = (padded[:, i + j] for j in range(4))
    return 0.5 * (
        (2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * u**3
    )


def time_warp(x: torch.Tensor, sigma: float, knots: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Resample each window on a smooth random clock.

    Speeds at `knots + 2` evenly spaced knots are drawn from N(1, sigma^2), a cubic spline
    through them gives the speed at every bar, its cumulative sum (rescaled to [0, T-1]) the
    warped time at which the series is read, with linear interpolation between bars.
    """
    if sigma <= 0:
        return x
    b, t, _ = x.shape
    speeds = 1.0 + sigma * torch.randn(b, knots + 2, device=x.device, dtype=x.dtype, generator=generator)
    curve = _catmull_rom(speeds.clamp(min=0.1), t).clamp(min=0.05)
    clock = torch.cumsum(curve, dim=1)
    clock = (clock - clock[:, :1]) / (clock[:, -1:] - clock[:, :1]) * (t - 1)
    lo = clock.floor().long().clamp(0, t - 2)
    w = (clock - lo.to(x.dtype)).clamp(0, 1).unsqueeze(-1)
    idx = lo.unsqueeze(-1).expand(-1, -1, x.shape[2])
    left = torch.gather(x, 1, idx)
    right = torch.gather(x, 1, idx + 1)
    return left + w * (right - left)


def scale(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiply each window by s ~ N(1, sigma^2) (clamped above 0.1 so the ordering survives)."""
    if sigma <= 0:
        return x
    s = 1.0 + sigma * torch.randn(x.shape[0], 1, 1, device=x.device, dtype=x.dtype, generator=generator)
    return x * s.clamp(min=0.1)


def repair_ohlc(x: torch.Tensor) -> torch.Tensor:
    """Restore high = max(open, high, close) and low = min(open, low, close) per bar."""
    o, h, lo, c = x.unbind(-1)
    h = torch.maximum(h, torch.maximum(o, c))
    lo = torch.minimum(lo, torch.minimum(o, c))
    return torch.stack([o, h, lo, c], dim=-1)


def jitter(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add N(0, sigma^2) noise to every value, then repair the OHLC invariants."""
    if sigma <= 0:
        return x
    noise = sigma * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    return repair_ohlc(x + noise)


def augment(
    x: torch.Tensor,
    warp_sigma: float,
    scale_sigma: float,
    jitter_sigma: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Time warp, then scaling, then jitter (the order keeps every step invariant-preserving)."""
    return jitter(scale(time_warp(x, warp_sigma, generator=generator), scale_sigma, generator), jitter_sigma, generator)
