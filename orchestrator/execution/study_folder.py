"""The study's folder in storage at the start of a run: the study file and its metadata recorded
there, or, when the folder holds the study already, the check that it is the same study (its
content hash), so that a run never mixes two studies' trials in one folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from orchestrator.errors import Problem, UserError
from orchestrator.planning.expand import Plan
from orchestrator.storage.records import STUDY_FILE, STUDY_META, read_meta
from orchestrator.storage.store import Store

# Settings that change no trial: where the study is stored, its description, its spend cap (so
# that a study stopped by its budget can run again with a larger one), its notifications and
# size limit (studies stored before these existed keep their hash).
NOT_CONTENT = {"storage", "description", "budget", "notify", "limits"}


def spec_hash(plan: Plan, exclude: set[str] = NOT_CONTENT) -> str:
    """Identity of the study's content (see NOT_CONTENT; and how the tables group seeds:
    `within_seed` changes no trial, and studies stored before it existed must keep their hash)."""
    data = plan.study.model_dump(exclude=exclude)
    for stage in data["stages"].values():
        stage.pop("within_seed", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _same_study(plan: Plan, stored: str | None) -> bool:
    """Whether a stored content hash is this study's: today's, or the one stored by the release
    of 2026-12-02, which hashed `limits` and `notify` too (a study without a budget)."""
    legacy = {"storage", "description"} if plan.study.budget is None else None
    return stored == spec_hash(plan) or (legacy is not None and stored == spec_hash(plan, legacy))


def git_commit(folder: Path) -> dict | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True, timeout=5)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def study_store(plan: Plan, storage: str | None) -> Store:
    return Store(storage or plan.study.storage).child(plan.study.name)


def stored_meta(plan: Plan, store: Store) -> dict | None:
    """The metadata of the study already in this storage (None: none), after checking that it is
    the same study (a one-line error otherwise). Writes nothing."""
    if not store.exists(STUDY_META):
        return None
    meta = read_meta(store)
    if not _same_study(plan, meta.get("spec_hash")):
        digest = spec_hash(plan)
        raise UserError(
            Problem(
                plan.doc.file,
                f"storage {store.uri} holds study {plan.study.name!r} run from a different study file "
                f"(content hash {meta.get('spec_hash')} != {digest}); give the study a new name or use "
                "--storage to run it elsewhere (nothing was changed)",
                "name",
            )
        )
    return meta


def prepare_storage(plan: Plan, store: Store, study_text: str, code: dict | None = None) -> dict:
    """Record the study in its storage, or check that the stored one is the same study; either
    way, where it is now (`location`: a later run finds out that it was moved) and what code its
    trainables are (`code`, by trainable; earlier versions in `code_history`)."""
    meta = stored_meta(plan, store)
    if meta is not None:
        meta.setdefault("runs", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        meta = {
            "name": plan.study.name,
            "spec_hash": spec_hash(plan),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "study_file": os.path.abspath(plan.doc.file),
            "git": git_commit(plan.study_dir),
            "runs": [time.strftime("%Y-%m-%dT%H:%M:%S%z")],
            "stages": {name: [t.id for t in sp.trials] for name, sp in plan.stages.items()},
        }
        store.write_text(study_text, STUDY_FILE)
    meta["location"] = store.uri
    if code is not None:
        before = meta.get("code") or {}
        changed = {name: v for name, v in before.items() if name in code and code[name]["hash"] != v.get("hash")}
        if changed:
            meta.setdefault("code_history", []).append({"until": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **changed})
        meta["code"] = {**before, **code}
    store.write_text(json.dumps(meta, indent=1, default=str), STUDY_META)
    return meta
