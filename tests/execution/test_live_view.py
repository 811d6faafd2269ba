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


def test_eta_counts_the_units_of_this_attempt_only(monkeypatch):
    """A trial resumed at epoch 40 of 50 that took 10 s for its first 2 epochs here has 40 s
    left, not 2.5 s (elapsed / 42 epochs x 8): the budget's projection reads this ETA."""
    import orchestrator.execution.live_view as live_view

    view = LiveView(Console(file=None, quiet=True), "pretrain", 1, SELECT)
    view.update("pretrain/a/s1", {"epoch": 41}, {"epochs": 50})  # the first report of this attempt
    view.update("pretrain/a/s1", {"epoch": 42}, {"epochs": 50})
    view.running["pretrain/a/s1"].started = 100.0
    monkeypatch.setattr(live_view.time, "monotonic", lambda: 110.0)
    assert view.eta_s("pretrain/a/s1") == 10.0 / 2 * 8
    assert view.eta_s("pretrain/z/s1") is None


def test_a_done_trial_whose_group_loses_its_race_is_counted_eliminated_and_is_not_the_best():
    view = LiveView(Console(), "pre", 4, {"metric": "val/loss", "mode": "min"})
    view.finish("pre/a/s1", "done", 0.1)
    view.finish("pre/b/s1", "done", 0.2)
    view.finish("pre/a/s2", "eliminated", None)
    view.relabel("pre/a/s1", "done", "eliminated")
    assert view.counts == {"done": 1, "failed": 0, "eliminated": 2}
    assert view.best == (0.2, "pre/b/s1")
    head = view.renderable().renderables[0].plain
    assert head == "stage pre: 3/4 ended, 0 running, 0 failed, 2 eliminated; best val/loss=0.2 (pre/b/s1)"
