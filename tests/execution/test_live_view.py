"""The live view of a running stage (`orchestrator/execution/live_view.py`), rendered into a
recorded terminal console: the stage's counts and best above, a bar per running trial in its
own unit with elapsed time, ETA and latest select metric; nothing live without a terminal."""

from __future__ import annotations

from rich.console import Console

from orchestrator.execution.live_view import LiveView, progress_of

SELECT = {"metric": "val/loss", "mode": "min"}


def test_a_bar_per_running_trial_and_the_stage_above():
    console = Console(record=True, force_terminal=True, width=140, color_system=None)
    view = LiveView(console, "pretrain", 4, SELECT)
    view.update("pretrain/a/s1", {"epoch": 3, "val/loss": 0.25}, {"epochs": 10})
    view.update("pretrain/b/s1", {"epoch": 8, "val/loss": 0.125}, {"epochs": 10})
    view.update("pretrain/c/s1", {}, {"epochs": 10})
    view.finish("pretrain/b/s1", "done", 0.1)
    view.update("pretrain/d/s1", {"epoch": 1}, {"epochs": 10})
    view.finish("pretrain/d/s1", "error", None)
    console.print(view.renderable())
    lines = [line for line in console.export_text().splitlines() if line.strip()]
    assert lines[0] == "stage pretrain: 2/4 ended, 2 running, 1 failed; best val/loss=0.1 (pretrain/b/s1)"
    trial_a = next(line for line in lines if "pretrain/a/s1" in line)
    assert "epoch 3/10" in trial_a and "ETA" in trial_a and "val/loss=0.25" in trial_a and "━" in trial_a
    assert "starting" in next(line for line in lines if "pretrain/c/s1" in line)
    assert not any("pretrain/b/s1" in line for line in lines[1:])  # ended: no bar


def test_no_live_display_without_a_terminal():
    console = Console(record=True, force_terminal=False)
    view = LiveView(console, "pretrain", 2, SELECT).start()
    view.update("pretrain/a/s1", {"epoch": 1}, {"epochs": 2})
    view.stop()
    assert view._live is None and console.export_text() == ""


def test_progress_in_each_trainables_unit():
    assert progress_of({"epoch": 2}, {"epochs": 5}) == ("epoch", 2.0, 5.0)
    assert progress_of({"fold": 1}, {"folds": 5}) == ("fold", 1.0, 5.0)
    assert progress_of({"step": 40, "epoch": 0.5}, {"max_steps": 100}) == ("step", 40.0, 100.0)
    assert progress_of({"dataset": 1}, {"beir": ["a", "b", "c"]}) == ("dataset", 1.0, 3.0)
    assert progress_of({"loss": 1.0}, {}) is None
