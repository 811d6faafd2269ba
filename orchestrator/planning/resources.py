"""What a cluster offers and what a stage's trials take of it: GPU requests dropped on a cluster
without GPUs, and how many trials fit at once, node by node (fractional GPUs pack within a GPU,
a data-parallel trial's workers are one bundle each)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass

import trainables
from orchestrator.study.schema import Resources


@dataclass
class ClusterShape:
    """What the cluster offers: totals, and per node when known (`plan --cluster`)."""

    cpus: float
    gpus: float
    nodes: tuple = ()  # ((cpus, gpus), ...) per node; empty = one node with the totals
    name: str | None = None

    @property
    def node_list(self) -> tuple:
        return self.nodes or ((self.cpus, self.gpus),)

    @classmethod
    def local(cls) -> ClusterShape:
        return cls(cpus=float(os.cpu_count() or 1), gpus=float(_local_gpu_count()))


def _local_gpu_count() -> int:
    # Without importing torch (slow): CUDA_VISIBLE_DEVICES if set, else nvidia-smi -L.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def effective_resources(res: Resources, shape: ClusterShape) -> tuple[dict, str | None]:
    """Per-trial Ray resources on this cluster; GPU requests are dropped (with a note) without GPUs."""
    gpu = res.gpu
    note = None
    if gpu > 0 and shape.gpus <= 0:
        note = f"cluster has no GPUs: dropping gpu={gpu} per trial, trials run on CPU"
        gpu = 0.0
    return {"cpu": res.cpu * res.workers, "gpu": gpu * res.workers, "workers": res.workers}, note


def concurrency(res: dict, shape: ClusterShape, limit: int | None) -> int:
    """How many trials of a stage fit on the cluster at once, node by node: a trial's resources
    (one bundle per data-parallel worker) cannot be split across nodes below one worker, so
    4 x 0.3 GPU fit 3 per GPU, not 3.33, and 8-GPU nodes hold 2 trials of gpu: 4 each."""
    workers = res.get("workers", 1)
    cpu, gpu = res["cpu"] / workers, res["gpu"] / workers
    bundles = 0
    for node_cpus, node_gpus in shape.node_list:
        fits = [math.floor(node_cpus / cpu + 1e-9)] if cpu > 0 else []
        if gpu > 0:
            # fractional GPUs pack within one GPU: floor(1 / gpu) trials per GPU
            per_gpu = math.floor(1 / gpu + 1e-9) if gpu < 1 else 1 / gpu
            fits.append(math.floor(math.floor(node_gpus + 1e-9) * per_gpu + 1e-9))
        bundles += min(fits) if fits else 1
    n = bundles // workers if workers > 1 else bundles
    if limit:
        n = min(n, limit)
    return max(n, 0)


def trial_charge(res: dict, trainable: trainables.Trainable, config: dict) -> dict[str, float]:
    """What one trial is charged per hour of its wall time: the CPUs and GPUs it holds on this
    cluster (`effective_resources`: its own, or its data-parallel workers'), plus those it starts
    itself (a `retrieval_eval` trial's Ray Data actors: `Trainable.started_resources`)."""
    started = trainable.started_resources(config)
    return {"cpu": res["cpu"] + started["cpu"], "gpu": res["gpu"] + started["gpu"]}
