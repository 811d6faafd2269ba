"""GPU telemetry with a fake NVML source; on CPU nothing is sampled and nothing breaks."""

from __future__ import annotations

import pytest

from trainables.runtime import telemetry


class FakeNvml:
    def __init__(self, samples):
        self.samples = list(samples)

    def sample(self):
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]


def test_sampler_statistics_and_low_utilisation_flag():
    source = FakeNvml([[(20.0, 1000.0), (40.0, 3000.0)], [(30.0, 2000.0), (50.0, 2500.0)]])
    sampler = telemetry.GpuSampler(source, interval_s=3600)
    sampler.sample_once()
    sampler.sample_once()
    stats = sampler.stats()
    assert stats == {"gpu/mem_peak_mib": 3000.0, "gpu/util_mean": pytest.approx(35.0), "gpu/util_peak": 50.0}
    from orchestrator.analysis.report import low_utilisation

    flag = low_utilisation(stats["gpu/util_mean"], 60)
    assert flag.startswith("GPU utilisation 35% < 60%") and "batch" in flag and "data loading" in flag
    assert low_utilisation(75.0, 60) is None and low_utilisation(None, 60) is None


def test_memory_only_source_reports_no_utilisation():
    sampler = telemetry.GpuSampler(FakeNvml([[(None, 512.0)]]), interval_s=3600)
    sampler.sample_once()
    assert sampler.stats() == {"gpu/mem_peak_mib": 512.0}


def test_background_thread_samples_and_stops():
    sampler = telemetry.GpuSampler(FakeNvml([[(10.0, 1.0)]]), interval_s=0.01).start()
    import time

    time.sleep(0.1)
    sampler.stop()
    assert len(sampler._utils) >= 3


def test_a_failing_source_stops_sampling_without_raising(capsys):
    class Broken:
        def sample(self):
            raise RuntimeError("driver gone")

    sampler = telemetry.GpuSampler(Broken(), interval_s=3600)
    sampler.sample_once()
    assert "GPU telemetry stopped: driver gone" in capsys.readouterr().out
    assert sampler.stats() == {"gpu/mem_peak_mib": 0.0}


def test_visible_indices_follow_ray(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert telemetry.visible_gpu_indices() == [2, 5]


def test_cpu_machine_has_no_sampler():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this check is for CPU machines")
    assert telemetry.for_this_trial() is None
