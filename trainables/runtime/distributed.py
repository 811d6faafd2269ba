"""Data parallelism inside a trainable (a trial with `workers: N` runs N Ray Train workers,
whose process group Ray Train has initialised: gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel over the process group, or the model itself on one worker.
    `find_unused_parameters` for models with trainable parameters outside the loss's graph
    (e.g. a transformer's pooler that mean pooling never uses)."""
    if world()[1] == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=find_unused_parameters
    )


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard(index: torch.Tensor) -> torch.Tensor:
    """This rank's share of a (shuffled, identical on every rank) index: every rank gets the same
    number of items (the remainder is dropped), so all ranks run the same number of steps, as
    DDP's gradient all-reduce requires."""
    rank, size = world()
    if size == 1:
        return index
    per_rank = len(index) // size
    return index[rank * per_rank : (rank + 1) * per_rank]


def gather(obj) -> list:
    """Every rank's `obj`, on every rank (for small records such as placements)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out = [None] * size
    dist.all_gather_object(out, obj)
    return out


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean over all ranks of a per-rank tensor, reduced where it lives: on the model's device
    (NCCL reduces CUDA tensors only, gloo CPU ones, and a trial's model is on CUDA exactly when
    its process group is NCCL). No host synchronisation: the caller reads the result once."""
    if world()[1] == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / world()[1]


def param_spread(model: nn.Module) -> float:
    """The largest difference between ranks of any parameter tensor's sum (0.0 on one worker).

    DDP keeps every rank's replica identical; a nonzero spread means the gradients were not
    synchronised (a model trained on each rank's shard alone), which a metric computed on rank
    0 would not show. Called once at the end of training (one collective per parameter tensor
    would be too many in a training step)."""
    if world()[1] == 1:
        return 0.0
    sums = torch.stack([p.detach().double().sum() for p in unwrap(model).parameters()])  # on the model's device
    high, low = sums.clone(), sums.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).abs().max())


def placement() -> dict:
    """Where this process runs: Ray node, the GPU ids Ray assigned it, CUDA_VISIBLE_DEVICES."""
    import os
    import socket

    out = {
        "rank": world()[0],
        "hostname": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    try:
        import ray

        if ray.is_initialized():
            out.update(node_id=ray.get_runtime_context().get_node_id(), gpu_ids=[str(g) for g in ray.get_gpu_ids()])
    except ImportError:
        pass
    return out
