"""SIGReg (LeJEPA, Balestriero & LeCun 2025): a sketched test that embeddings are an isotropic
Gaussian N(0, I), differentiable, used as a regulariser.

For embeddings Z (N x d, *before* normalisation), draw K random unit directions a_k, project
x = Z a_k, and compute the Epps-Pulley statistic of each projection against N(0, 1):

    EP = N * integral |phi_hat(t) - exp(-t^2 / 2)|^2 * exp(-t^2 / 2) dt,
    phi_hat(t) = mean_n exp(i t x_n)   (the empirical characteristic function),

by the trapezoid rule on t in linspace(-5, 5, 17); SIGReg = mean over the K directions. With
|phi_hat - phi|^2 = (mean cos(t x) - exp(-t^2/2))^2 + (mean sin(t x))^2 it needs no complex
numbers. EP is O(1) for Gaussian samples (its expectation does not grow with N) and grows like
N when the projections are not N(0, 1) (collapsed, anisotropic, shifted).

Data parallel (`workers: N`): each rank holds only its share of the batch, and the statistic
of N local samples is not the statistic of the batch (measured: 43 per rank against 168 pooled
on 4 ranks x 256 anisotropic rows; the regulariser's weight would shrink with N and its test see
a fraction of the sample). So, as the reference implementation (rbalestr-lab/lejepa) does, the
empirical characteristic function is summed over ranks (one all-reduce of the cos and sin sums
and the row counts, differentiable: `torch.distributed.nn.functional.all_reduce`) and scaled by
the global row count: every rank computes the statistic of the whole batch, and with DDP's mean
of the gradients each parameter gets exactly the gradient of one worker on the whole batch
(the all-reduce's backward sums the ranks' gradients of the shared statistic; DDP divides by N).

Directions are drawn from a generator seeded by (seed, step): every data-parallel rank uses
the same directions at the same step. Computed in float32 even under autocast.
"""

from __future__ import annotations

import torch

from trainables.runtime.distributed import world

KNOTS = 17
T_MAX = 5.0


def directions(dim: int, k: int, step: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """(dim, k) random unit directions, the same on every rank for the same (seed, step), and on
    every device: drawn on the CPU (a CUDA generator draws other numbers), copied to a GPU
    asynchronously from pinned memory."""
    gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + step)
    a = torch.randn(dim, k, generator=gen)
    a = a / a.norm(dim=0, keepdim=True)
    if torch.device(device).type == "cuda":
        return a.pin_memory().to(device, non_blocking=True)
    return a.to(device)


def epps_pulley(x: torch.Tensor, knots: int = KNOTS, t_max: float = T_MAX) -> torch.Tensor:
    """Per column of x (N x K): the Epps-Pulley statistic against N(0, 1); under data parallelism
    of the rows of every rank together (see the module doc)."""
    t = torch.linspace(-t_max, t_max, knots, device=x.device, dtype=torch.float32)
    tx = x.float()[..., None] * t  # (N, K, T)
    sums = torch.stack((torch.cos(tx).sum(0), torch.sin(tx).sum(0)))  # (2, K, T)
    n = torch.full((), x.shape[0], dtype=sums.dtype, device=x.device)
    if world()[1] > 1:
        from torch.distributed.nn.functional import all_reduce

        # one collective for the sums and the count; the count needs no gradient
        packed = all_reduce(torch.cat((sums.flatten(), n.reshape(1))))
        sums, n = packed[:-1].reshape(sums.shape), packed[-1].detach()
    gauss = torch.exp(-0.5 * t * t)
    err = (sums[0] / n - gauss) ** 2 + (sums[1] / n) ** 2  # (K, T)
    return n * torch.trapezoid(err * gauss, t, dim=-1)


def sigreg(z: torch.Tensor, k: int = 256, step: int = 0, seed: int = 0) -> torch.Tensor:
    """Mean Epps-Pulley statistic of z (N x d) over k random directions (float32); under data
    parallelism, of every rank's rows together."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = z.float()
        return epps_pulley(z @ directions(z.shape[1], k, step, seed, z.device)).mean()
