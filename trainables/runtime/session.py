"""The thin interface between a trainable and whatever runs it.

Under Ray Tune, `TuneSession` reports through `ray.tune.report` and resumes from
`ray.tune.get_checkpoint()`. Without Ray, `LocalSession` keeps checkpoints and metrics in a
folder, so that unit tests and debugging need no cluster. A trainable only ever talks to a
`Session`.

Every session knows its stage's `select` metric (`trainables.runtime.selection`): it tracks the best
value over every report, adds it to what it sends, asks for a checkpoint at every improvement
(`checkpoint_due(epoch, metrics)`), and saves the selection inside each checkpoint so that a
resumed trial continues it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pyarrow.fs as pafs

from trainables.runtime import selection as sel
from trainables.runtime.retries import with_retries

log = logging.getLogger(__name__)


class Session(Protocol):
    artifact_dir: Path
    context: dict  # who runs the trial (study, stage, trial id, git commit): goes into metadata.json
    selection: sel.Selection  # the stage's select metric and this trial's best so far

    def checkpoint_due(self, epoch: int, metrics: dict | None = None) -> bool:
        """Whether the trainable should checkpoint after `epoch` (it always does after its last):
        the checkpoint clock says so, or `metrics` (the epoch's, about to be reported) improve
        the stage's select metric, so that the best epoch has its own checkpoint."""

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        """Record one epoch's metrics, optionally with a checkpoint folder to persist."""

    def restore_state(self, map_location="cpu") -> dict | None:
        """The newest readable checkpoint state (`state.pt`), or None to start fresh."""


class CheckpointClock:
    """Checkpoint every N epochs, or (N = None) once `interval_s` passed since the last one, and
    at every epoch that improves the select metric; keeps the selection (see the module doc)."""

    def __init__(self, every: int | None, interval_s: float, select: dict | None = None):
        self.checkpoint_every, self.checkpoint_interval_s = every, interval_s
        self.selection = sel.Selection.of(select)
        self._last = time.monotonic()

    def checkpoint_due(self, epoch: int, metrics: dict | None = None) -> bool:
        if self.checkpoint_every is not None:
            due = epoch % self.checkpoint_every == 0
        else:
            due = time.monotonic() - self._last >= self.checkpoint_interval_s
        due = due or (metrics is not None and self.selection.improves(metrics))
        if due:
            self._last = time.monotonic()
        return due

    def _select(self, metrics: dict, checkpoint_dir: str | None) -> dict:
        """Update the selection with one report; the report as sent (with the selection's
        summary), and the selection saved into the checkpoint folder when there is one."""
        improved = self.selection.update(metrics)
        out = {**metrics, **self.selection.summary()}
        if checkpoint_dir is not None and self.selection.active:
            out[sel.CHECKPOINT_SCORE] = self.selection.improvements if improved else 0
            # `is_best`: this checkpoint is of the improving epoch itself (a later checkpoint
            # carries the same selection, but not that epoch's weights)
            write_json({**self.selection.state_dict(), "is_best": improved}, Path(checkpoint_dir) / sel.STATE_FILE)
        return out

    def _restored(self, state: dict | None) -> dict | None:
        if state is not None:
            saved = state.pop("_selection", None)
            if saved:
                self.selection.load_state_dict(saved)
        return state


def first_readable(candidates: Iterator[contextlib.AbstractContextManager[str]], map_location) -> dict | None:
    """Load `state.pt` from the newest candidate folder that holds a readable one.

    A truncated or corrupt checkpoint (a crash while writing, a bad disk) is skipped with a
    warning and the previous one is used: losing a few epochs beats losing the trial.
    """
    from trainables.runtime import checkpoints

    for candidate in candidates:
        with candidate as folder:
            try:
                state = checkpoints.load(Path(folder) / checkpoints.STATE_FILE, map_location=map_location)
            except ValueError as exc:
                log.warning("skipping unreadable checkpoint: %s", exc)
                print(f"warning: skipping unreadable checkpoint: {exc}", flush=True)
                continue
            state["_restored_from"] = str(folder)
            selection = Path(folder) / sel.STATE_FILE
            if selection.exists():
                state["_selection"] = json.loads(selection.read_text())
            return state
    return None


def write_metrics_csv(rows: list[dict], path: Path) -> None:
    """Per-epoch metrics as CSV (columns: union of keys in first-seen order), written atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


class LocalSession(CheckpointClock):
    """Runs a trainable without Ray: checkpoints under `root/checkpoints/`, metrics in memory.

    Keeps the newest `keep` checkpoints and, with a select metric, the best epoch's one
    (`best_checkpoint`), as the Tune runner does.
    """

    def __init__(
        self,
        root: str | Path,
        checkpoint_every: int | None = 1,
        keep: int | None = 2,
        checkpoint_interval_s: float = 30.0,
        select: dict | None = None,
    ):
        super().__init__(checkpoint_every, checkpoint_interval_s, select)
        self.artifact_dir = Path(root)
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.context: dict = {}
        self.metrics: list[dict] = []
        self.best_checkpoint: Path | None = None
        self._ckpt_root = self.artifact_dir / "checkpoints"

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        metrics = self._select(metrics, checkpoint_dir)
        self.metrics.append(metrics)
        if checkpoint_dir is None:
            return
        existing = self.checkpoints()
        index = int(existing[-1].name.split("_")[-1]) + 1 if existing else 0
        target = self._ckpt_root / f"checkpoint_{index:06d}"
        tmp = self._ckpt_root / f".tmp_checkpoint_{index:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint_dir, tmp)
        os.replace(tmp, target)
        if metrics.get(sel.CHECKPOINT_SCORE):
            self.best_checkpoint = target
        if self.keep is not None:
            for old in self.checkpoints()[: -self.keep]:
                if old != self.best_checkpoint:
                    shutil.rmtree(old)

    def checkpoints(self) -> list[Path]:
        if not self._ckpt_root.exists():
            return []
        return sorted(p for p in self._ckpt_root.iterdir() if p.name.startswith("checkpoint_"))

    def restore_state(self, map_location="cpu") -> dict | None:
        newest = list(reversed(self.checkpoints()))  # numbered in the order they were written
        state = self._restored(first_readable((contextlib.nullcontext(str(p)) for p in newest), map_location))
        for folder in newest:  # which kept checkpoint is the best epoch's (not to be pruned)
            saved = read_selection(pafs.LocalFileSystem(), str(folder))
            if saved and saved.get("is_best") and saved.get("improvements") == self.selection.improvements:
                self.best_checkpoint = folder
                break
        return state


class TuneSession(CheckpointClock):
    """Reports to Ray Tune; artifacts go to the trial's working folder, which Tune syncs to storage."""

    def __init__(
        self,
        checkpoint_every: int | None = 1,
        context: dict | None = None,
        checkpoint_interval_s: float = 30.0,
        report_interval_s: float = 0.0,
        select: dict | None = None,
    ):
        super().__init__(checkpoint_every, checkpoint_interval_s, select)
        self.artifact_dir = Path.cwd()
        self.context = context or {}
        self.report_interval_s = report_interval_s
        self._held: dict | None = None
        self._last_sent = -float("inf")
        self.telemetry = None  # a trainables.runtime.telemetry.GpuSampler on CUDA machines

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        """Send to Tune; reports closer than `report_interval_s` to the previous one are held.

        A function trainable's `tune.report` waits for a round trip to the driver (Tune hands
        control back only when it asks for the next result): tens of milliseconds that add up
        over many short epochs. A held report is replaced by the next one; a report with a
        checkpoint, and the last one (`flush`), always go out. Every epoch is still in the
        trial's metrics.csv, and in the selection: a held report updates it too, and every
        report carries the best so far, so nothing the ranking needs is lost with it.
        """
        metrics = self._select(metrics, checkpoint_dir)
        now = time.monotonic()
        if checkpoint_dir is None and now - self._last_sent < self.report_interval_s:
            self._held = metrics
            return
        self._send(metrics, checkpoint_dir)

    def flush(self) -> None:
        if self._held is not None:
            self._send(self._held, None)

    def _send(self, metrics: dict, checkpoint_dir: str | None) -> None:
        from ray import tune

        self._held = None
        self._last_sent = time.monotonic()
        if self.telemetry is not None:
            metrics = {**metrics, **self.telemetry.stats()}
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        # Ray persists the checkpoint to storage before it queues the result, so a report that
        # failed on a storage outage can be repeated without reporting twice.
        with_retries("reporting a checkpoint", lambda: tune.report(metrics, checkpoint=checkpoint))

    @property
    def reported(self) -> bool:
        """Whether this attempt of the trial sent Tune any result."""
        return self._last_sent != -float("inf")

    def restore_state(self, map_location="cpu") -> dict | None:
        """The checkpoint state this attempt of the trial continues from, or None.

        Normally the newest readable checkpoint of this trial in storage, not only the one Tune
        hands back (`tune.get_checkpoint()`): that one comes from Tune's experiment snapshot,
        taken every ~10 s, so after a killed driver a trial that had finished or checkpointed
        since the snapshot would redo its last epochs. Every `checkpoint_*` folder of the trial
        is a candidate, the newest `state.pt` first (by modification time: a restored trial
        numbers its checkpoints on from the snapshot's count, so names can repeat out of order).

        Except when Tune hands this trial *another trial's* checkpoint: that is PBT exploiting a
        better trial, and the point is to continue from the donor's weights, so the donor's
        checkpoint is the state. The selection stays this trial's own (from its newest
        checkpoint): its best value and best checkpoint are of epochs it reported itself.
        """
        from ray import tune

        latest = tune.get_checkpoint()
        storage = tune.get_context().get_storage()
        fs, trial_dir = storage.storage_filesystem, storage.trial_fs_path
        paths = with_retries("listing the trial's checkpoints", lambda: checkpoints_newest_first(fs, trial_dir))
        if latest is not None and not _inside(latest.path, trial_dir):
            state = first_readable(iter([latest.as_directory()]), map_location)
            if state is not None:
                state.pop("_selection", None)
                own = read_selection(fs, paths[0]) if paths else None
                if own:
                    self.selection.load_state_dict(own)
                return state
        if latest is not None and latest.path.rstrip("/") not in paths:
            paths.append(latest.path.rstrip("/"))
        if not paths:
            return None
        return self._restored(
            first_readable((tune.Checkpoint(path, filesystem=fs).as_directory() for path in paths), map_location)
        )


def _inside(path: str, folder: str) -> bool:
    path, folder = path.rstrip("/"), folder.rstrip("/")
    return path == folder or path.startswith(folder + "/")


def read_selection(fs: pafs.FileSystem, checkpoint_dir: str) -> dict | None:
    """The selection saved in a checkpoint folder in storage, or None (none saved, unreadable)."""
    try:
        with fs.open_input_stream(posixpath.join(checkpoint_dir, sel.STATE_FILE)) as f:
            return json.loads(f.read())
    except (OSError, ValueError):  # no selection.json in it (a stage without select), or garbled
        return None


def checkpoints_newest_first(fs: pafs.FileSystem, trial_dir: str) -> list[str]:
    """The trial's `checkpoint_*` folders that hold a `state.pt`, most recently written first."""
    from trainables.runtime.checkpoints import STATE_FILE

    infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    folders = [
        i.path.rstrip("/")
        for i in infos
        if i.type == pafs.FileType.Directory and posixpath.basename(i.path.rstrip("/")).startswith("checkpoint_")
    ]
    states = fs.get_file_info([posixpath.join(folder, STATE_FILE) for folder in folders])
    written = [(info.mtime, folder) for info, folder in zip(states, folders) if info.type == pafs.FileType.File]
    return [
        folder
        for _, folder in sorted(
            written, key=lambda pair: (pair[0].timestamp() if pair[0] else 0.0, pair[1]), reverse=True
        )
    ]


class TrainSession(CheckpointClock):
    """One data-parallel worker of a Ray Train run (a trial with `workers: N`).

    Every rank calls `report` once per epoch (Ray Train's report is collective); only rank 0's
    checkpoint is kept. Rank 0's artifacts (metrics.csv, metadata.json, ...) are written to a
    local folder and copied into each checkpoint under `artifacts/`, because the worker may run
    on another node than the Tune trial: the trial copies them into its own folder after the run.
    Checkpoints are due every N epochs only (a time-based clock would differ between ranks).
    """

    ARTIFACTS = "artifacts"

    def __init__(self, checkpoint_every: int | None = 1, context: dict | None = None, select: dict | None = None):
        super().__init__(checkpoint_every or 1, 0.0, select)
        from ray import train

        ctx = train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.artifact_dir = Path(tempfile.mkdtemp(prefix=f"rank{self.rank}-"))
        self.context = context or {}
        self.telemetry = None  # a trainables.runtime.telemetry.GpuSampler of this rank's GPU

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        from ray import train

        metrics = self._select(metrics, checkpoint_dir)
        if self.telemetry is not None:  # on every rank alike (each has its GPU): a collective
            from trainables.runtime import distributed, telemetry

            metrics = {**metrics, **telemetry.merge_ranks(distributed.gather(self.telemetry.stats()))}
        checkpoint = None
        if checkpoint_dir is not None and self.rank == 0:
            shutil.copytree(self.artifact_dir, Path(checkpoint_dir) / self.ARTIFACTS, dirs_exist_ok=True)
            checkpoint = train.Checkpoint.from_directory(checkpoint_dir)
        train.report(metrics, checkpoint=checkpoint)

    def restore_state(self, map_location="cpu") -> dict | None:
        from ray import train

        latest = train.get_checkpoint()
        if latest is None:
            return None
        return self._restored(first_readable(iter([latest.as_directory()]), map_location))


def default_session() -> Session:
    """TuneSession inside a Tune trial, else a LocalSession in a temporary folder."""
    try:
        from ray import tune

        in_tune = tune.get_context().get_trial_id() is not None
    except (ImportError, RuntimeError, AttributeError):  # no Ray, or not inside a Tune trial
        in_tune = False
    return TuneSession() if in_tune else LocalSession(tempfile.mkdtemp(prefix="trial-"))


def write_json(data: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
