"""SIGReg under data parallelism: N workers x B rows give the loss and the gradients of one
worker on the N*B rows (two real gloo ranks, DDP, against the concatenated batch). Without the
cross-rank reduction each rank scores only its own rows: the statistic and its gradient differ."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainables.losses import sigreg

ROWS, DIM, WORLD = 64, 16, 2


def _data() -> tuple[torch.Tensor, torch.nn.Linear]:
    """Anisotropic inputs (what SIGReg penalises) and a linear projection to embed them."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * ROWS, DIM, generator=gen) * torch.linspace(0.1, 3.0, DIM)
    torch.manual_seed(1)
    return x, torch.nn.Linear(DIM, DIM)


def _rank(rank: int, init: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        x, layer = _data()
        model = torch.nn.parallel.DistributedDataParallel(layer)
        loss = sigreg.sigreg(model(x[rank * ROWS : (rank + 1) * ROWS]), k=32, step=5, seed=3)
        loss.backward()
        out[rank] = (float(loss), layer.weight.grad.clone(), layer.bias.grad.clone())
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_ranks_equal_one_worker_on_the_whole_batch(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    with mp.Manager() as manager:
        out = manager.dict()
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        mp.spawn(_rank, args=(init, out), nprocs=WORLD, join=True)
        ranks = dict(out)
    x, layer = _data()
    whole = sigreg.sigreg(layer(x), k=32, step=5, seed=3)
    whole.backward()
    for loss, weight_grad, bias_grad in ranks.values():
        assert loss == pytest.approx(whole.item(), rel=1e-5)
        torch.testing.assert_close(weight_grad, layer.weight.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(bias_grad, layer.bias.grad, rtol=1e-4, atol=1e-6)
    # the regulariser is not trivially equal across the split: one rank's rows score otherwise
    half = sigreg.sigreg(layer(x[:ROWS]), k=32, step=5, seed=3).item()
    assert abs(half - whole.item()) > 0.05 * abs(whole.item())
