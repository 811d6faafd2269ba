"""End to end through the real CLI process and a real local Ray: run, re-run, interrupt, inspect."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import REPO, TINY_STAGE, run_cli

pytestmark = pytest.mark.e2e

STUDY = """\
name: e2e
storage: {storage}
defaults: {seeds: [1, 2]}
stages:
  pretrain:
""" + TINY_STAGE + """\
    variants:
      patch: {mask_strategy: patch}
      block: {mask_strategy: block}
    select: {metric: val/masked_mse, mode: min}
"""


def test_run_writes_tables_checkpoints_artifacts_and_rerun_skips(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.replace("{storage}", str(tmp_path / "runs")))
    proc = run_cli("run", study, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
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

    code = run_cli("results", root, "--format", "csv", cwd=tmp_path)
    assert code.returncode == 0 and len(code.stdout.strip().splitlines()) == 5
    status = run_cli("status", root, cwd=tmp_path)
    assert status.returncode == 0 and "complete" in status.stdout

    # plan with measured durations of this run of the same trainable
    planned = json.loads(run_cli("plan", study, "--history", root, "--json", "--gpus", "1",
                                 "--gpu-price", "runpod-rtx4090", cwd=tmp_path).stdout)
    estimate = planned["stages"][0]["estimate"]
    assert estimate["source"] == "measured"
    assert estimate["trial_minutes"] == pytest.approx(df["duration_s"].median() / 60)
    assert planned["estimate"]["cost_usd"] == pytest.approx(estimate["gpu_hours"] * 0.69)

    # the aggregate over seeds: 2 variants x 2 seeds
    agg = pd.read_parquet(root / "aggregate.parquet")
    assert sorted(agg["variant"]) == ["block", "patch"] and (agg["n"] == 2).all()
    latex = run_cli("results", root, "--format", "latex", cwd=tmp_path).stdout
    assert latex.count("{") == latex.count("}") and r"\toprule" in latex and r"\textbf{" in latex
    rep = run_cli("report", root, "--gpu-price", "runpod-rtx4090", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    text = (root / "report" / "report.md").read_text()
    for section in ("## Plan", "## Results", "over seeds", "## Learning curves", "## Time and cost", "## Study file"):
        assert section in text
    pngs = sorted((root / "report").glob("*.png"))
    assert len(pngs) >= 3
    for png in pngs:
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert (width, height) == (640, 400) and png.stat().st_size > 10_000
        assert png.name in text


def test_changed_study_in_same_storage_is_refused(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.replace("{storage}", str(tmp_path / "runs")))
    assert run_cli("run", study, cwd=tmp_path).returncode == 0
    study.write_text(STUDY.replace("{storage}", str(tmp_path / "runs")).replace("epochs: 2", "epochs: 3"))
    proc = run_cli("run", study, cwd=tmp_path)
    assert proc.returncode == 2 and "different study file" in proc.stderr
    assert pd.read_parquet(tmp_path / "runs" / "e2e" / "results.parquet")["final.epoch"].max() == 2


def test_interrupted_run_continues_without_rerunning_finished_trials(tmp_path):
    body = STUDY.replace("{storage}", str(tmp_path / "runs")).replace("epochs: 2", "epochs: 60").replace(
        "patch_len: 8}", "patch_len: 8, early_stopping_patience: null}").replace("seeds: [1, 2]", "seeds: [1, 2, 3]")
    body = body.replace("name: e2e", "name: e2e-interrupt")
    study = tmp_path / "study.yaml"
    study.write_text(body)
    import os

    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(study), "--max-concurrent", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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

    resumed = run_cli("resume", root, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = pd.read_parquet(root / "results.parquet")
    assert len(final) == 6 and set(final["status"]) == {"done"} and final["trial_id"].is_unique
    for _, row in finished.iterrows():  # finished trials were kept, not re-run
        assert f"started  {row['trial']}" not in resumed.stdout
        again = final.set_index("trial_id").loc[row["trial_id"]]
        assert again["duration_s"] == row["duration_s"]
    interrupted = first[first["status"] == "interrupted"].iloc[0]
    progress = pd.read_csv(root / "pretrain" / interrupted["trial_id"] / "metrics.csv")
    assert list(progress["epoch"]) == list(range(1, 61))  # epochs continued from the checkpoint, once each
