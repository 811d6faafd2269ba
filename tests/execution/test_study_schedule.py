"""One schedule for the whole study (`study_schedule`, `study_tune`), through the CLI, from the
trials' own timestamps: a fan-out's downstream trial starts before the last upstream trial ends,
independent stages run at once, a `best` reference waits for its whole stage, a failed gate's
dependants never start; a driver killed while two stages run resumes with every epoch once; an
ASHA stage beside a FIFO stage stops only its own trials; a study folder written by the
per-stage runner of earlier releases continues."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY_STAGE, run_here
from tests.execution.test_faults import _popen, _stopped_at, _went_on_from_checkpoint

pytestmark = pytest.mark.e2e


def _pretrain(epochs: int, extra: str = "") -> str:
    return TINY_STAGE.replace("epochs: 2", f"epochs: {epochs}").replace(
        "patch_len: 8}", f"patch_len: 8, early_stopping_patience: null{extra}}}"
    )


FINE = """\
    trainable: lstm_classifier_finetune
    config: {data: "synthetic:ohlc?n=60&length=40&seed=1&labeled=1", window_length: 40, num_heads: 2,
             folds: 2, epochs: 1, hidden_size: 8, encoder: "ENCODER"}
"""

STUDY = (
    "name: overlap\nstorage: ./runs\ndefaults: {seeds: [1], max_failures: 0}\nstages:\n  up:\n"
    + _pretrain(2)
    + "    variants: {short: {epochs: 2}, long: {epochs: 150}}\n    select: {metric: val/loss, mode: min}\n"
    + "  each:\n    needs: [up]\n"
    + FINE.replace("ENCODER", "${up.all.checkpoint}")
    + "  best:\n    needs: [up]\n"
    + FINE.replace("ENCODER", "${up.best.checkpoint}")
    + "  beside:\n"
    + _pretrain(150)
    + "  checked:\n"
    + _pretrain(1)
    + "    select: {metric: val/loss, mode: min}\n    gate: {metric: val/loss, op: '<', value: 0.0}\n"
    + "  after_gate:\n    needs: [checked]\n"
    + _pretrain(1)
)


def _intervals(root: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """{stage: {trial name: (start, end)}}: the trial function's start, its last report."""
    out: dict[str, dict] = {}
    for meta_path in root.glob("*/*/metadata.json"):
        meta = json.loads(meta_path.read_text())
        last = json.loads((meta_path.parent / "result.json").read_text().splitlines()[-1])
        out.setdefault(meta_path.parent.parent.name, {})[meta["trial_name"]] = (
            meta["timing"]["function_started_at"],
            last["timestamp"],
        )
    return out


