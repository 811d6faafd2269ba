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


def spec_hash(plan: Plan) -> str:
    """Identity of the study's content (storage location and description excluded, and how the
    tables group seeds: `within_seed` changes no trial, and studies stored before it existed
    must keep their hash)."""
    data = plan.study.model_dump(exclude={"storage", "description"})
    for stage in data["stages"].values():
        stage.pop("within_seed", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def prepare_storage(plan: Plan, store: Store, study_text: str) -> dict:
    """Record the study in its storage, or check that the stored one is the same study."""
    digest = spec_hash(plan)
    if store.exists(STUDY_META):
        meta = read_meta(store)
        if meta.get("spec_hash") != digest:
            raise UserError(
                Problem(
                    plan.doc.file,
                    f"storage {store.uri} holds study {plan.study.name!r} run from a different study file "
                    f"(content hash {meta.get('spec_hash')} != {digest}); give the study a new name or use "
                    "--storage to run it elsewhere (nothing was changed)",
                    "name",
                )
            )
        meta.setdefault("runs", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        meta = {
            "name": plan.study.name,
            "spec_hash": digest,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "study_file": os.path.abspath(plan.doc.file),
            "git": git_commit(plan.study_dir),
            "runs": [time.strftime("%Y-%m-%dT%H:%M:%S%z")],
            "stages": {name: [t.id for t in sp.trials] for name, sp in plan.stages.items()},
        }
        store.write_text(study_text, STUDY_FILE)
    store.write_text(json.dumps(meta, indent=1, default=str), STUDY_META)
    return meta
