"""GPU telemetry with a fake NVML source: names that say whose figure it is (the process's memory,
the device's utilisation, the trial's share of the device), per-rank figures of data-parallel
trials; on CPU nothing is sampled and nothing breaks."""

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
    sampler = telemetry.GpuSampler(source, interval_s=3600, process_memory=lambda: 812.5, share=0.25)
    sampler.sample_once()
    sampler.sample_once()
    stats = sampler.stats()
    assert stats == {
        "gpu/device_mem_peak_mib": 3000.0,
        "gpu/device_util_mean": pytest.approx(35.0),
        "gpu/device_util_peak": 50.0,
        "gpu/process_mem_peak_mib": 812.5,
        "gpu/share": 0.25,
    }
    from orchestrator.analysis.report import low_utilisation

    flag = low_utilisation(stats["gpu/device_util_mean"], 60)
    assert flag.startswith("GPU utilisation 35% < 60%") and "batch" in flag and "data loading" in flag
    assert "shared" in low_utilisation(35.0, 60, share=0.25) and "shared" not in low_utilisation(35.0, 60, share=1)
    assert low_utilisation(75.0, 60) is None and low_utilisation(None, 60) is None


def test_data_parallel_ranks_are_reported_each_and_aggregated():
    ranks = [
        {"gpu/device_util_mean": 80.0, "gpu/device_util_peak": 95.0, "gpu/process_mem_peak_mib": 900.0},
        {"gpu/device_util_mean": 40.0, "gpu/device_util_peak": 99.0, "gpu/process_mem_peak_mib": 1200.0},
    ]
    merged = telemetry.merge_ranks(ranks)
    assert merged["gpu/rank0/device_util_mean"] == 80.0 and merged["gpu/rank1/process_mem_peak_mib"] == 1200.0
    assert merged["gpu/device_util_mean"] == 60.0  # the mean over ranks
    assert merged["gpu/device_util_peak"] == 99.0 and merged["gpu/process_mem_peak_mib"] == 1200.0
    assert len(merged) == 9


def test_memory_only_source_reports_no_utilisation():
    sampler = telemetry.GpuSampler(FakeNvml([[(None, 512.0)]]), interval_s=3600)
    sampler.sample_once()
    assert sampler.stats() == {"gpu/device_mem_peak_mib": 512.0}


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
    assert sampler.stats() == {"gpu/device_mem_peak_mib": 0.0}


def test_visible_indices_follow_ray(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert telemetry.visible_gpu_indices() == [2, 5]


def test_cpu_machine_has_no_sampler():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this check is for CPU machines")
    assert telemetry.for_this_trial() is None
