"""Search stages through a real local Ray (in-process, module-scoped): samplers, ASHA, PBT."""

from __future__ import annotations

import pandas as pd
import pytest
from rich.console import Console

from orchestrator.execution.ray_start import RunOptions
from orchestrator.planning.expand import load_plan
from tests.conftest import TINY_STAGE, run_study_in_process

pytestmark = pytest.mark.e2e


def _run(path, storage):
    plan = load_plan(path)
    console = Console(width=200, record=True)
    code = run_study_in_process(path, storage, console)
    return code, pd.read_parquet(storage / plan.study.name / "results.parquet"), console.export_text()


@pytest.mark.parametrize("scheduler", ["fifo", "asha", "pbt"])
def test_search_stage_samples_the_space(ray_local, tmp_path, scheduler):
    extra = {"fifo": "", "asha": "grace_period: 1", "pbt": "perturbation_interval: 1"}[scheduler]
    path = tmp_path / "study.yaml"
    path.write_text(
        f"name: search-{scheduler}\nstages:\n  pretrain:\n"
        + TINY_STAGE
        + "    search:\n"
        + "      space: {lr: {loguniform: [1.0e-4, 1.0e-2]}, mask_strategy: {choice: [random, block]}}\n"
        + f"      num_samples: 3\n      scheduler: {scheduler}\n      scheduler_config: {{{extra}}}\n"
        + "    select: {metric: val/loss, mode: min}\n"
    )
    code, df, out = _run(path, tmp_path / "runs")
    assert code == 0, out
    assert len(df) == 3 and df["trial_id"].is_unique
    assert set(df["status"]) <= {"done"}
    assert df["config.lr"].between(1e-4, 1e-2).all()
    assert set(df["config.mask_strategy"]) <= {"random", "block"}
    if scheduler == "fifo":
        assert df["config.lr"].nunique() == 3  # three independent samples


@pytest.mark.parametrize(
    "cores,trials,cpu,expected",
    [
        (2, 4, 1, True),  # this machine: both prestarted workers run trials
        (32, 4, 1, False),  # a 32-core pod with 4 trials: 28 idle workers would hold torch
        (32, 64, 1, True),
        (32, 64, 4, False),  # 8 trials at a time on 32 cores
    ],
)
def test_torch_is_preloaded_only_when_every_prestarted_worker_runs_a_trial(
    tmp_path, monkeypatch, cores, trials, cpu, expected
):
    from orchestrator.execution import ray_start

    monkeypatch.setattr(ray_start.os, "cpu_count", lambda: cores)
    seeds = ", ".join(str(s) for s in range(trials))
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: warm\nstorage: ./runs\ndefaults: {{seeds: [{seeds}], resources: {{cpu: {cpu}}}}}\n"
        "stages:\n  pretrain:\n" + TINY_STAGE
    )
    sp = load_plan(study, check_inputs=False).stages["pretrain"]
    assert ray_start.preload_pays(sp, RunOptions()) is expected


def test_stage_trainable_is_named_for_the_dashboard_and_keeps_its_resources():
    from orchestrator.execution import stage_runner

    cls = stage_runner.stage_trainable("quickstart", "pretrain", {"cpu": 1, "gpu": 0.25})
    assert repr(cls.__new__(cls)) == "quickstart/pretrain"  # the actors' repr in the Ray dashboard
    request = cls.default_resource_request({})
    assert request.required_resources == {"CPU": 1, "GPU": 0.25}
