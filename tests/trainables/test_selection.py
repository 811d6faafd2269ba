"""The best epoch of a trial (trainables/runtime/selection.py) and how sessions carry it: exact over
every epoch whatever reached Tune, checkpointed at every improvement, resumed, and kept."""

from __future__ import annotations

import json
import math
import types

import pytest

from trainables.runtime import selection as sel
from trainables.runtime.session import LocalSession, TuneSession


def test_strict_improvements_ignore_nan_and_keep_the_first_of_ties():
    s = sel.Selection("val/loss", "min")
    values = [0.5, math.nan, 0.4, 0.4, math.inf, None, 0.3, 0.35]
    improved = [s.update({"epoch": i + 1, "val/loss": v}) for i, v in enumerate(values)]
    assert improved == [True, False, True, False, False, False, True, False]
    assert s.best == 0.3 and s.best_epoch == 7 and s.improvements == 3
    top = sel.Selection("acc", "max")
    for epoch, v in enumerate([0.1, 0.9, 0.9, True], 1):  # a bool is not a metric value
        top.update({"epoch": epoch, "acc": v})
    assert top.best == 0.9 and top.best_epoch == 2
    assert sel.Selection().summary() == {} and not sel.Selection().update({"x": 1.0})
    with pytest.raises(ValueError, match="mode"):
        sel.Selection("x", "lowest")


def test_state_resumes_only_for_the_same_metric():
    s = sel.Selection("val/loss", "min")
    s.update({"epoch": 1, "val/loss": 0.2})
    again = sel.Selection("val/loss", "min")
    again.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert again.summary() == s.summary() and not again.improves({"val/loss": 0.25})
    other = sel.Selection("val/masked_mse", "min")
    other.load_state_dict(s.state_dict())  # the study now selects on another metric: start over
    assert other.best is None


def test_model_choice_uses_the_select_metric_only_when_every_epoch_reports_it():
    per_epoch = sel.ModelChoice(sel.Selection("val/masked_mse", "min"), "val/loss", "min")
    per_epoch.update({"val/loss": 1.0, "val/masked_mse": 0.5})
    assert per_epoch.metric == "val/masked_mse"
    final_only = sel.ModelChoice(sel.Selection("final/ndcg@10", "max"), "val/loss", "min")
    final_only.update({"val/loss": 1.0})
    final_only.update({"val/loss": 2.0, "final/ndcg@10": 0.4})  # the final report does not switch it
    assert final_only.metric == "val/loss" and final_only.best == 1.0


class _FakeTune:
    """Stands in for ray.tune inside a trial: records what reaches Tune."""

    def __init__(self, tmp_path):
        self.sent: list[dict] = []
        self.tmp_path = tmp_path

    def report(self, metrics, checkpoint=None):
        self.sent.append(dict(metrics, _checkpoint=checkpoint is not None))


@pytest.fixture
def fake_tune(monkeypatch, tmp_path):
    from ray import tune

    fake = _FakeTune(tmp_path)
    monkeypatch.setattr(tune, "report", fake.report)
    monkeypatch.setattr(tune.Checkpoint, "from_directory", staticmethod(lambda path: path))
    return fake


def test_held_reports_still_count_and_the_last_report_carries_the_exact_best(fake_tune):
    # Reports within report_interval_s of the previous one are held and overwritten: Tune sees
    # epoch 1 and the flushed last epoch only. The best (epoch 3) must still be what it ranks by.
    session = TuneSession(
        checkpoint_every=None,
        checkpoint_interval_s=1e9,
        report_interval_s=1e9,
        select={"metric": "val/loss", "mode": "min"},
    )
    losses = [0.9, 0.6, 0.2, 0.5, 0.4]
    for epoch, loss in enumerate(losses, 1):
        session.report({"epoch": epoch, "val/loss": loss})
    session.flush()
    assert [m["epoch"] for m in fake_tune.sent] == [1, 5]  # what reached Tune
    assert min(m["val/loss"] for m in fake_tune.sent) == 0.4  # what Tune alone would call best
    assert fake_tune.sent[-1][sel.BEST] == 0.2 and fake_tune.sent[-1][sel.BEST_EPOCH] == 3


