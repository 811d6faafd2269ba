"""Masks for masked-autoencoder pretraining, vectorised over the batch.

A mask is a bool tensor (B, T, C), True where a value is hidden from the encoder.
- `random`: each (t, channel) hidden with probability r.
- `block`: per channel, alternating runs of hidden and visible bars with geometric lengths,
  hidden runs of mean `mean_block` (3) and visible runs of mean mean_block * (1 - r) / r, so the
  long-run hidden share is r (Zerveas et al. 2021). Runs are drawn all at once and placed with
  `searchsorted`: no Python loop over bars or samples.
- `patch`: T split into patches of `patch_len` bars (PatchTST, 12); each window hides
  k = floor(r * n_patches + U) whole patches (all channels), U ~ U(0, 1), so the expected share
  is r and most windows hide at least one patch.
"""

from __future__ import annotations

import math

import torch

STRATEGIES = ("random", "block", "patch")


def random_mask(shape: tuple[int, int, int], ratio: float, device, generator=None) -> torch.Tensor:
    return torch.rand(shape, device=device, generator=generator) < ratio


def _geometric(shape, mean: float, device, generator) -> torch.Tensor:
    """Geometric lengths >= 1 with the given mean (inverse-CDF sampling)."""
    p = min(1.0, 1.0 / max(mean, 1.0))
    if p >= 1.0:
        return torch.ones(shape, device=device)
    u = torch.rand(shape, device=device, generator=generator).clamp_min(1e-12)
    return torch.floor(torch.log(u) / math.log1p(-p)) + 1


def block_mask(
    shape: tuple[int, int, int], ratio: float, device, mean_block: float = 3.0, generator=None
) -> torch.Tensor:
    b, t, c = shape
    if ratio <= 0:
        return torch.zeros(shape, dtype=torch.bool, device=device)
    mean_visible = mean_block * (1 - ratio) / ratio
    n_runs = t + 1  # every run is >= 1 bar long, so t + 1 runs always cover the window
    hidden = _geometric((b * c, n_runs), mean_block, device, generator)
    visible = _geometric((b * c, n_runs), mean_visible, device, generator)
    # The start state is drawn from the stationary distribution; geometric runs are memoryless,
    # so the window is then a stationary sample of the chain and its hidden share is r.
    starts_hidden = torch.rand(b * c, device=device, generator=generator) < ratio
    first = torch.where(
        starts_hidden.view(-1, 1, 1), torch.stack([hidden, visible], 2), torch.stack([visible, hidden], 2)
    )
    lengths = first.reshape(b * c, 2 * n_runs)
    ends = torch.cumsum(lengths, dim=1)
    pos = torch.arange(t, device=device, dtype=ends.dtype).expand(b * c, t).contiguous()
    run = torch.searchsorted(ends, pos, right=True)
    is_hidden = (run % 2 == 0) == starts_hidden.unsqueeze(1)
    return is_hidden.reshape(b, c, t).transpose(1, 2)


def patch_mask(shape: tuple[int, int, int], ratio: float, device, patch_len: int = 12, generator=None) -> torch.Tensor:
    b, t, c = shape
    n_patches = math.ceil(t / patch_len)
    k = torch.floor(ratio * n_patches + torch.rand(b, 1, device=device, generator=generator))
    scores = torch.rand(b, n_patches, device=device, generator=generator)
    rank = scores.argsort(dim=1).argsort(dim=1)
    hidden_patch = rank < k
    per_bar = hidden_patch.repeat_interleave(patch_len, dim=1)[:, :t]
    return per_bar.unsqueeze(-1).expand(b, t, c).contiguous()


def make_mask(
    strategy: str,
    shape: tuple[int, int, int],
    ratio: float,
    device,
    *,
    patch_len: int = 12,
    mean_block: float = 3.0,
    generator=None,
) -> torch.Tensor:
    if strategy == "random":
        return random_mask(shape, ratio, device, generator)
    if strategy == "block":
        return block_mask(shape, ratio, device, mean_block, generator)
    if strategy == "patch":
        return patch_mask(shape, ratio, device, patch_len, generator)
    raise ValueError(f"unknown mask strategy {strategy!r}; expected one of: {', '.join(STRATEGIES)}")


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over hidden positions only (visible positions get zero gradient)."""
    m = mask.to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def interpolate_masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Naive baseline: fill hidden values by linear interpolation between the nearest visible
    bars of the same channel (nearest visible value at the edges, 0 if a channel is all hidden)."""
    b, t, c = x.shape
    pos = torch.arange(t, device=x.device).view(1, t, 1).expand(b, t, c)
    visible = ~mask
    prev_idx = torch.where(visible, pos, torch.full_like(pos, -1)).cummax(dim=1).values
    next_src = torch.where(visible, pos, torch.full_like(pos, t)).flip(1).cummin(dim=1).values.flip(1)
    has_prev, has_next = prev_idx >= 0, next_src < t
    prev_val = torch.gather(x, 1, prev_idx.clamp(0, t - 1))
    next_val = torch.gather(x, 1, next_src.clamp(0, t - 1))
    span = (next_src - prev_idx).clamp_min(1).to(x.dtype)
    w = (pos - prev_idx).to(x.dtype) / span
    both = prev_val + w * (next_val - prev_val)
    filled = torch.where(
        has_prev & has_next, both, torch.where(has_prev, prev_val, torch.where(has_next, next_val, torch.zeros_like(x)))
    )
    return torch.where(mask, filled, x)
