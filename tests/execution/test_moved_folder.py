"""A study folder moved (or copied) after a killed driver resumes in its new place: every trial
of both stages done, each report once, every path the records and tables hold in the new place,
and nothing read from or written to the old one (it is gone: a read would fail, a write would
create it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pandas as pd
import pytest

from tests.conftest import TINY_STAGE, run_here
from tests.execution.test_faults import _popen

pytestmark = pytest.mark.e2e

STUDY = (
    """\
name: moving
storage: ./runs
defaults: {seeds: [1, 2], max_failures: 1, checkpoint: {every: 1, keep: 2}}
stages:
  pre:
"""
    + TINY_STAGE
    + """\
    seeds: [1]
    select: {metric: val/loss, mode: min}
  fine:
    needs: [pre]
    trainable: lstm_classifier_finetune
    config: {data: "synthetic:ohlc?n=240&length=40&seed=1&labeled=1", window_length: 40, num_heads: 2,
             folds: 6, epochs: 12, hidden_size: 8, encoder: "${pre.best.checkpoint}"}
"""
)


def _folds(trial_dir) -> list[int]:
    return pd.read_csv(trial_dir / "metrics.csv")["fold"].tolist()


def test_a_study_moved_after_a_killed_driver_resumes_in_its_new_place(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    proc = _popen(["run", "study.yaml", "--num-cpus", "2"], tmp_path)
    old = tmp_path / "runs" / "moving"
    lines: list[str] = []
    deadline = time.time() + 240
    fine = old / "fine"
    # kill the driver once a fine-tuning trial has reported a fold or two (and checkpointed them)
    mid_stage = False
    while time.time() < deadline and not mid_stage:
        reported = [d for d in fine.iterdir() if (d / "metrics.csv").exists()] if fine.exists() else []
        mid_stage = any(1 <= len(_folds(d)) <= 4 for d in reported)
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    lines += proc.stdout.read().splitlines() if proc.stdout else []
    proc.wait(timeout=60)
    time.sleep(2)  # the killed driver's local Ray shuts down
    assert mid_stage, "\n".join(lines)
    new = tmp_path / "elsewhere" / "moving"
    new.parent.mkdir()
    shutil.move(str(old), str(new))
    (tmp_path / "runs").rmdir()

    resumed = run_here("resume", new, "--num-cpus", "2", cwd=tmp_path, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "this study was run in" in resumed.stdout and "it continues here" in resumed.stdout
    assert not (tmp_path / "runs").exists()  # nothing written to the old place
    table = pd.read_parquet(new / "results.parquet")
    assert len(table) == 3 and set(table["status"]) == {"done"}, table[["trial", "status"]]
    for _, row in table[table["stage"] == "fine"].iterrows():
        assert _folds(new / "fine" / row["trial_id"]) == [1, 2, 3, 4, 5, 6]  # each fold once
    old_prefix = str(old)
    for record in (new / "_orchestrator" / "stages").glob("*.json"):
        assert old_prefix + "/" not in record.read_text(), record
    for _, row in table.iterrows():
        for column in ("path", "checkpoint"):
            assert str(row[column]).startswith(str(new) + "/"), (column, row[column])
    lineage = table[table["stage"] == "fine"]["upstream.pre.checkpoint"]
    assert lineage.str.startswith(str(new) + "/").all(), lineage
    meta = json.loads((new / "study.json").read_text())
    assert meta["location"] == str(new)
