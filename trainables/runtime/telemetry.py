"""GPU telemetry of a trial: what it can honestly measure, under names that say whose it is.

- `gpu/process_mem_peak_mib`: the most GPU memory this trial's process held (torch's caching
  allocator, `max_memory_reserved`: what the process took from the device), on one device.
- `gpu/device_util_mean`, `gpu/device_util_peak` (percent) and `gpu/device_mem_peak_mib`: the
  *device's* utilisation and memory in use, sampled every 2 s in a background thread (NVML,
  `nvidia-ml-py`; without it the memory in use from `torch.cuda.mem_get_info`, and no
  utilisation). Device-wide: trials packed on one GPU see each other's load in them.
- `gpu/share`: the fraction of the device the trial asked for (`gpu: 0.25`); below 1 the
  device figures are shared with up to 1/share - 1 other trials.
- Data-parallel trials (`workers: N`): every rank samples its own device, and each report
  carries `gpu/rank<r>/...` for every rank and the aggregates (mean of the utilisations, max
  of the peaks) under the names above.

Only the trial's GPUs are read: Ray sets CUDA_VISIBLE_DEVICES to them, and its entries map to
NVML indices. On a machine without CUDA there is no sampler and the metrics are absent (not
zero).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol


class Source(Protocol):
    def sample(self) -> list[tuple[float | None, float]]:
        """One (device utilisation percent or None, device memory in use in MiB) per device."""


class NvmlSource:
    def __init__(self, indices: list[int]):
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]

    def sample(self) -> list[tuple[float | None, float]]:
        out = []
        for handle in self._handles:
            util = self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            mem = self._nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            out.append((float(util), float(mem)))
        return out


class TorchSource:
    """Memory in use on each of this process's devices (all processes' use: `cudaMemGetInfo`)."""

    def __init__(self, devices: list[int]):
        self.devices = devices

    def sample(self) -> list[tuple[float | None, float]]:
        import torch

        out = []
        for i in self.devices:
            free, total = torch.cuda.mem_get_info(i)
            out.append((None, (total - free) / 2**20))
        return out


def process_memory_mib(devices: list[int]) -> float:
    """The most memory this process's caching allocator held on one of `devices`, in MiB."""
    import torch

    return max((torch.cuda.max_memory_reserved(i) / 2**20 for i in devices), default=0.0)


def visible_gpu_indices() -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [int(v) for v in visible.split(",") if v.strip().isdigit()]


class GpuSampler:
    """Samples a source every `interval_s` in a daemon thread; `stats()` summarises so far."""

    def __init__(
        self,
        source: Source,
        interval_s: float = 2.0,
        process_memory: Callable[[], float] | None = None,
        share: float | None = None,
    ):
        self.source, self.interval_s = source, interval_s
        self.process_memory, self.share = process_memory, share
        self._utils: list[float] = []
        self._mem_peak = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="gpu-telemetry")

    def start(self) -> GpuSampler:
        self.sample_once()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def sample_once(self) -> None:
        try:
            samples = self.source.sample()
        except Exception as exc:  # noqa: BLE001 - telemetry must never break a trial; say why, stop sampling
            print(f"warning: GPU telemetry stopped: {exc}", flush=True)
            self._stop.set()
            return
        with self._lock:
            self._utils += [u for u, _ in samples if u is not None]
            self._mem_peak = max([self._mem_peak] + [m for _, m in samples])

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict:
        with self._lock:
            out = {"gpu/device_mem_peak_mib": self._mem_peak}
            if self._utils:
                out["gpu/device_util_mean"] = sum(self._utils) / len(self._utils)
                out["gpu/device_util_peak"] = max(self._utils)
        if self.process_memory is not None:
            out["gpu/process_mem_peak_mib"] = self.process_memory()
        if self.share is not None:
            out["gpu/share"] = self.share
        return out


def merge_ranks(per_rank: list[dict]) -> dict:
    """One report's telemetry of a data-parallel trial: every rank's figures under
    `gpu/rank<r>/`, and the aggregates under the single-process names (utilisation: mean over
    ranks; peaks and memory: the largest rank's; the share: the same on every rank)."""
    out: dict = {}
    for rank, stats in enumerate(per_rank):
        out.update({f"gpu/rank{rank}/{k.removeprefix('gpu/')}": v for k, v in stats.items()})
    keys = {k for stats in per_rank for k in stats}
    for key in keys:
        values = [s[key] for s in per_rank if key in s]
        out[key] = sum(values) / len(values) if key.endswith("util_mean") else max(values)
    return out


def for_this_trial(share: float | None = None, own_device_only: bool = False, interval_s: float = 2.0):
    """A started sampler of this trial's GPUs, or None without CUDA. `own_device_only`: the
    current device alone (a data-parallel rank; Ray Train shows each rank every GPU of its
    node's ranks and makes the rank's own the current device)."""
    import torch

    if not torch.cuda.is_available():
        return None
    local = [torch.cuda.current_device()] if own_device_only else list(range(torch.cuda.device_count()))
    visible = visible_gpu_indices()
    physical = [visible[i] for i in local] if visible and max(local) < len(visible) else local
    try:
        source: Source = NvmlSource(physical)
    except Exception as exc:  # noqa: BLE001 - no pynvml, or its own NVMLError types: fall back, say so
        print(f"note: NVML unavailable ({exc}); GPU telemetry records memory only", flush=True)
        source = TorchSource(local)
    return GpuSampler(source, interval_s, lambda: process_memory_mib(local), share).start()
