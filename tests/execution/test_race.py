"""Racing over seeds through the CLI (`race:`): a variant whose learning rate is far too small is
eliminated at the first rung, its running trials stop there, its seed still waiting never
starts, the survivors run to the end, and the tables say so with the saving; a driver killed
after the decision resumes with the decision kept, not made again."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_here
from tests.execution.test_faults import _popen

pytestmark = pytest.mark.e2e

EPOCHS = 30


def _study(name: str) -> str:
    return f"""\
name: {name}
storage: ./runs
defaults: {{seeds: [1, 2, 3, 4], max_failures: 0, checkpoint: {{every: 1, keep: 2}}}}
stages:
  pre:
    trainable: lstm_mae_pretrain
    config: {{data: "synthetic:ohlc?n=120&length=40&seed=0", window_length: 40, epochs: {EPOCHS}, hidden_size: 8,
             batch_size: 32, aug_multiplier: 1, patch_len: 8, early_stopping_patience: null}}
    variants: {{good: {{lr: 0.01}}, mid: {{lr: 0.005}}, tiny: {{lr: 0.000001}}}}
    resources: {{cpu: 0.2}}
    max_concurrent: 9
    select: {{metric: val/loss, mode: min}}
    race: {{first: 5, factor: 2, min_seeds: 3}}
"""


SAMPLED = """\
  sampled:
    needs: [pre]
    trainable: lstm_mae_pretrain
    config: {data: "synthetic:ohlc?n=120&length=40&seed=0", window_length: 40, epochs: 6, hidden_size: 8,
             batch_size: 32, aug_multiplier: 1, patch_len: 8, early_stopping_patience: null}
    seeds: [1, 2, 3]
    search: {space: {lr: {loguniform: [0.000001, 0.01]}, dropout: {uniform: [0.0, 0.3]}}, num_samples: 2}
    resources: {cpu: 0.3}
    select: {metric: val/loss, mode: min}
    race: {first: 3, min_seeds: 3}
"""


def _record(root: Path, stage: str = "pre") -> dict:
    return json.loads((root / "_orchestrator" / "stages" / f"{stage}.json").read_text())


def _eliminations(record: dict) -> dict:
    return {d["label"]: (d["rung"], d["n"], round(d["p"], 6)) for d in record["race"]["eliminated"].values()}


def _check_outcome(root: Path) -> dict:
    """The decision and what followed it, as the record and the tables have them."""
    record = _record(root)
    assert record["state"] == "complete"
    trials = {t["name"]: t for t in record["trials"].values()}
    assert set(trials) == {f"pre/{v}/s{s}" for v in ("good", "mid", "tiny") for s in (1, 2, 3, 4)}
    assert _eliminations(record).keys() == {"pre/tiny"}
    (decision,) = record["race"]["eliminated"].values()
    assert decision["rung"] == 5 and decision["n"] == 3 and decision["lost_to"] in ("pre/good", "pre/mid")
    assert decision["delta"] > 0 and decision["p"] <= decision["level"] and decision["ci_low"] > 0
    for s in (1, 2, 3):  # stopped at their first report after the decision
        tiny = trials[f"pre/tiny/s{s}"]
        assert tiny["status"] == "eliminated" and 5 <= tiny["metrics"]["epoch"] < EPOCHS, tiny
        assert tiny["race"]["rung"] == 5 and tiny["latest_checkpoint"]
    waiting = trials["pre/tiny/s4"]  # released seed after seed: never started
    assert waiting["status"] == "eliminated" and waiting["iterations"] == 0 and waiting["started"] is False
    assert not (root / "pre" / waiting["trial_id"]).exists()
    for s in (1, 2, 3, 4):
        for survivor in ("good", "mid"):
            trial = trials[f"pre/{survivor}/s{s}"]
            assert trial["status"] == "done" and trial["metrics"]["epoch"] == EPOCHS, trial
    saving = record["race"]["saving"]
    stopped_early = sum(EPOCHS - trials[f"pre/tiny/s{s}"]["metrics"].get("epoch", 0) for s in (1, 2, 3, 4))
    assert saving["trial_epochs_saved"] == stopped_early and saving["trial_epochs_planned"] == 12 * EPOCHS
    assert saving["eliminated_trials"] == 4 and saving["never_started"] == 1 and saving["cpu_hours"] > 0
    table = pd.read_parquet(root / "results.parquet")
    table = table[table["stage"] == "pre"]
    assert dict(zip(table["trial"], table["status"])) == {n: t["status"] for n, t in trials.items()}
    assert set(table.loc[table["status"] == "eliminated", "race.rung"]) == {5}
    return record


def test_a_far_too_small_learning_rate_is_eliminated_early_and_the_tables_say_so(tmp_path):
    (tmp_path / "study.yaml").write_text(_study("raced") + SAMPLED)
    done = run_here("run", "study.yaml", "--num-cpus", "2", cwd=tmp_path, timeout=400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "race pre: group pre/tiny eliminated at epoch 5: worse than pre/" in out, out[-4000:]
    assert "1 of 3 groups eliminated (4 trials, 1 never started)" in out
    root = tmp_path / "runs" / "raced"
    _check_outcome(root)
    shown = run_here("results", root, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "eliminated by the race at epoch 5 (worse than pre/" in shown.stdout  # the aggregate's row
    assert "### pre: race" in shown.stdout and "| 5 | pre/tiny | pre/" in shown.stdout
    status = run_here("status", root, cwd=tmp_path)
    assert "eliminated" in status.stdout
    # a search beside it: each sample runs with every seed, and the sample with its seeds is a group
    sampled = _record(root, "sampled")
    by_group: dict[str, list] = {}
    for t in sampled["trials"].values():
        by_group.setdefault(t["race_group"], []).append(t)
    assert len(by_group) == 2 and sorted(len(g) for g in by_group.values()) == [3, 3]
    for members in by_group.values():
        assert {t["seed"] for t in members} == {1, 2, 3}
        assert len({json.dumps(t["sampled"], sort_keys=True) for t in members}) == 1, members
    assert set(sampled["race"]["groups"]) == set(by_group)


def test_a_driver_killed_after_the_decision_resumes_with_the_decision_kept(tmp_path):
    (tmp_path / "study.yaml").write_text(_study("raced_killed"))
    proc = _popen(["run", "study.yaml", "--num-cpus", "2"], tmp_path, TUNE_GLOBAL_CHECKPOINT_S="100000")
    root = tmp_path / "runs" / "raced_killed"
    deadline, decided = time.time() + 300, None
    while time.time() < deadline and decided is None:
        try:
            record = _record(root)
        except (FileNotFoundError, json.JSONDecodeError):
            record = {}
        if (record.get("race") or {}).get("eliminated"):
            decided = record
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only, right after the decision was saved
    proc.wait(timeout=60)
    assert decided is not None, "no decision within 300 s"
    time.sleep(2)
    resumed = run_here("resume", root, "--num-cpus", "2", cwd=tmp_path, timeout=400)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    record = _check_outcome(root)
    # the same decision, made once: nothing about it was raced again after the kill
    assert record["race"]["eliminated"] == decided["race"]["eliminated"]
    first = [r for r in record["race"]["rungs"] if r["rung"] == 5]
    assert first == [r for r in decided["race"]["rungs"] if r["rung"] == 5]
    assert "eliminated at epoch 5" not in resumed.stdout + resumed.stderr