def test_an_improving_epoch_asks_for_a_checkpoint_and_scores_it(fake_tune, tmp_path):
    session = TuneSession(checkpoint_every=None, checkpoint_interval_s=1e9, select={"metric": "acc", "mode": "max"})
    session.checkpoint_due(1)  # the clock's first call
    scores = []
    for epoch, acc in enumerate([0.5, 0.4, 0.7], 1):
        metrics = {"epoch": epoch, "acc": acc}
        due = session.checkpoint_due(epoch, metrics)
        folder = tmp_path / f"ckpt{epoch}"
        folder.mkdir()
        session.report(metrics, checkpoint_dir=str(folder) if due else None)
        scores.append((due, fake_tune.sent[-1].get(sel.CHECKPOINT_SCORE)))
        if due:
            saved = json.loads((folder / sel.STATE_FILE).read_text())
            assert saved["best"] == max(m["acc"] for m in fake_tune.sent)
    assert scores == [(True, 1), (False, None), (True, 2)]


def test_local_session_keeps_the_best_checkpoint_beside_the_newest(tmp_path):
    session = LocalSession(tmp_path, checkpoint_every=1, keep=1, select={"metric": "val/loss", "mode": "min"})
    for epoch, loss in enumerate([0.5, 0.1, 0.3, 0.4], 1):
        folder = tmp_path / f"src{epoch}"
        folder.mkdir()
        (folder / "epoch.txt").write_text(str(epoch))
        session.report({"epoch": epoch, "val/loss": loss}, checkpoint_dir=str(folder))
    kept = {(p / "epoch.txt").read_text() for p in session.checkpoints()}
    assert kept == {"2", "4"} and (session.best_checkpoint / "epoch.txt").read_text() == "2"


def test_pbt_exploit_restores_the_donor_and_keeps_its_own_selection(monkeypatch, tmp_path):
    """Tune hands an exploiting trial another trial's checkpoint: the weights must come from it
    (they came from the trial's own newest checkpoint before), the selection stays its own."""
    import torch
    from ray import tune

    from trainables.runtime import checkpoints

    own_dir, donor_dir = tmp_path / "exp" / "trial_a", tmp_path / "exp" / "trial_b"
    for folder, weights, best in ((own_dir, 1.0, 0.9), (donor_dir, 2.0, 0.1)):
        ckpt = folder / "checkpoint_000003"
        ckpt.mkdir(parents=True)
        checkpoints.save({"w": torch.tensor(weights), "epoch": 3}, ckpt / checkpoints.STATE_FILE)
        (ckpt / sel.STATE_FILE).write_text(
            json.dumps(
                {"metric": "val/loss", "mode": "min", "best": best, "best_epoch": 2.0, "improvements": 2, "reports": 3}
            )
        )
    import pyarrow.fs as pafs

    storage = types.SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), trial_fs_path=str(own_dir))
    monkeypatch.setattr(tune, "get_context", lambda: types.SimpleNamespace(get_storage=lambda: storage))
    donor = tune.Checkpoint(str(donor_dir / "checkpoint_000003"))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: donor)

    session = TuneSession(select={"metric": "val/loss", "mode": "min"})
    state = session.restore_state()
    assert float(state["w"]) == 2.0  # the donor's weights
    assert session.selection.best == 0.9  # this trial's own best so far

    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint(str(own_dir / "checkpoint_000003")))
    resumed = TuneSession(select={"metric": "val/loss", "mode": "min"})
    assert float(resumed.restore_state()["w"]) == 1.0 and resumed.selection.best == 0.9


