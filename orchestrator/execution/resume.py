"""`resume RUN_DIR`: continue a study from what its storage holds (study file included)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from orchestrator.errors import Problem, UserError
from orchestrator.analysis.status import open_study
from orchestrator.planning.expand import build_plan
from orchestrator.execution.study_runner import STUDY_FILE, STUDY_META, RunOptions, run_study
from orchestrator.study.schema import Study, pydantic_problems
from orchestrator.study.yaml_doc import parse_yaml


def resume_study(run_dir: str, *, address: str | None, retry_errored: bool, max_concurrent: int | None,
                 num_cpus: int | None, console: Console) -> int:
    from pydantic import ValidationError

    store = open_study(run_dir)
    meta = json.loads(store.read_text(STUDY_META))
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
    options = RunOptions(storage=parent, address=address, retry_errored=retry_errored,
                         max_concurrent=max_concurrent, num_cpus=num_cpus)
    return run_study(plan, text, options, console)
