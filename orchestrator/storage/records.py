"""The study folder's own files, which every command reads: the study file as run
(`study.yaml`), its metadata (`study.json`: name, content hash, git commit, runs, planned
trials per stage) and the driver's record of every trial, one JSON file per stage
(`_orchestrator/stages/<stage>.json`), from which `status`, `results`, `report` and resumed
runs work without Ray."""

from __future__ import annotations

import json

import yaml

from orchestrator.errors import Problem, UserError
from orchestrator.storage.store import Store

STUDY_FILE = "study.yaml"
STUDY_META = "study.json"
STATE_DIR = "_orchestrator"
# a trial in one of these has ended for good (`eliminated`: stopped, or never started, by its stage's race)
ENDED_STATUSES = ("done", "diverged", "error", "eliminated")


def open_study(run_dir: str) -> Store:
    """The study folder at `run_dir` (a path or URI); a one-line error when there is none."""
    try:
        store = Store(run_dir)
        found = store.exists(STUDY_META)
    except OSError as exc:
        raise UserError(Problem(run_dir, f"cannot read storage: {' '.join(str(exc).split())[:200]}")) from None
    if not found:
        raise UserError(
            Problem(
                run_dir,
                f"no study here (expected {STUDY_META}); give the study's folder, "
                "e.g. runs/<study name> or s3://bucket/prefix/<study name>",
            )
        )
    return store


def read_json(store: Store, *parts: str) -> dict:
    """A JSON file of the study folder; a damaged one (cut short, edited by hand) is a one-line
    error naming it, not a traceback."""
    text = store.read_text(*parts)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(
            Problem(store.child_uri(*parts), f"not valid JSON ({exc}): this study folder's file is damaged")
        ) from None
    if not isinstance(data, dict):
        raise UserError(Problem(store.child_uri(*parts), f"expected a JSON object, got {type(data).__name__}"))
    return data


def read_meta(store: Store) -> dict:
    return read_json(store, STUDY_META)


def save_stage_record(store: Store, stage: str, record: dict, retry: bool = True) -> None:
    text = json.dumps(record, indent=1, sort_keys=True, default=str)
    store.write_text(text, STATE_DIR, "stages", f"{stage}.json", retry=retry)


def load_stage_record(store: Store, stage: str) -> dict | None:
    if not store.exists(STATE_DIR, "stages", f"{stage}.json"):
        return None
    return read_json(store, STATE_DIR, "stages", f"{stage}.json")


def load_records(store: Store) -> dict[str, dict]:
    """The records of the study's stages that have one (stages that started), in study order."""
    records = {}
    for name in read_meta(store).get("stages", {}):
        record = load_stage_record(store, name)
        if record:
            records[name] = record
    return records


def status_counts(trials: dict) -> dict[str, int]:
    """How many trials are in each status ({"done": 4, "error": 1, ...})."""
    counts: dict[str, int] = {}
    for t in trials.values():
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    return counts


def stage_needs(store: Store) -> dict[str, list[str]]:
    """Each stage's `needs`, from the study file stored with the study (records before 2026-12
    do not carry them)."""
    if not store.exists(STUDY_FILE):
        return {}
    study = yaml.safe_load(store.read_text(STUDY_FILE)) or {}
    return {name: list((stage or {}).get("needs") or []) for name, stage in (study.get("stages") or {}).items()}


GC_FILE = "gc.json"


def study_relative(uri: str | None) -> str | None:
    """A checkpoint's place in its study, `<stage>/<trial id>/<checkpoint>`, whatever the study
    folder is called or where it lies (a `sync`ed or moved copy has the same places)."""
    if not uri:
        return None
    return "/".join(uri.rstrip("/").split("/")[-3:])


def deleted_checkpoints(store: Store) -> set[str]:
    """The checkpoints `gc` deleted from this study (study-relative), which no record may name
    again: Tune's experiment state still knows them, and a restored experiment reports them."""
    if not store.exists(STATE_DIR, GC_FILE):
        return set()
    return set(read_json(store, STATE_DIR, GC_FILE).get("deleted", []))


def add_deleted_checkpoints(store: Store, deleted: set[str]) -> None:
    known = deleted_checkpoints(store) | deleted
    store.write_text(json.dumps({"deleted": sorted(known)}, indent=1), STATE_DIR, GC_FILE)