def test_stages_overlap_and_trials_start_when_their_inputs_exist(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    done = run_here("run", "study.yaml", "--num-cpus", "2", cwd=tmp_path, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    root = tmp_path / "runs" / "overlap"
    table = pd.read_parquet(root / "results.parquet")
    assert set(table["status"]) == {"done"}
    times = _intervals(root)
    long_end = times["up"]["up/long/s1"][1]
    # the fan-out's trial of the short upstream trial starts before the long one has ended
    early = [start for name, (start, _) in times["each"].items() if name.endswith("@short/s1")]
    assert early and early[0] < long_end, (early, long_end)
    # `best` reads the whole stage: it starts after its last trial ended
    ((best_start, _),) = times["best"].values()
    assert best_start > long_end
    # a stage that needs nothing of the others runs beside them
    ((beside_start, beside_end),) = times["beside"].values()
    up_start = min(s for s, _ in times["up"].values())
    assert beside_start < long_end and up_start < beside_end
    # a failed gate: the stage that needs it never starts
    record = json.loads((root / "_orchestrator" / "stages" / "after_gate.json").read_text())
    assert record["state"] == "gated" and not (root / "after_gate").exists()
    assert "stage(s) gated: after_gate" in done.stdout
    assert run_here("report", root, cwd=tmp_path).returncode == 0
    assert (root / "report" / "timeline.png").stat().st_size > 10_000


def _epochs(trial_dir: Path) -> list[int]:
    return pd.read_csv(trial_dir / "metrics.csv")["epoch"].tolist()


def _epochs_so_far(root: Path, stage: str) -> list[int]:
    """How many epochs each trial of `stage` has written so far."""
    counts = []
    for path in root.glob(f"{stage}/*/metrics.csv"):
        try:
            counts.append(len(pd.read_csv(path)))
        except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError):  # being written
            counts.append(0)
    return counts


def _wait_until_midway(root: Path, epochs: int) -> bool:
    """Wait (4 minutes at most) until a trial of each of the stages `first` and `second` is
    between its first few epochs and its last; whether that happened."""
    deadline = time.time() + 240
    while time.time() < deadline:
        if all(any(3 <= n < epochs - 20 for n in _epochs_so_far(root, s)) for s in ("first", "second")):
            return True
        time.sleep(0.1)
    return False


def _resume_every_epoch_once(root: Path, cwd: Path, epochs: int) -> None:
    """`resume`: both seeds of both stages done, each having run every epoch once, those stopped
    after checkpointed epochs going on from their checkpoint."""
    stopped_at = _stopped_at(root)
    resumed = run_here("resume", root, "--num-cpus", "2", cwd=cwd, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    table = pd.read_parquet(root / "results.parquet")
    assert len(table) == 4 and set(table["status"]) == {"done"}
    assert set(zip(table["stage"], table["seed"])) == {(s, k) for s in ("first", "second") for k in (1, 2)}
    for _, row in table.iterrows():
        trial_dir = root / row["stage"] / row["trial_id"]
        assert _epochs(trial_dir) == list(range(1, epochs + 1))  # every epoch once
        _went_on_from_checkpoint(stopped_at, f"{row['stage']}/{row['trial_id']}", trial_dir)
    assert any(len(times) >= 2 for times in stopped_at.values()), stopped_at


def test_a_driver_killed_while_two_stages_run_resumes_them_with_every_epoch_once(tmp_path):
    epochs = 60
    (tmp_path / "study.yaml").write_text(
        "name: killed2\nstorage: ./runs\ndefaults: {seeds: [1, 2], max_failures: 1,"
        " checkpoint: {every: 1, keep: null}}\nstages:\n  first:\n"
        + _pretrain(epochs)
        + "  second:\n"
        + _pretrain(epochs)
    )
    proc = _popen(["run", "study.yaml", "--num-cpus", "2"], tmp_path, TUNE_GLOBAL_CHECKPOINT_S="100000")
    root = tmp_path / "runs" / "killed2"
    midway = _wait_until_midway(root, epochs)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: no chance to save anything
    proc.wait(timeout=60)
    assert midway
    time.sleep(2)
    _resume_every_epoch_once(root, tmp_path, epochs)


def test_ctrl_c_while_trials_of_two_stages_wait_records_them_as_not_run(tmp_path):
    """Ctrl-C with a trial of each stage running and one of each released but waiting for a
    slot: the waiting ones are not `done` (a stage of such trials would count as complete and
    `resume` would skip it); `resume` runs them, every epoch once."""
    epochs = 60
    (tmp_path / "study.yaml").write_text(
        "name: ctrlc\nstorage: ./runs\ndefaults: {seeds: [1, 2], max_failures: 0, checkpoint: {every: 1, keep: null}}"
        "\nstages:\n  first:\n" + _pretrain(epochs) + "  second:\n" + _pretrain(epochs)
    )
    proc = _popen(["run", "study.yaml", "--num-cpus", "2"], tmp_path)
    root = tmp_path / "runs" / "ctrlc"
    midway = _wait_until_midway(root, epochs)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130 and midway
    first = pd.read_parquet(root / "results.parquet")
    done = first[first["status"] == "done"]
    assert (done["final.epoch"] == epochs).all(), first[["trial", "status", "final.epoch"]]
    for stage in ("first", "second"):
        record = json.loads((root / "_orchestrator" / "stages" / f"{stage}.json").read_text())
        assert record["state"] == "interrupted", (stage, record["state"])
    _resume_every_epoch_once(root, tmp_path, epochs)


def test_an_asha_stage_stops_only_its_own_trials(tmp_path):
    (tmp_path / "study.yaml").write_text(
        "name: mixed\nstorage: ./runs\ndefaults: {seeds: [1], max_failures: 0}\nstages:\n  searched:\n"
        + _pretrain(12)
        + "    select: {metric: val/loss, mode: min}\n"
        "    search: {space: {lr: {loguniform: [1.0e-5, 1.0e-1]}}, num_samples: 6, scheduler: asha,\n"
        "             scheduler_config: {grace_period: 1, max_t: 12, reduction_factor: 3}}\n"
        "  plain:\n" + _pretrain(12) + "    seeds: [1, 2, 3]\n"
    )
    done = run_here("run", "study.yaml", "--num-cpus", "2", cwd=tmp_path, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    table = pd.read_parquet(tmp_path / "runs" / "mixed" / "results.parquet").set_index("stage")
    assert (table.loc["plain", "final.epoch"] == 12).all()  # the FIFO stage: every trial ran to its end
    searched = table.loc["searched", "final.epoch"]
    assert len(searched) == 6 and (searched < 12).any()  # ASHA stopped some of its own


def test_a_study_folder_of_the_per_stage_runner_continues(tmp_path, monkeypatch):
    """Studies interrupted under releases that ran one Tuner per stage have an experiment per
    stage (`<stage>/experiment_state-*`): `resume` continues them as they ran."""
    from orchestrator.execution import study_runner

    (tmp_path / "study.yaml").write_text(
        "name: legacy\nstorage: ./runs\ndefaults: {seeds: [1, 2]}\n"
        "budget: {usd: 3, cpu_price: 3600}\nstages:\n  pre:\n" + _pretrain(150)
    )
    # the first run with the per-stage runner (what a folder of an earlier release holds), stopped
    # by its spend cap mid-stage
    monkeypatch.setattr(study_runner, "_legacy_experiments", lambda store, todo: True)
    monkeypatch.chdir(tmp_path)
    from rich.console import Console

    from orchestrator.execution.ray_start import RunOptions
    from orchestrator.planning.expand import load_plan

    plan = load_plan(tmp_path / "study.yaml")
    outcome = study_runner.run_study(
        plan, (tmp_path / "study.yaml").read_text(), RunOptions(num_cpus=2, over_budget=True), Console(quiet=True)
    )
    monkeypatch.undo()
    root = tmp_path / "runs" / "legacy"
    assert outcome.budget and list((root / "pre").glob("experiment_state-*.json"))
    resumed = run_here("resume", root, "--budget", "1000", "--num-cpus", "2", cwd=tmp_path, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    table = pd.read_parquet(root / "results.parquet")
    assert len(table) == 2 and set(table["status"]) == {"done"}
    for tid in table["trial_id"]:
        assert _epochs(root / "pre" / tid) == list(range(1, 151))
    assert not list(root.glob("experiment_state-*.json"))  # it continued as it ran: per stage
