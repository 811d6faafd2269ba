"""Which checkpoint a resumed Tune trial restores (trainables/runtime/session.py)."""

from __future__ import annotations

import os

import pyarrow.fs as pafs

from trainables.runtime.session import checkpoints_newest_first


def test_checkpoints_are_ordered_by_when_their_state_was_written_not_by_name(tmp_path):
    # A trial restored from a lagging Tune snapshot numbers its checkpoints on from the
    # snapshot's count, so checkpoint_000001 can be newer than checkpoint_000002.
    for name, mtime in [("checkpoint_000001", 2_000), ("checkpoint_000002", 1_000)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.pt").write_bytes(b"x")
        os.utime(tmp_path / name / "state.pt", (mtime, mtime))
    (tmp_path / "checkpoint_000003").mkdir()  # upload cut short: no state.pt
    (tmp_path / "checkpoint_notes.txt").write_text("")  # not a folder
    (tmp_path / "metrics.csv").write_text("")

    found = checkpoints_newest_first(pafs.LocalFileSystem(), str(tmp_path))

    assert [os.path.basename(p) for p in found] == ["checkpoint_000001", "checkpoint_000002"]


def test_a_trial_folder_that_does_not_exist_yet_has_no_checkpoints(tmp_path):
    assert checkpoints_newest_first(pafs.LocalFileSystem(), str(tmp_path / "missing")) == []
