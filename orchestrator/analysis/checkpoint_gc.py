"""`gc RUN_DIR [--keep best|selected|latest] [--dry-run]`: delete the checkpoints a finished
study no longer needs, on local disk or S3, and say what that frees.

What is always kept:
- every checkpoint a later stage used (the `upstream.*.checkpoint` lineage of its trials);
- every checkpoint of a trial that has not finished (interrupted, running, errored: `resume` and
  `--retry-errored` continue it from them, and Tune rotates them);
- the best and newest checkpoints of every trial of a stage that a stage not yet complete needs
  (its references, `${stage.best.checkpoint}`, `top[k]`, `.latest_checkpoint`, resolve later);
- what the kept choice below names, for every other finished trial:
  - `best` (default): its best epoch's checkpoint (the table's `checkpoint` column);
  - `latest`: that and its newest checkpoint (to train on from the final weights);
  - `selected`: only the best trial's of each stage (by its `select`), other trials keep none.

Everything else under a trial's folder named `checkpoint_NNNNNN/` (Tune's) or
`checkpoint_epoch_N.pt` (multitask_span's periodic weights; the best epoch's is kept with the
best checkpoint, the last epoch's with the newest) is deleted. A record field that named a
deleted checkpoint (`checkpoint`, `latest_checkpoint`) is cleared and the tables are written
again, so every path the results show stays valid; the deleted ones are listed in
`_orchestrator/gc.json`, and a later run (a restore, `--retry-errored`) never writes them into a
record again. A running study (its driver holds the study's lease: `storage/lease.py`) is
refused.

Checkpoints are matched by their place in the study folder (`<stage>/<trial>/<checkpoint>`), not
by the absolute path recorded, so a study copied with `sync` is collected in its new place.
"""

from __future__ import annotations

import datetime
import json
import posixpath
import re
from dataclasses import dataclass, field

import pyarrow.fs as pafs
from rich.console import Console

from orchestrator.analysis.run_summary import write_all
from orchestrator.errors import Problem, UserError
from orchestrator.planning.references import ranked, successful
from orchestrator.storage.lease import holder
from orchestrator.storage.records import (
    STATE_DIR,
    add_deleted_checkpoints,
    load_records,
    open_study,
    save_stage_record,
    stage_needs,
    study_relative,
)
from orchestrator.storage.store import Store
from trainables.runtime.retries import with_retries

KEEP = ("best", "selected", "latest")
FINISHED = ("done", "diverged", "eliminated")  # ended for good: only what is kept stays
TUNE_CHECKPOINT = re.compile(r"^checkpoint_\d+$")
EPOCH_FILE = re.compile(r"^checkpoint_epoch_(\d+)\.pt$")
NAMED = re.compile(r"^(.*/checkpoint_\d+)(/.*)?$")  # a checkpoint folder, or a file in one
RUNNING_WITHIN_S = 120.0


@dataclass
class Collection:
    """What `gc` found: (study-relative path, bytes) to delete, and how much stays."""

    remove: list[tuple[str, int]] = field(default_factory=list)
    kept: list[tuple[str, int]] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(size for _, size in self.remove)


def _epoch_rel(rel: str | None, epoch) -> str | None:
    """The periodic-weights file of a trial's epoch, beside its checkpoints."""
    if rel is None or not isinstance(epoch, (int, float)):
        return None
    return f"{posixpath.dirname(rel)}/checkpoint_epoch_{int(epoch)}.pt"


def kept_paths(records: dict[str, dict], needs: dict[str, list[str]], keep: str) -> set[str]:
    """Study-relative paths of the checkpoints to keep (see the module doc)."""
    kept: set[str] = set()
    pending = {
        dep for stage, deps in needs.items() for dep in deps if (records.get(stage) or {}).get("state") != "complete"
    }
    for name, record in records.items():
        trials = record.get("trials", {})
        chosen = (ranked(record, successful(record)) or [None])[0]  # what `${stage.best}` resolves to
        for t in trials.values():
            for up in (t.get("upstream") or {}).values():  # lineage: what later stages used
                kept.add(study_relative(up.get("checkpoint")))
            kept |= _named_in(t.get("config"))  # and any checkpoint a config names
            best, latest = study_relative(t.get("checkpoint")), study_relative(t.get("latest_checkpoint"))
            if t["status"] not in FINISHED:
                kept.add(f"{name}/{t['trial_id']}/*")  # every checkpoint of an unfinished trial
                continue
            if name in pending or keep == "latest":
                kept |= {best, latest, _epoch_rel(best, t.get("best_epoch")), _epoch_rel(latest, _last_epoch(t))}
            elif keep == "best" or (keep == "selected" and t is chosen):
                kept |= {best, _epoch_rel(best, t.get("best_epoch"))}
    kept.discard(None)
    return kept