def test_driver_finds_the_best_epochs_checkpoint_that_a_restored_tune_does_not_know(tmp_path):
    """After a killed driver, Tune's restored checkpoint manager may not know the trial's last
    improving checkpoint; the record must still point at it, not at a later checkpoint that
    carries the same selection."""
    import os

    import pyarrow.fs as pafs

    from orchestrator.execution.trial_results import best_checkpoint

    saved = [
        ("checkpoint_000001", 2, True, 1_000),
        ("checkpoint_000002", 3, True, 2_000),
        ("checkpoint_000003", 3, False, 3_000),
    ]
    for name, improvements, is_best, mtime in saved:
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.pt").write_bytes(b"x")
        os.utime(tmp_path / name / "state.pt", (mtime, mtime))
        (tmp_path / name / sel.STATE_FILE).write_text(json.dumps({"improvements": improvements, "is_best": is_best}))
    known = types.SimpleNamespace(
        metrics={sel.CHECKPOINT_SCORE: 2, "epoch": 4},
        checkpoint=types.SimpleNamespace(path=str(tmp_path / "checkpoint_000001")),
    )
    trial = types.SimpleNamespace(
        run_metadata=types.SimpleNamespace(checkpoint_manager=types.SimpleNamespace(best_checkpoint_result=known)),
        storage=types.SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), trial_fs_path=str(tmp_path)),
    )
    found, epoch = best_checkpoint(trial, {sel.IMPROVEMENTS: 3, sel.BEST_EPOCH: 6})
    assert found.path.endswith("checkpoint_000002") and epoch == 6
    known_one, epoch = best_checkpoint(trial, {sel.IMPROVEMENTS: 2, sel.BEST_EPOCH: 4})
    assert known_one.path.endswith("checkpoint_000001") and epoch == 4  # Tune knew it


def test_a_checkpoint_that_is_not_the_best_epochs_says_whose_it_is(tmp_path):
    """`checkpoint.keep_best: false` keeps the newest checkpoints only: the best epoch's may be
    gone, and the checkpoint recorded is then another epoch's, which the record must name."""
    import pyarrow.fs as pafs

    from orchestrator.execution.trial_results import best_checkpoint

    (tmp_path / "checkpoint_000009").mkdir()
    (tmp_path / "checkpoint_000009" / sel.STATE_FILE).write_text(json.dumps({"improvements": 5, "is_best": False}))
    newest = types.SimpleNamespace(
        metrics={sel.CHECKPOINT_SCORE: 0, "epoch": 10, "training_iteration": 10},
        checkpoint=types.SimpleNamespace(path=str(tmp_path / "checkpoint_000009")),
    )
    trial = types.SimpleNamespace(
        run_metadata=types.SimpleNamespace(checkpoint_manager=types.SimpleNamespace(best_checkpoint_result=newest)),
        storage=types.SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), trial_fs_path=str(tmp_path)),
    )
    checkpoint, epoch = best_checkpoint(trial, {sel.IMPROVEMENTS: 5, sel.BEST_EPOCH: 7})
    assert checkpoint.path.endswith("checkpoint_000009") and epoch == 10  # not the best epoch (7)


def test_a_resumed_local_session_still_keeps_the_best_checkpoint(tmp_path):
    from trainables.runtime import checkpoints

    select = {"metric": "val/loss", "mode": "min"}
    first = LocalSession(tmp_path, checkpoint_every=1, keep=1, select=select)
    for epoch, loss in enumerate([0.5, 0.1, 0.3], 1):
        folder = tmp_path / f"src{epoch}"
        folder.mkdir()
        (folder / "epoch.txt").write_text(str(epoch))
        checkpoints.save({"epoch": epoch}, folder / checkpoints.STATE_FILE)
        first.report({"epoch": epoch, "val/loss": loss}, checkpoint_dir=str(folder))
    again = LocalSession(tmp_path, checkpoint_every=1, keep=1, select=select)
    again.restore_state()
    assert again.selection.best == 0.1 and (again.best_checkpoint / "epoch.txt").read_text() == "2"
    folder = tmp_path / "src4"
    folder.mkdir()
    (folder / "epoch.txt").write_text("4")
    again.report({"epoch": 4, "val/loss": 0.2}, checkpoint_dir=str(folder))
    assert {(p / "epoch.txt").read_text() for p in again.checkpoints()} == {"2", "4"}
