"""The spend cap (`budget:`): refused before Ray starts when the estimate crosses it, the gate
that stops new trials, a run stopped mid-stage with its trials `interrupted (budget)`, and
`resume --budget` completing them with every epoch once."""

from __future__ import annotations

import json
import textwrap
import time
from types import SimpleNamespace

import pandas as pd
import pytest
from ray.tune.search.basic_variant import BasicVariantGenerator
from rich.console import Console

from orchestrator.errors import UserError
from orchestrator.execution.budget_guard import BudgetGuard
from orchestrator.execution.stage_runner import _LIVE_RECORDERS, GatedVariants
from orchestrator.planning.budget import Cap, Spend, cap_of, check_start, over_estimate
from orchestrator.planning.costs import Prices
from orchestrator.study.schema import Budget
from tests.conftest import run_here
from tests.execution.test_notify import Hook

PRICED = Prices(gpu=4.0, cpu=0.5)


def test_spend_against_the_cap_in_money_and_gpu_hours():
    cap = Cap(usd=100.0, gpu_hours=30.0, prices=PRICED)
    assert cap.exceeded_by(Spend(gpu_hours=24.0, cpu_hours=7.9)) is None  # $99.95
    assert "$100.00 >= the $100.00 cap" in cap.exceeded_by(Spend(gpu_hours=24.0, cpu_hours=8.0))
    assert "GPU-hour cap" in Cap(None, 30.0, Prices()).exceeded_by(Spend(gpu_hours=30.0))
    # an estimate may use the whole cap; spend that reaches it stops the study
    assert cap.exceeded_by(Spend(gpu_hours=25.0), reached=False) is None
    assert cap.spent_text(Spend(gpu_hours=2.0, cpu_hours=4.0)) == "$10.00 of $100.00, 2 of 30 GPU-hours"


def test_caps_and_prices_come_from_the_file_the_price_list_and_the_command_line():
    budget = Budget(usd=250, gpu_price="p4d-a100-ondemand", cpu_price=0.05)
    cap = cap_of(budget, "s.yaml")
    assert (cap.usd, cap.prices.gpu, cap.prices.gpu_key, cap.prices.cpu) == (250, 4.10, "p4d-a100-ondemand", 0.05)
    # --gpu-price and --budget replace the file's; a stored cap (resume) replaces the file's too
    cap = cap_of(budget, "s.yaml", gpu_price="runpod-h100-80gb", usd=400)
    assert (cap.usd, cap.prices.gpu, cap.prices.cpu) == (400, 2.99, 0.05)
    stored = Cap(300.0, None, Prices(gpu=1.0))
    assert cap_of(budget, "s.yaml", stored=stored) == stored
    assert cap_of(None, "s.yaml") is None
    with pytest.raises(UserError, match=r"s.yaml: budget.usd: a USD cap needs a price"):
        cap_of(Budget(usd=10), "s.yaml")
    with pytest.raises(UserError, match=r"unknown GPU price 'a100-free'.*p4d-a100-ondemand"):
        cap_of(Budget(usd=10, gpu_price="a100-free"), "s.yaml")
    assert cap_of(Budget(gpu_hours=5), "s.yaml").gpu_hours == 5  # GPU-hours need no price
    with pytest.raises(ValueError, match="give usd, gpu_hours or both"):
        Budget(gpu_price=1.0)


def test_a_run_is_refused_when_spent_plus_the_estimate_of_what_is_left_crosses_the_cap():
    cap = Cap(usd=100.0, gpu_hours=None, prices=PRICED)
    rows = {"stages": [{"stage": "a", "trials": 4, "estimate": {"gpu_hours": 20.0, "cpu_hours": 0.0}}]}
    assert "estimate of the rest: $80.00" in check_start(cap, rows, {}, "s.yaml", over_budget=False)
    # two of the four trials ended, having spent $60: 60 + 40 left = 100, within the cap
    spent = {"t1": {"status": "done", "gpu_s": 7.5 * 3600}, "t2": {"status": "error", "gpu_s": 7.5 * 3600}}
    assert check_start(cap, rows, {"a": {"trials": spent}}, "s.yaml", over_budget=False)
    spent["t2"]["gpu_s"] = 10 * 3600  # $70 + $40
    with pytest.raises(UserError, match=r"over budget: the estimate \$110.00 > the \$100.00 cap"):
        check_start(cap, rows, {"a": {"trials": spent}}, "s.yaml", over_budget=False)
    assert "--over-budget" in check_start(cap, rows, {"a": {"trials": spent}}, "s.yaml", over_budget=True)
    spent["t2"]["gpu_s"] = 20 * 3600  # spent alone reaches the cap: refused even with --over-budget
    with pytest.raises(UserError, match="has spent its budget"):
        check_start(cap, rows, {"a": {"trials": spent}}, "s.yaml", over_budget=True)
    assert over_estimate(cap, None) is None  # no estimate: nothing to refuse on


