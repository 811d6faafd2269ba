"""Pydantic's validation errors as one-line problems (`FILE:LINE: key.path: message`), with the
valid keys named for an unknown one: what `validate` prints for the study file and for anything
else read through a pydantic model (a trainable's config, a stored study on `resume`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.errors import Problem, join_path
from orchestrator.study.yaml_doc import YamlDoc


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model reached by following `loc` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                return []
            current = _model_in(field.annotation)
        # dict-valued fields (stages: dict[str, Stage]) skip the key level
        elif isinstance(current, tuple) and current[0] == "dict":
            current = current[1]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside an annotation like `Stage | None` or `dict[str, Stage]`."""
    import typing

    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is dict:
        inner = _model_in(typing.get_args(annotation)[1])
        return ("dict", inner) if inner is not None else None
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def pydantic_problems(exc: ValidationError, doc: YamlDoc, model: type[BaseModel], prefix: tuple = ()) -> list[Problem]:
    """Turn pydantic errors into one-line problems with key paths and YAML lines."""
    problems = []
    for err in exc.errors():
        loc = tuple(part for part in err["loc"] if not (isinstance(part, str) and "[" in part and "]" in part))
        full = prefix + loc
        if err["type"] == "extra_forbidden":
            keys = _valid_keys(model, loc)
            msg = f"unknown key {loc[-1]!r}" + (f"; expected one of: {', '.join(keys)}" if keys else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            got = err.get("input")
            if err["type"] not in {"value_error"} and not isinstance(got, (dict, list)):
                msg += f" (got {got!r})"
        problems.append(Problem(doc.file, msg, join_path(*full), doc.line_of(full)))
    return problems
