"""What a study is charged, and that the charge survives: the GPUs of the actors a trial starts,
a USD cap that needs a GPU price, the spend of a driver killed mid-stage read back by `resume`,
and a paused trial that costs nothing while it waits."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from orchestrator.planning.budget import Spend, spent_so_far
from orchestrator.storage.store import Store
from tests.conftest import run_here
from tests.execution.test_faults import _popen

EVALUATION = """\
name: charged
{budget}
stages:
  evaluate:
    trainable: retrieval_eval
    resources: {{cpu: 1{gpu}}}
    expected_trial_minutes: 60
    config:
      beir: ["synthetic:beir?docs=120&queries=5&seed=3"]
      encode_workers: 2
      worker_gpus: 1
      worker_cpus: 3
"""


def test_the_actors_a_trial_starts_are_charged_in_the_estimate(without_ray, tmp_path, cli):
    study = tmp_path / "study.yaml"
    study.write_text(EVALUATION.format(budget="", gpu=""))
    code, out, err = cli("plan", study, "--gpus", "8", "--json")
    assert code == 0, out + err
    stage = json.loads(out)["stages"][0]
    # one trial for an hour: its own CPU, and two actors of 3 CPUs and 1 GPU each
    assert stage["rows"][0]["charged"] == {"cpu": 7.0, "gpu": 2.0}
    assert stage["estimate"]["gpu_hours"] == pytest.approx(2.0)
    assert stage["estimate"]["cpu_hours"] == pytest.approx(7.0)
    assert stage["started"] == {"cpu": 6.0, "gpu": 2.0}
    code, out, err = cli("plan", study, "--gpus", "8")
    assert "also starts up to 6 CPU + 2 GPU of actors" in out, out
    # on this machine (no GPU) such actors would wait forever: refused before Ray starts
    import ray

    code, out, err = cli("run", study, "--storage", tmp_path / "runs")
    assert code == 2 and err.strip().count("\n") == 0, out + err
    assert "starts actors that ask for GPUs (worker_gpus), and this machine has none" in err
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("gpu", [", gpu: 1", ""])  # the trial's own GPU, or only its actors'
def test_a_usd_cap_on_a_gpu_study_needs_a_gpu_price(tmp_path, cli, gpu):
    study = tmp_path / "study.yaml"
    study.write_text(EVALUATION.format(budget="budget: {usd: 100, cpu_price: 0.05}", gpu=gpu))
    for command in ("validate", "plan"):
        code, out, err = cli(command, study)
        assert code == 2 and err.strip().count("\n") == 0, out + err
        assert "budget.gpu_price: a USD cap on a study whose trials use GPUs needs a GPU price" in err
    study.write_text(EVALUATION.format(budget="budget: {usd: 100, cpu_price: 0.05, gpu_price: 2.5}", gpu=gpu))
    code, out, err = cli("plan", study, "--gpus", "8", "--json")
    gpu_hours = 3.0 if gpu else 2.0  # the trial's own GPU and its two actors'
    assert code == 0 and json.loads(out)["estimate"]["cost_usd"] == pytest.approx(gpu_hours * 2.5 + 0.05 * 7), err
    # a study on CPUs only needs no GPU price
    study.write_text(
        EVALUATION.format(budget="budget: {usd: 100, cpu_price: 0.05}", gpu="").replace("worker_gpus: 1", "")
    )
    code, out, err = cli("validate", study)
    assert code == 0, out + err


def test_spent_so_far_is_the_larger_of_the_records_and_the_budget_file(tmp_path):
    store = Store(str(tmp_path))
    records = {"a": {"trials": {"t": {"gpu_s": 3600.0, "cpu_s": 7200.0}}}, "b": None}
    assert spent_so_far(store, records) == Spend(1.0, 2.0)
    saved = {"cap": {}, "spent": {"usd": 9.0, "gpu_hours": 1.5, "cpu_hours": 1.0}}
    store.write_text(json.dumps(saved), "_orchestrator", "budget.json")
    assert spent_so_far(store, records) == Spend(1.5, 2.0)


def test_a_paused_trial_is_not_charged_while_it_waits(monkeypatch):
    """PBT pauses trials (their actor is released) and runs them again later: only the time they
    run is charged."""
    from orchestrator.execution import recorder as recorder_module
    from orchestrator.execution.recorder import StageRecorder

    now = [0.0]
    monkeypatch.setattr(recorder_module.time, "monotonic", lambda: now[0])
    rec = StageRecorder.__new__(StageRecorder)
    rec.resources, rec._attempts = {"gpu": 1.0, "cpu": 1.0}, {}
    rec.record = {"trials": {"t": {"status": "running", "charged": {"gpu": 1.0, "cpu": 1.0}}}}
    trial = SimpleNamespace(path="/runs/s/pbt/t", trial_id="t_00000", status="RUNNING")
    rec._open(trial)
    now[0] = 10.0
    rec._pauses([trial])  # still running: nothing closes
    assert rec.running()
    trial.status = "PAUSED"
    rec._pauses([trial])
    now[0] = 500.0  # paused for a long while
    assert not rec.running() and rec.live_spend() == Spend(10 / 3600, 10 / 3600)
    trial.status = "RUNNING"
    rec._open(trial)  # Tune starts it again
    now[0] = 505.0
    assert rec.live_spend() == Spend(15 / 3600, 15 / 3600)


@pytest.mark.e2e
def test_the_spend_of_a_killed_driver_is_read_back_by_resume(tmp_path):
    """The OOM killer or a preemption kills the driver mid-stage: what it had spent is in storage
    (the stage record at every trial end and every 30 s, the budget file every 10 s), and
    `resume` starts from at least that, never from nothing."""
    (tmp_path / "study.yaml").write_text(
        textwrap.dedent(
            """\
            name: durable
            storage: ./runs
            defaults: {seeds: [1, 2, 3, 4], resources: {cpu: 1}}
            budget: {usd: 100000, cpu_price: 3600}   # $1 per CPU-second
            stages:
              pretrain:
                trainable: lstm_mae_pretrain
                config: {data: "synthetic:ohlc?n=120&length=40&seed=0", window_length: 40, epochs: 250,
                         hidden_size: 8, batch_size: 32, aug_multiplier: 1, patch_len: 8,
                         early_stopping_patience: null}
            """
        )
    )
    proc = _popen(["run", "study.yaml", "--num-cpus", "2"], tmp_path)
    root = tmp_path / "runs" / "durable"
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if sum(ln.startswith("done") for ln in lines) >= 1:
            break
    time.sleep(3)  # the other trials run on, spending
    before = json.loads((root / "_orchestrator" / "budget.json").read_text())["spent"]["usd"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert before > 3.0, "".join(lines)  # one trial's run at least
    time.sleep(2)  # the killed driver's local Ray shuts down

    resumed = run_here("resume", root, "--num-cpus", "2", cwd=tmp_path, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    so_far = next(ln for ln in resumed.stdout.splitlines() if "spent so far" in ln)
    spent_at_start = float(so_far.split("spent so far $")[1].split(" ")[0].replace(",", ""))
    assert spent_at_start >= before, so_far
    final = json.loads((root / "_orchestrator" / "budget.json").read_text())["spent"]["usd"]
    table = pd.read_parquet(root / "results.parquet")
    assert set(table["status"]) == {"done"} and final > spent_at_start
    # the tables' hours are the same figures as the budget's (less what the killed run had not
    # yet written into a record: at most the seconds between its last two saves)
    assert table["cpu_hours"].sum() * 3600 <= final + 1e-6


def test_the_record_charges_a_trial_its_actors_gpus(monkeypatch):
    """What `results` shows is the record's gpu_s: a retrieval_eval trial of 1 CPU with two actors
    of 1 GPU each is charged 2 GPUs for its whole wall time (on this CPU machine the same trial
    is refused before it starts: its actors could not be placed)."""
    from orchestrator.analysis.trials_table import build_table
    from orchestrator.execution import recorder as recorder_module
    from orchestrator.execution.recorder import StageRecorder
    from orchestrator.execution.trial import trial_config

    now = [100.0]
    monkeypatch.setattr(recorder_module.time, "monotonic", lambda: now[0])
    rec = StageRecorder.__new__(StageRecorder)
    import trainables

    rec.plan = SimpleNamespace(
        name="evaluate",
        stage=SimpleNamespace(trainable="retrieval_eval", select=None),
        trainable=trainables.resolve("retrieval_eval"),
    )
    rec.store = Store("/tmp/nowhere/study")
    rec.resources, rec._attempts, rec.deleted, rec._started, rec.code = {"cpu": 1.0, "gpu": 0.0}, {}, set(), set(), None
    rec.record = {"stage": "evaluate", "select": None, "trials": {}}
    config = {"beir": ["b"], "encode_workers": 2, "worker_gpus": 1.0, "worker_cpus": 1.0}
    manager = SimpleNamespace(best_checkpoint_result=None, latest_checkpoint_result=None)
    trial = SimpleNamespace(
        config={"trial": {"variant": "base", "seed": 0, "config": config, "storage": "/tmp/nowhere/study"}},
        last_result={"time_total_s": 10.0},
        status="RUNNING",
        checkpoint=None,
        run_metadata=SimpleNamespace(checkpoint_manager=manager),
        path="/tmp/nowhere/study/evaluate/t1",
        trial_id="t1_00000",
        trial_name="evaluate/base/s0",
        num_failures=0,
    )
    assert trial_config(trial.config)["encode_workers"] == 2
    rec._open(trial)
    now[0] = 100.0 + 3600.0  # an hour
    entry = rec._update(trial, "running")
    assert entry["charged"] == {"cpu": 3.0, "gpu": 2.0}
    assert entry["gpu_s"] == pytest.approx(2 * 3600.0) and entry["cpu_s"] == pytest.approx(3 * 3600.0)
    assert rec.live_spend() == Spend(2.0, 3.0)
    table = build_table([rec.record])
    assert table["gpu_hours"].tolist() == [pytest.approx(2.0)]
