"""GPU telemetry of a trial: utilisation and memory of its own GPUs, sampled in the background.

Sources, in order: NVML (`nvidia-ml-py`, utilisation and memory of the device), else
`torch.cuda` (memory only). Only the trial's GPUs are read: Ray sets CUDA_VISIBLE_DEVICES to
them, and its entries map to NVML indices. On a machine without CUDA there is no sampler and
the metrics are absent (not zero).

Metrics merged into every report: `gpu/util_mean`, `gpu/util_peak` (percent, mean and max over
samples and devices), `gpu/mem_peak_mib` (the largest memory in use on one device).
"""

from __future__ import annotations

import os
import threading
from typing import Protocol


class Source(Protocol):
    def sample(self) -> list[tuple[float | None, float]]:
        """One (utilisation percent or None, memory used in MiB) per device."""


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
    def sample(self) -> list[tuple[float | None, float]]:
        import torch

        return [(None, torch.cuda.memory_reserved(i) / 2**20) for i in range(torch.cuda.device_count())]


def visible_gpu_indices() -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [int(v) for v in visible.split(",") if v.strip().isdigit()]


class GpuSampler:
    """Samples a source every `interval_s` in a daemon thread; `stats()` summarises so far."""

    def __init__(self, source: Source, interval_s: float = 2.0):
        self.source, self.interval_s = source, interval_s
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
            out = {"gpu/mem_peak_mib": self._mem_peak}
            if self._utils:
                out["gpu/util_mean"] = sum(self._utils) / len(self._utils)
                out["gpu/util_peak"] = max(self._utils)
            return out


def for_this_trial(interval_s: float = 2.0) -> GpuSampler | None:
    """A started sampler of this trial's GPUs, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        source: Source = NvmlSource(visible_gpu_indices() or list(range(torch.cuda.device_count())))
    except Exception as exc:  # noqa: BLE001 - no pynvml, or its own NVMLError types: fall back, say so
        print(f"note: NVML unavailable ({exc}); GPU telemetry records memory only", flush=True)
        source = TorchSource()
    return GpuSampler(source, interval_s).start()
