"""What a Tune trial's results say, as the driver's record keeps it: its own metrics (Tune's
bookkeeping left out), its best checkpoint and that checkpoint's epoch, its error line, and the
best finished trial of a stage. Functions of Tune's objects and of records: no state."""

from __future__ import annotations

import os
import re

from orchestrator.storage.store import Store
from trainables.runtime import selection
from trainables.runtime.session import checkpoints_newest_first, read_selection

# Tune's bookkeeping keys: not metrics of the trial.
TUNE_KEYS = {
    "timestamp",
    "checkpoint_dir_name",
    "should_checkpoint",
    "done",
    "training_iteration",
    "trial_id",
    "date",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "hostname",
    "node_ip",
    "config",
    "time_since_restore",
    "iterations_since_restore",
    "experiment_tag",
}


def final_metrics(last_result: dict) -> dict:
    """The trial's own metrics of a Tune result (numbers only, Tune's bookkeeping left out)."""
    return {
        k: v
        for k, v in last_result.items()
        if k not in TUNE_KEYS and isinstance(v, (int, float, bool)) and not isinstance(v, dict)
    }


def trial_uri(store: Store, path: str | None) -> str | None:
    """A storage path as reported by Tune (no scheme) -> a URI the user can open."""
    if path is None:
        return None
    return path if store.local else f"{store.uri.split('://')[0]}://{path}"


def best_trial(trials, select: dict | None) -> dict | None:
    """The finished trial with the best value of the stage's select metric ({"metric", "mode"}),
    or None (no select, or no finished trial with a value)."""
    scored = [t for t in trials if t.get("best") is not None and t["status"] == "done"]
    if not select or not scored:
        return None
    return (min if select["mode"] == "min" else max)(scored, key=lambda t: t["best"])


def result_epoch(result) -> float | None:
    """The epoch (or fold, step: the trainable's unit, else Tune's report count) of a Tune
    checkpoint result, from the metrics reported with it."""
    if result is None:
        return None
    metrics = result.metrics or {}
    unit = next((metrics[u] for u in selection.UNITS if isinstance(metrics.get(u), (int, float))), None)
    return unit if unit is not None else metrics.get("training_iteration")


def best_checkpoint(trial, last: dict, search_storage: bool = True):
    """(checkpoint, its epoch) of the trial's best epoch by the select metric, or (None, None).
    The epoch is the checkpoint's own: when the best epoch's checkpoint was not kept
    (`checkpoint.keep_best: false` rotates checkpoints by age), it is another epoch's, and the
    record says which.

    Tune keeps checkpoints by `select/checkpoint_score` (stage_runner.checkpoint_config), so its best one is
    the last improvement it registered. That is the best epoch's unless the driver died between
    a trial's improving checkpoint and Tune's next experiment snapshot (a restored Tune does not
    know that checkpoint); then the trial folder is searched for the checkpoint saved at that
    improvement (its `selection.json` says `is_best` with the improvement count of the trial's
    last report). Without `search_storage`, Tune's best as it stands.
    """
    from ray.tune import Checkpoint

    wanted = last.get(selection.IMPROVEMENTS)
    manager = trial.run_metadata.checkpoint_manager
    result = manager.best_checkpoint_result
    as_is = (result.checkpoint, result_epoch(result)) if result is not None else (None, None)
    if result is not None and (wanted is None or result.metrics.get(selection.CHECKPOINT_SCORE) == wanted):
        return as_is
    storage = trial.storage
    if storage is None or wanted is None or not search_storage:
        return as_is
    fs = storage.storage_filesystem
    for path in checkpoints_newest_first(fs, storage.trial_fs_path):
        saved = read_selection(fs, path)
        if saved and saved.get("is_best") and saved.get("improvements") == wanted:
            return Checkpoint(path, filesystem=fs), last.get(selection.BEST_EPOCH)
    return as_is


def error_text(trial) -> str | None:
    """The trial's error trace. Tune writes it to the trial's local folder first and syncs it
    to storage later, so when on_trial_error fires `get_error()` (which reads storage) may
    still find nothing (seen: "unknown error" on the terminal, the real error in the table)."""
    error = trial.get_error()
    if error is None and trial.error_file and os.path.exists(trial.error_file):
        with open(trial.error_file) as f:
            error = f.read()
    return error


def exception_line(trace: str) -> str:
    """`RuntimeError: message` from a traceback: from the last line that names an exception
    to the end (a message may span lines), else the last line."""
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    named = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b:?", line)]
    return " ".join(lines[named[-1] :]) if named else (lines[-1] if lines else "")
