"""Search spaces in YAML: `key: {sampler: args}`, turned into Ray Tune samplers.

    lr:          {loguniform: [1.0e-4, 1.0e-2]}
    dropout:     {uniform: [0.0, 0.3]}
    hidden_size: {choice: [64, 128, 256]}
    num_layers:  {randint: [1, 4]}        # upper bound exclusive, as in Tune
    batch_size:  {grid: [64, 128]}        # every value, crossed with the samples

A file may wrap the space in a top-level `space:` key and carry other documentation keys.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from orchestrator.errors import Problem, UserError, join_path
from orchestrator.study.yaml_doc import YamlDoc, load_yaml

# sampler name -> (number of args, needs numeric args, needs positive args)
SAMPLERS: dict[str, tuple[int | None, bool, bool]] = {
    "choice": (None, False, False),
    "grid": (None, False, False),
    "uniform": (2, True, False),
    "quniform": (3, True, False),
    "loguniform": (2, True, True),
    "randint": (2, True, False),
    "lograndint": (2, True, True),
    "randn": (2, True, False),
}


def load_space(space: str | dict, study_dir: Path, doc: YamlDoc, key_path: tuple) -> tuple[dict, str]:
    """Read and check a space given as a file path (relative to the study) or inline.

    Returns (space as {key: {sampler: args}}, file name used in messages).
    """
    if isinstance(space, str):
        path = Path(space)
        if not path.is_absolute():
            path = study_dir / path
        if not path.exists():
            raise UserError(
                Problem(doc.file, f"search-space file not found: {path}", join_path(*key_path), doc.line_of(key_path))
            )
        sdoc = load_yaml(path)
        data = sdoc.data.get("space", sdoc.data) if isinstance(sdoc.data, dict) else sdoc.data
        prefix = ("space",) if "space" in sdoc.data else ()
        check_space(data, sdoc, prefix)
        return data, sdoc.file
    check_space(space, doc, key_path)
    return space, doc.file


def check_space(space: Any, doc: YamlDoc, prefix: tuple) -> None:
    problems = []
    if not isinstance(space, dict) or not space:
        raise UserError(
            Problem(
                doc.file,
                "a search space must be a non-empty mapping of key: {sampler: args}",
                join_path(*prefix),
                doc.line_of(prefix),
            )
        )
    for key, spec in space.items():
        path = prefix + (key,)
        where = dict(file=doc.file, path=join_path(*path), line=doc.line_of(path))
        if not isinstance(spec, dict) or len(spec) != 1:
            problems.append(
                Problem(
                    message="expected exactly one sampler, e.g. {loguniform: [1.0e-4, 1.0e-2]}; "
                    f"samplers: {', '.join(SAMPLERS)}",
                    **where,
                )
            )
            continue
        ((name, args),) = spec.items()
        if name not in SAMPLERS:
            problems.append(
                Problem(message=f"unknown sampler {name!r}; expected one of: {', '.join(SAMPLERS)}", **where)
            )
            continue
        nargs, numeric, positive = SAMPLERS[name]
        if not isinstance(args, list) or not args:
            problems.append(Problem(message=f"{name} takes a non-empty list of values", **where))
            continue
        if nargs is not None and len(args) != nargs:
            problems.append(Problem(message=f"{name} takes {nargs} numbers, got {len(args)}", **where))
            continue
        if numeric:
            if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args):
                problems.append(Problem(message=f"{name} takes numbers, got {args!r}", **where))
                continue
            if positive and min(args[:2]) <= 0:
                problems.append(Problem(message=f"{name} bounds must be > 0, got {args!r}", **where))
                continue
            if name != "randn" and args[0] >= args[1]:
                problems.append(Problem(message=f"{name} needs lower < upper, got {args!r}", **where))
    if problems:
        raise UserError(problems)


def describe(space: dict) -> dict[str, str]:
    """Human-readable form for `plan`: {'lr': 'loguniform(0.0001, 0.01)'}."""
    return {key: f"{name}({', '.join(map(str, args))})" for key, spec in space.items() for name, args in spec.items()}


def representative(sampler: dict) -> Any:
    """A value the sampler can draw (its first choice, its lower bound): what `validate` checks a
    trainable's settings with, and what `preflight` runs."""
    ((kind, args),) = sampler.items()
    if kind in ("choice", "grid"):
        return args[0]
    if kind in ("randint", "lograndint"):
        return int(args[0])
    return float(args[0])