def test_the_gate_closes_when_the_running_trials_would_cross_the_cap(monkeypatch):
    spent = {"t1": {"status": "done", "gpu_s": 3600.0}}  # $4
    recorder = SimpleNamespace(
        plan=SimpleNamespace(name="gated"),
        record={"trials": spent},
        live_spend=lambda: Spend(gpu_hours=1.0),
        running=lambda: True,
        running_need=lambda: Spend(gpu_hours=1.5),  # $6 more: $10
        guard=None,
    )
    store = SimpleNamespace(write_text=lambda *a, **k: None, exists=lambda *a: False, uri="mem://study")
    guard = BudgetGuard(Cap(10.0, None, PRICED), store, {}, Console(file=None, quiet=True))
    monkeypatch.setitem(_LIVE_RECORDERS, "gated", recorder)  # as run_stage registers it
    guard.begin(recorder)
    variants = GatedVariants("gated")
    calls = []
    monkeypatch.setattr(BasicVariantGenerator, "next_trial", lambda self: calls.append(1) or "a trial")
    try:
        assert not guard.may_start() and variants.next_trial() is None and not calls
        recorder.running_need = lambda: Spend(gpu_hours=1.0)  # $8: open, once re-evaluated
        guard._gate = (-1.0, True)
        assert guard.may_start() and variants.next_trial() == "a trial"
        recorder.running = lambda: False  # nothing runs: open (else Tune would wait for a trial)
        recorder.running_need = lambda: Spend(gpu_hours=9.0)
        guard._gate = (time.monotonic(), False)
        assert guard.may_start()
    finally:
        guard.end(recorder)
    assert recorder.guard is None  # the stage's gate is detached from the guard


