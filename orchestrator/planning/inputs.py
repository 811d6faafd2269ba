"""A trial's settings checked against its trainable's typed `Config`, its input paths resolved
against the study file's folder, and its data files checked (`trainables.inputs`) before anything
starts; every problem points at the key of the study file that set the value."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

import trainables
from orchestrator.errors import Problem, join_path
from orchestrator.study.references import looks_like_ref
from orchestrator.study.schema import Stage
from orchestrator.study.yaml_doc import YamlDoc
from trainables.configs.contrastive_isotropy import is_local_path

SYNTHETIC_PREFIX = "synthetic:"


@dataclass(frozen=True)
class Row:
    """Where one row of a stage (a variant, or the stage's config) is written in the study file."""

    doc: YamlDoc
    stage_name: str
    stage: Stage
    variant: str | None

    def origin(self, key: str) -> tuple:
        """The key path that set a top-level config key of this row's trials."""
        stage = ("stages", self.stage_name)
        if key in self.stage.grid:
            return (*stage, "grid", key)
        if self.variant is not None and key in self.stage.variants[self.variant]:
            return (*stage, "variants", self.variant, key)
        if key in self.stage.config:
            return (*stage, "config", key)
        return (*stage, "config")

    def problem(self, message: str, path: tuple) -> Problem:
        return Problem(self.doc.file, message, join_path(*path), self.doc.line_of(path))


def value_key(value: Any) -> str:
    """A value as a comparable string (configs hold dicts and lists)."""
    return json.dumps(value, sort_keys=True, default=str)


def input_fields(module: ModuleType) -> tuple:
    """The trainable's file inputs, then its path-or-name fields (e.g. a local model or a hub name)."""
    return tuple(getattr(module, "INPUT_FIELDS", ())) + tuple(getattr(module, "MODEL_FIELDS", ()))


def resolve_inputs(config: dict, module: ModuleType, study_dir: Path) -> dict:
    """Relative input paths are relative to the study file; MODEL_FIELDS only when they are paths."""
    out = copy.deepcopy(config)

    def resolve(value):
        if isinstance(value, str) and not _is_uri(value):
            path = Path(value).expanduser()
            return str(path if path.is_absolute() else (study_dir / path).resolve())
        return value

    for key in getattr(module, "INPUT_FIELDS", ()):
        if key in out:
            value = out[key]
            out[key] = [resolve(v) for v in value] if isinstance(value, list) else resolve(value)
    local = getattr(module, "is_local_path", is_local_path)
    for key in getattr(module, "MODEL_FIELDS", ()):
        if isinstance(out.get(key), str) and local(out[key]) and not _is_uri(out[key]):
            out[key] = resolve(out[key])
    return out


def _is_uri(value: str) -> bool:
    return value.startswith(SYNTHETIC_PREFIX) or "://" in value or value.startswith("${")


class InputChecks:
    """Checks a stage's trials against the trainable's `Config`, and its data files once each.

    `read_data=False` checks the settings only (`plan`: the data may live on the cluster).
    `notes` collects what the data checks found worth saying (how windows are split).
    """

    def __init__(self, trainable: trainables.Trainable, read_data: bool):
        self.module = trainable.settings
        self.model = trainable.config_model  # None: the config is passed as written
        self.inputs = trainable.inputs  # `check` and CHECK_FIELDS, if any
        self.read_data = read_data
        self._checked: set[tuple] = set()  # each distinct data file (and the settings it needs) is read once
        self.notes: list[str] = []

    def check(self, config: dict, raw_config: dict, row: Row) -> list[Problem]:
        """Problems of one trial's `config` (input paths resolved, references and sampled keys
        given representative values); `raw_config` is the config as written."""
        try:
            parsed = self.model.model_validate(config) if self.model is not None else dict(config)
        except ValidationError as exc:
            return [self._config_problem(err, row) for err in exc.errors()]
        fields = input_fields(self.module)
        key = tuple(value_key(config.get(f)) for f in fields + tuple(getattr(self.inputs, "CHECK_FIELDS", ())))
        if not self.read_data or key in self._checked or self.inputs is None:
            return []
        self._checked.add(key)
        # Inputs given as references exist only at run time: check the others, with those unset.
        by_ref = {f for f in fields if looks_like_ref(raw_config.get(f))}
        if by_ref:
            if self.model is None or any(self.model.model_fields[f].is_required() for f in by_ref):
                return []
            parsed = parsed.model_copy(update=dict.fromkeys(by_ref))
        check = getattr(self.inputs, "check", None)
        if check is None:
            return []
        try:
            note = check(parsed)
        except ValueError as exc:
            field_name = getattr(exc, "field", fields[0] if fields else "")
            return [row.problem(str(exc), row.origin(field_name))]
        if isinstance(note, str) and note:
            self.notes.append(note)
        return []

    def _config_problem(self, err: dict, row: Row) -> Problem:
        loc = tuple(err["loc"])
        if not loc:  # a cross-field check of the whole config
            path = ("stages", row.stage_name, "config")
        else:
            origin = row.origin(str(loc[0]))
            path = origin + loc[1:] if origin[-1] == loc[0] else origin + loc
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r} for trainable {row.stage.trainable}; expected one of: " + ", ".join(
                k for k in self.model.model_fields if k != "seed"
            )
        elif err["type"] == "missing":
            msg = f"required key {loc[-1]!r} is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if not isinstance(err.get("input"), (dict, list)):
                msg += f" (got {err.get('input')!r})"
        return row.problem(msg, path)
