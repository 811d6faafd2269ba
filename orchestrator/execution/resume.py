"""`resume RUN_DIR`: continue a study from what its storage holds (the study file included)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from orchestrator.errors import Problem, UserError
from orchestrator.execution.ray_start import RunOptions
from orchestrator.execution.study_runner import StudyOutcome, run_study
from orchestrator.planning.budget import load_cap
from orchestrator.planning.expand import build_plan
from orchestrator.storage.records import STUDY_FILE, open_study, read_meta
from orchestrator.study.pydantic_errors import pydantic_problems
from orchestrator.study.schema import Study
from orchestrator.study.yaml_doc import parse_yaml


def resume_study(run_dir: str, options: RunOptions, console: Console) -> StudyOutcome:
    """Run the study stored at `run_dir` again, in the same storage (`options.storage` ignored)."""
    store = open_study(run_dir)
    meta = read_meta(store)
    if not store.exists(STUDY_FILE):
        raise UserError(Problem(store.uri, f"no {STUDY_FILE} here: the study file is stored with every study run"))
    text = store.read_text(STUDY_FILE)
    doc = parse_yaml(text, store.child_uri(STUDY_FILE))
    try:
        study = Study.model_validate(doc.data)
    except ValidationError as exc:
        raise UserError(pydantic_problems(exc, doc, Study)) from None
    if study.name != meta["name"]:
        raise UserError(Problem(store.uri, f"stored study is named {study.name!r}, metadata says {meta['name']!r}"))
    # Relative input paths were written against the original study file's folder.
    original = Path(meta.get("study_file") or ".")
    study_dir = original.parent if original.parent.exists() else Path.cwd()
    plan = build_plan(study, doc, study_dir)
    parent = store.uri.rstrip("/").rsplit("/", 1)[0] if "://" in store.uri else str(Path(store.uri).parent)
    # the cap of the last run (which `--budget` replaces), not the stored study file's
    return run_study(plan, text, dataclasses.replace(options, storage=parent, stored_cap=load_cap(store)), console)
