"""Collectives of data-parallel trials: their tensors live on the model's device.

NCCL, the backend of GPU workers, reduces CUDA tensors only; a collective on a CPU tensor while
the model is on a GPU fails at the first epoch (and a host copy would synchronise). The tests
fake a two-rank NCCL world in one process (`world`, `get_backend` and the collectives patched)
and record the device of every tensor a collective receives: it must be the model's device,
whatever the backend says. On a CUDA machine the same test runs with the model on the GPU."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from trainables import lstm_mae_pretrain as mae
from trainables.runtime import distributed
from trainables.runtime.session import LocalSession

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def fake_nccl_world(monkeypatch):
    """Rank 0 of 2 under NCCL; each collective records its tensor's device and keeps rank 0's value."""
    seen: list[torch.device] = []
    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    monkeypatch.setattr(distributed, "wrap", lambda model, device, **_: model)  # DDP needs a real group
    monkeypatch.setattr(dist, "get_backend", lambda *_: "nccl")
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: seen.append(t.device))
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj] * len(out)))
    return seen


@pytest.mark.parametrize("device", DEVICES)
def test_pretraining_collectives_use_the_models_device(fake_nccl_world, tmp_path, device):
    cfg = {
        "data": "synthetic:ohlc?n=200&length=40&seed=0",
        "window_length": 40,
        "hidden_size": 8,
        "batch_size": 32,
        "aug_multiplier": 0,
        "patch_len": 10,
        "epochs": 1,
        "device": device,
    }
    final = mae.train(cfg, LocalSession(tmp_path))
    # the epoch's mean training loss, and both reductions of the parameter spread
    assert len(fake_nccl_world) == 3
    expected = torch.device(device, 0) if device == "cuda" else torch.device("cpu")
    assert set(fake_nccl_world) == {expected}
    assert "workers/param_spread" in final


@pytest.mark.parametrize("device", DEVICES)
def test_mean_and_spread_reduce_where_the_tensors_are(fake_nccl_world, device):
    model = torch.nn.Linear(3, 2).to(device)
    assert float(distributed.mean(torch.tensor(4.0, device=device))) == 2.0  # rank 0's value / 2 ranks
    assert distributed.param_spread(model) == 0.0
    assert {d.type for d in fake_nccl_world} == {device}


def test_one_worker_needs_no_collective():
    assert distributed.world() == (0, 1)
    t = torch.tensor([1.5, 2.5])
    assert distributed.mean(t) is t
    assert distributed.param_spread(torch.nn.Linear(2, 2)) == 0.0
