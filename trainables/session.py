"""The thin interface between a trainable and whatever runs it.

Under Ray Tune, `TuneSession` reports through `ray.tune.report` and resumes from
`ray.tune.get_checkpoint()`. Without Ray, `LocalSession` keeps checkpoints and metrics in a
folder, so that unit tests and debugging need no cluster. A trainable only ever talks to a
`Session`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Protocol


class Session(Protocol):
    artifact_dir: Path
    checkpoint_every: int
    context: dict  # who runs the trial (study, stage, trial id, git commit): goes into metadata.json

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        """Record one epoch's metrics, optionally with a checkpoint folder to persist."""

    def restored(self) -> contextlib.AbstractContextManager[str | None]:
        """Context manager yielding the folder of the checkpoint to resume from, or None."""


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


class LocalSession:
    """Runs a trainable without Ray: checkpoints under `root/checkpoints/`, metrics in memory."""

    def __init__(self, root: str | Path, checkpoint_every: int = 1, keep: int | None = 2):
        self.artifact_dir = Path(root)
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_every = checkpoint_every
        self.keep = keep
        self.context: dict = {}
        self.metrics: list[dict] = []
        self._ckpt_root = self.artifact_dir / "checkpoints"

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        self.metrics.append(dict(metrics))
        if checkpoint_dir is None:
            return
        existing = self.checkpoints()
        index = int(existing[-1].name.split("_")[-1]) + 1 if existing else 0
        target = self._ckpt_root / f"checkpoint_{index:06d}"
        tmp = self._ckpt_root / f".tmp_checkpoint_{index:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint_dir, tmp)
        os.replace(tmp, target)
        if self.keep is not None:
            for old in self.checkpoints()[:-self.keep]:
                shutil.rmtree(old)

    def checkpoints(self) -> list[Path]:
        if not self._ckpt_root.exists():
            return []
        return sorted(p for p in self._ckpt_root.iterdir() if p.name.startswith("checkpoint_"))

    @contextlib.contextmanager
    def restored(self) -> Iterator[str | None]:
        found = self.checkpoints()
        yield str(found[-1]) if found else None


class TuneSession:
    """Reports to Ray Tune; artifacts go to the trial's working folder, which Tune syncs to storage."""

    def __init__(self, checkpoint_every: int = 1, context: dict | None = None):
        self.artifact_dir = Path.cwd()
        self.checkpoint_every = checkpoint_every
        self.context = context or {}

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    @contextlib.contextmanager
    def restored(self) -> Iterator[str | None]:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as path:
            yield path


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