def _study(folder, *, usd: float, extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        name: capped
        storage: {folder / "runs"}
        defaults: {{seeds: [1, 2, 3], resources: {{cpu: 1}}}}
        budget: {{usd: {usd}, cpu_price: 3600}}   # $1 per CPU-second: a cap reached in seconds
        {extra}
        stages:
          pretrain:
            trainable: lstm_mae_pretrain
            config: {{data: "synthetic:ohlc?n=120&length=40&seed=0", window_length: 40, epochs: 150,
                     hidden_size: 8, batch_size: 32, aug_multiplier: 1, patch_len: 8,
                     early_stopping_patience: null}}
            select: {{metric: val/masked_mse, mode: min}}
            expected_trial_minutes: 0.05
        """
    )


def test_a_study_over_its_budget_is_refused_before_ray_starts(without_ray, tmp_path, cli):
    import ray

    study = tmp_path / "study.yaml"
    study.write_text(_study(tmp_path, usd=5))  # 3 trials x 3 s x $1: $9
    code, out, err = cli("plan", study)
    assert code == 2 and err.strip().count("\n") == 0, out + err
    assert "budget: over budget: the estimate $9.00 > the $5.00 cap" in err and "--over-budget" in err
    code, out, err = cli("plan", study, "--over-budget")
    assert code == 0 and "over: the estimate $9.00" in out, out + err
    code, out, err = cli("run", study)
    assert code == 2 and "over budget" in err and err.strip().count("\n") == 0, out + err
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()
    study.write_text(_study(tmp_path, usd=5).replace("cpu_price: 3600", "cpu_price: c7i-spot"))
    code, out, err = cli("validate", study)
    assert code == 2 and "budget.cpu_price: unknown CPU price 'c7i-spot'" in err and "c7i-ondemand" in err, err


@pytest.mark.e2e
def test_cap_reached_mid_run_stops_trials_that_resume_completes_with_every_epoch_once(tmp_path):
    hook = Hook()
    try:
        notify = "notify: {webhooks: ['${env:BUDGET_HOOK}'], events: [budget], format: json}"
        # 150 epochs take 4-10 s a trial here; two run at once: $4 is reached inside the first two
        (tmp_path / "study.yaml").write_text(_study(tmp_path, usd=4, extra=notify))
        env = {"BUDGET_HOOK": hook.url}
        run = run_here("run", "study.yaml", "--num-cpus", "2", "--over-budget", cwd=tmp_path, env=env)
    finally:
        hook.close()
    out = run.stdout + run.stderr
    assert run.returncode == 3, out
    assert "budget: stopping the study: the cap is reached: spent $" in out
    assert "resume" in out and "--budget USD" in out
    root = tmp_path / "runs" / "capped"
    first = pd.read_parquet(root / "results.parquet")
    stopped = first[first["status"] == "interrupted (budget)"]
    assert len(stopped) >= 1, first[["trial", "status"]]
    saved = json.loads((root / "_orchestrator" / "budget.json").read_text())
    assert saved["stopped"].startswith("the cap is reached") and saved["spent"]["usd"] >= 4.0
    assert [e["event"] for e in hook.received] == ["budget"], hook.received

    status = run_here("status", root, cwd=tmp_path)
    assert "interrupted (budget)" in status.stdout and "budget: spent $" in status.stdout, status.stdout
    # `resume` from a shell without the webhook's secret: notifications off, the study continues
    again = run_here("resume", root, cwd=tmp_path)  # the stored cap: still spent
    assert again.returncode == 2 and "has spent its budget" in again.stderr, again.stdout + again.stderr

    resumed = run_here("resume", root, "--num-cpus", "2", "--budget", "100", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "notifications to ${env:BUDGET_HOOK} are off: environment variable BUDGET_HOOK is not set" in resumed.stdout
    final = pd.read_parquet(root / "results.parquet")
    assert set(final["status"]) == {"done"} and len(final) == 3
    for tid in stopped["trial_id"]:  # continued from their checkpoints, each epoch once
        epochs = pd.read_csv(root / "pretrain" / tid / "metrics.csv")["epoch"]
        assert list(epochs) == list(range(1, 151))
    results = run_here("results", root, cwd=tmp_path)
    assert "Budget: spent $" in results.stdout and "of $100.00" in results.stdout
    assert run_here("report", root, cwd=tmp_path).returncode == 0  # priced by the budget's prices
    report = (root / "report" / "report.md").read_text()
    assert "Budget: spent $" in report and "CPU $3600/CPU-hour" in report
    assert json.loads((root / "_orchestrator" / "budget.json").read_text())["stopped"] is None


def test_a_trials_wall_time_adds_every_attempt_and_runs_up_to_now(monkeypatch):
    """What a budget counts: the driver's clock from each attempt's start to its end, summed over
    attempts and runs (a retry repeats paid work), running attempts up to now."""
    from orchestrator.execution import recorder as recorder_module
    from orchestrator.execution.recorder import StageRecorder

    now = [1000.0]
    monkeypatch.setattr(recorder_module.time, "monotonic", lambda: now[0])
    rec = StageRecorder.__new__(StageRecorder)  # only the wall-time bookkeeping
    rec.resources, rec._attempts = {"gpu": 2.0, "cpu": 4.0}, {}
    rec.record = {"trials": {"t": {"status": "running", "wall_s": 100.0, "duration_s": 90.0}}}
    trial = SimpleNamespace(path="/runs/s/pre/t", trial_id="t_00000")
    rec._open(trial)
    now[0] = 1030.0
    assert rec.running() and rec.live_spend() == Spend(gpu_hours=260 / 3600, cpu_hours=520 / 3600)
    rec._close(trial)  # the attempt failed: its 30 s count
    now[0] = 1100.0  # waiting for the retry costs nothing
    rec._open(trial)
    now[0] = 1110.0
    assert rec.live_spend() == Spend(gpu_hours=280 / 3600, cpu_hours=560 / 3600)
    rec._close(trial)
    assert rec.record["trials"]["t"]["wall_s"] == 140.0 and not rec.running()
    # never less than Tune's own time for the trial (records written before attempts were timed)
    assert rec._wall_s("u", {}, {"time_total_s": 50.0}) == 50.0
