"""End to end through the real CLI process and a real local Ray: run, re-run, interrupt, inspect,
trackers. One finished study (a module fixture) serves the tests that only read it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import REPO, TINY_STAGE, run_cli, run_here
from tests.execution.test_faults import _stopped_at, _went_on_from_checkpoint

pytestmark = pytest.mark.e2e

STUDY = (
    """\
name: e2e
storage: {storage}
defaults: {seeds: [1, 2]}
callbacks: [tensorboard, {mlflow: {tracking_uri: {mlruns}}}]
stages:
  pretrain:
"""
    + TINY_STAGE
    + """\
    variants:
      patch: {mask_strategy: patch}
      block: {mask_strategy: block}
    select: {metric: val/masked_mse, mode: min}
"""
)


def _study(folder) -> str:
    return STUDY.replace("{storage}", str(folder / "runs")).replace("{mlruns}", str(folder / "mlruns"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The study run once: (its folder, the `run` process)."""
    folder = tmp_path_factory.mktemp("e2e")
    (folder / "study.yaml").write_text(_study(folder))
    proc = run_cli("run", folder / "study.yaml", cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder, proc


def test_run_writes_tables_checkpoints_artifacts_and_rerun_skips(finished):
    tmp_path, proc = finished
    study = tmp_path / "study.yaml"
    root = tmp_path / "runs" / "e2e"
    df = pd.read_parquet(root / "results.parquet")
    assert len(df) == 4 and set(df["status"]) == {"done"}
    assert set(df["config.mask_strategy"]) == {"patch", "block"}
    assert df["best.val/masked_mse"].notna().all()
    assert not [c for c in df.columns if "gpu/" in c]  # CPU: telemetry fields absent, not zero
    assert (root / "results.csv").exists() and (root / "results.md").read_text().startswith("## pretrain")
    for _, row in df.iterrows():
        trial_dir = root / "pretrain" / row["trial_id"]
        assert (trial_dir / "metadata.json").exists() and (trial_dir / "metrics.csv").exists()
        meta = json.loads((trial_dir / "metadata.json").read_text())
        assert meta["trial_id"] == row["trial_id"] and meta["config"]["seed"] == row["seed"]
        ckpts = sorted(trial_dir.glob("checkpoint_*"))
        assert ckpts and (ckpts[-1] / "state.pt").exists() and (ckpts[-1] / "encoder.pt").exists()
        assert row["checkpoint"] == str(ckpts[-1])
    assert "pretrain/patch/s1" in proc.stdout  # results table printed

    again = run_cli("run", study, cwd=tmp_path)
    assert again.returncode == 0
    assert "complete in storage, skipped" in again.stdout
    assert "started a local Ray" not in again.stdout  # nothing to run: Ray not even started

    # the reading commands in this process (`run_here`: the CLI without a new interpreter)
    code = run_here("results", root, "--format", "csv", cwd=tmp_path)
    assert code.returncode == 0 and len(code.stdout.strip().splitlines()) == 5
    status = run_here("status", root, cwd=tmp_path)
    assert status.returncode == 0 and "complete" in status.stdout

    # plan with measured durations of this run of the same trainable
    planned = json.loads(
        run_here(
            "plan", study, "--history", root, "--json", "--gpus", "1", "--gpu-price", "runpod-rtx4090", cwd=tmp_path
        ).stdout
    )
    estimate = planned["stages"][0]["estimate"]
    assert estimate["source"] == "measured"
    assert estimate["trial_minutes"] == pytest.approx(df["duration_s"].median() / 60)
    assert planned["estimate"]["cost_usd"] == pytest.approx(estimate["gpu_hours"] * 0.69)

    # the aggregate over seeds: 2 variants x 2 seeds
    agg = pd.read_parquet(root / "aggregate.parquet")
    assert sorted(agg["variant"]) == ["block", "patch"] and (agg["n"] == 2).all()
    latex = run_here("results", root, "--format", "latex", cwd=tmp_path).stdout
    assert latex.count("{") == latex.count("}") and r"\toprule" in latex and r"\textbf{" in latex
    rep = run_here("report", root, "--gpu-price", "runpod-rtx4090", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    text = (root / "report" / "report.md").read_text()
    for section in ("## Plan", "## Results", "over seeds", "## Learning curves", "## Time and cost", "## Study file"):
        assert section in text
    pngs = sorted(p for p in (root / "report").glob("*.png") if p.name != "timeline.png")
    assert len(pngs) >= 3 and "## Timeline" in text and (root / "report" / "timeline.png").stat().st_size > 5_000
    for png in pngs:
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert (width, height) == (640, 400) and png.stat().st_size > 10_000
        assert png.name in text


def test_mlflow_and_tensorboard_record_every_trial(finished, monkeypatch):
    from mlflow.tracking import MlflowClient

    tmp_path, _ = finished
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to read a file store
    client = MlflowClient(tracking_uri=f"file://{tmp_path / 'mlruns'}")
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert len(runs) == 4
    for run in runs:
        assert run.data.tags["stage"] == "pretrain"
        assert any(k.endswith("seed") for k in run.data.params)
        assert any("config/epochs" in k or k.endswith("epochs") for k in run.data.params)
        assert "val/loss" in run.data.metrics and "train/loss" in run.data.metrics
    assert len(list((tmp_path / "runs" / "e2e" / "pretrain").glob("*/events.out.tfevents.*"))) == 4


def test_changed_study_in_same_storage_is_refused(finished, tmp_path):
    shutil.copytree(finished[0] / "runs", tmp_path / "runs")
    study = tmp_path / "study.yaml"
    study.write_text(_study(tmp_path).replace("epochs: 2", "epochs: 3"))
    proc = run_here("run", study, cwd=tmp_path)
    assert proc.returncode == 2 and "different study file" in proc.stderr
    assert pd.read_parquet(tmp_path / "runs" / "e2e" / "results.parquet")["final.epoch"].max() == 2


def test_interrupted_run_continues_without_rerunning_finished_trials(tmp_path):
    # one variant x 3 seeds, one at a time: one finished, one interrupted, one not started
    body = (
        _study(tmp_path)
        .replace("epochs: 2", "epochs: 60")
        .replace("patch_len: 8}", "patch_len: 8, early_stopping_patience: null}")
        .replace("seeds: [1, 2]", "seeds: [1, 2, 3]")
    )
    body = body.replace("name: e2e", "name: e2e-interrupt").replace("      block: {mask_strategy: block}\n", "")
    body = "\n".join(line for line in body.splitlines() if not line.startswith("callbacks:")) + "\n"
    study = tmp_path / "study.yaml"
    study.write_text(body)
    import os

    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(study), "--max-concurrent", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    deadline = time.time() + 240
    for line in proc.stdout:  # wait until one trial finished and the next one is running
        seen.append(line)
        if sum(ln.startswith("done") for ln in seen) >= 1 and sum(ln.startswith("started") for ln in seen) >= 2:
            time.sleep(1.5)
            proc.send_signal(signal.SIGINT)
            break
        assert time.time() < deadline, "".join(seen)
    out = "".join(seen) + proc.stdout.read()
    assert proc.wait(timeout=120) == 130, out
    root = tmp_path / "runs" / "e2e-interrupt"
    first = pd.read_parquet(root / "results.parquet")
    finished = first[first["status"] == "done"]
    assert len(finished) >= 1 and (first["status"] == "interrupted").any(), first[["trial", "status"]]
    # "done" means it ran to its end: a trial that had not started is not done
    assert (finished["final.epoch"] == 60).all(), first[["trial", "status", "final.epoch"]]

    stopped_at = _stopped_at(root)
    resumed = run_here("resume", root, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = pd.read_parquet(root / "results.parquet")
    assert len(final) == 3 and set(final["status"]) == {"done"} and final["trial_id"].is_unique
    for _, row in finished.iterrows():  # finished trials were kept, not re-run
        assert f"started  {row['trial']}" not in resumed.stdout
        again = final.set_index("trial_id").loc[row["trial_id"]]
        assert again["duration_s"] == row["duration_s"]
    interrupted = first[first["status"] == "interrupted"].iloc[0]
    progress = pd.read_csv(root / "pretrain" / interrupted["trial_id"] / "metrics.csv")
    assert list(progress["epoch"]) == list(range(1, 61))  # every epoch once
    # continued from its checkpoint: the epochs before the interrupt kept their measured times
    trial_dir = root / "pretrain" / interrupted["trial_id"]
    assert _went_on_from_checkpoint(stopped_at, f"pretrain/{interrupted['trial_id']}", trial_dir)