def _named_in(config) -> set[str]:
    """The checkpoints (study-relative) that a trial's config values name, at any depth."""
    if isinstance(config, dict):
        return set().union(*(_named_in(v) for v in config.values())) if config else set()
    if isinstance(config, list):
        return set().union(*(_named_in(v) for v in config)) if config else set()
    match = NAMED.match(config) if isinstance(config, str) else None
    return {study_relative(match.group(1))} if match else set()


def _last_epoch(trial: dict):
    metrics = trial.get("metrics") or {}
    return metrics.get("epoch", trial.get("iterations"))


def collect(store: Store, records: dict[str, dict], keep: str) -> Collection:
    """List every checkpoint of every trial of the study, sorted into kept and to delete."""
    kept = kept_paths(records, stage_needs(store), keep)
    out = Collection()
    for name, record in records.items():
        for tid in record.get("trials", {}):
            if f"{name}/{tid}/*" in kept:
                continue
            for info in _entries(store, name, tid):
                base = posixpath.basename(info.path)
                if not (TUNE_CHECKPOINT.match(base) or EPOCH_FILE.match(base)):
                    continue
                rel, size = f"{name}/{tid}/{base}", _size(store, info)
                (out.kept if rel in kept else out.remove).append((rel, size))
    out.remove.sort()
    return out


def _entries(store: Store, stage: str, tid: str) -> list[pafs.FileInfo]:
    selector = pafs.FileSelector(store.path(stage, tid), allow_not_found=True, recursive=False)
    return with_retries(f"listing {store.child_uri(stage, tid)}", lambda: store.fs.get_file_info(selector))


def _size(store: Store, info: pafs.FileInfo) -> int:
    if info.type == pafs.FileType.File:
        return info.size or 0
    selector = pafs.FileSelector(info.path, allow_not_found=True, recursive=True)
    infos = with_retries(f"listing {info.path}", lambda: store.fs.get_file_info(selector))
    return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)


def garbage_collect(run_dir: str, keep: str, dry_run: bool, console: Console) -> Collection:
    """Delete (or with `dry_run` list) the checkpoints the study no longer needs."""
    if keep not in KEEP:
        raise UserError(Problem("--keep", f"unknown choice {keep!r}; expected best, selected or latest"))
    store = open_study(run_dir)
    _refuse_running(store)
    records = load_records(store)
    if not records:
        raise UserError(Problem(run_dir, "nothing to collect (no stage of this study has ended)"))
    found = collect(store, records, keep)
    verb = "would delete" if dry_run else "deleting"
    for rel, size in found.remove:
        console.print(f"{verb} {store.child_uri(rel)} ({_mb(size)})", markup=False, highlight=False)
    if not dry_run:
        for rel, _ in found.remove:
            path = store.path(rel)
            delete = store.fs.delete_file if EPOCH_FILE.match(posixpath.basename(rel)) else store.fs.delete_dir
            with_retries(f"deleting {store.child_uri(rel)}", lambda p=path, d=delete: d(p))
        add_deleted_checkpoints(store, {rel for rel, _ in found.remove})  # no later record names them again
        _forget(store, records, {rel for rel, _ in found.remove})
    kept = sum(size for _, size in found.kept)
    console.print(
        f"{'would free' if dry_run else 'freed'} {_mb(found.freed)} in {len(found.remove)} checkpoint(s); "
        f"kept {len(found.kept)} ({_mb(kept)}) by --keep {keep}, lineage and unfinished trials"
    )
    return found


def _forget(store: Store, records: dict[str, dict], removed: set[str]) -> None:
    """Clear the record fields that named a deleted checkpoint, and write the tables again."""
    changed = False
    for name, record in records.items():
        touched = False
        for t in record.get("trials", {}).values():
            for key in ("checkpoint", "latest_checkpoint"):
                if study_relative(t.get(key)) in removed:
                    t[key], t.setdefault("gc", {})[key] = None, "deleted by gc"
                    touched = True
        if touched:
            save_stage_record(store, name, record)
            changed = True
    if changed:
        write_all(store, list(records.values()))


def _refuse_running(store: Store) -> None:
    """A study whose driver holds its lease is running: its trials are writing checkpoints
    (`orchestrator/storage/lease.py`). A study run before leases existed has none: its live
    status is taken to say it runs when it is fresh."""
    running = holder(store)
    if running:
        raise UserError(Problem(store.uri, f"the study is running ({running}); collect after it ends"))
    if store.exists(STATE_DIR, "lease.json") or not store.exists(STATE_DIR, "status.json"):
        return
    status = json.loads(store.read_text(STATE_DIR, "status.json"))
    running = [n for n, s in status.get("stages", {}).items() if s.get("state") == "running"]
    try:
        updated = datetime.datetime.strptime(status.get("updated_at", ""), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return
    age = (datetime.datetime.now(datetime.timezone.utc) - updated).total_seconds()
    if running and age < RUNNING_WITHIN_S:
        raise UserError(
            Problem(
                store.uri, f"the study is running (stage {running[0]}, status {age:.0f} s old); collect after it ends"
            )
        )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
