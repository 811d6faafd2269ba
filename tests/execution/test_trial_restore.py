"""A restored trial whose snapshot checkpoint was pruned after the snapshot (a killed driver)
starts from its newest checkpoint on storage, not from nothing and not as an error."""

from __future__ import annotations

import os
import types

import pyarrow.fs as pafs
from ray import tune

from orchestrator.execution.stage_runner import stage_trainable
from orchestrator.execution.trial import RestoreFromNewestCheckpoint


class _Result:  # the shape of Tune's _TrainingResult: (checkpoint, metrics)
    def __init__(self, checkpoint, metrics):
        self.checkpoint, self.metrics = checkpoint, metrics


class _Tune:  # what the mixin sits on: Trainable.restore
    def restore(self, checkpoint_path):
        self.restored = checkpoint_path


class _Actor(RestoreFromNewestCheckpoint, _Tune):
    def __init__(self, trial_dir):
        self._storage = types.SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), trial_fs_path=str(trial_dir))
        self.restored = None


def _checkpoint(trial_dir, name, mtime):
    folder = trial_dir / name
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(b"x")
    os.utime(folder / "state.pt", (mtime, mtime))
    return folder


def test_a_pruned_snapshot_checkpoint_is_replaced_by_the_newest_one(tmp_path):
    _checkpoint(tmp_path, "checkpoint_000004", 1_000)
    newest = _checkpoint(tmp_path, "checkpoint_000005", 2_000)
    actor = _Actor(tmp_path)
    actor.restore(_Result(tune.Checkpoint(str(tmp_path / "checkpoint_000002")), {"training_iteration": 2}))
    assert actor.restored.checkpoint.path == str(newest)
    assert actor.restored.metrics == {"training_iteration": 2}  # Tune's iteration count carries on


def test_a_checkpoint_that_exists_is_restored_as_given(tmp_path):
    given = _Result(tune.Checkpoint(str(_checkpoint(tmp_path, "checkpoint_000004", 1_000))), {})
    _checkpoint(tmp_path, "checkpoint_000005", 2_000)
    actor = _Actor(tmp_path)
    actor.restore(given)
    assert actor.restored is given


def test_with_no_checkpoint_left_the_trial_starts_afresh(tmp_path):
    actor = _Actor(tmp_path)
    actor.restore(_Result(tune.Checkpoint(str(tmp_path / "checkpoint_000002")), {}))
    assert actor.restored is None


def test_every_stage_trainable_restores_this_way():
    assert issubclass(stage_trainable("study", "stage", {"cpu": 1}), RestoreFromNewestCheckpoint)
