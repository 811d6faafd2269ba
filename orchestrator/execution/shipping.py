"""A researcher's trainable reaches every Ray worker through Ray's runtime_env (`py_modules`): the
.py file a stage names, or the folder of the package that holds its module (an entry point's or
a dotted module's). Nobody copies code to the nodes by hand, and on a local Ray the workers import
exactly what the driver checked (a worker's import of the module finds it under Ray's
`runtime_resources`, as on a remote node).

What is shipped is said at the start of a run; a folder larger than `MAX_BYTES` (caches, data,
checkpoints next to the code) is refused in one line before Ray starts: Ray would upload it to
every node for every run. This package's own trainables are never shipped: they are installed
with the orchestrator on every node (cluster/*.yaml install the project).
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.errors import Problem, UserError
from orchestrator.planning.expand import Plan

MAX_BYTES = 50 * 2**20
EXCLUDES = ["__pycache__", "*.pyc", ".git", ".ipynb_checkpoints"]


def sources(plan: Plan, stages: list[str]) -> list[Path]:
    """The files and package folders the given stages' trainables need on every worker."""
    found = [plan.stages[name].trainable.source for name in stages]
    return list(dict.fromkeys(p for p in found if p is not None))


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", ".git", ".ipynb_checkpoints")]
        total += sum((Path(root) / f).stat().st_size for f in files if not f.endswith(".pyc"))
    return total


def check(paths: list[Path], where: str) -> list[str]:
    """One line per shipped path with its size; a one-line error when one is over `MAX_BYTES`."""
    lines = []
    for path in paths:
        size = _size(path)
        if size > MAX_BYTES:
            raise UserError(
                Problem(
                    where,
                    f"the trainable's code at {path} is {size / 2**20:.0f} MiB, more than {MAX_BYTES // 2**20} MiB "
                    "that every Ray worker would download: keep data, checkpoints and caches out of its folder",
                )
            )
        lines.append(f"{path}{'/' if path.is_dir() else ''} ({size / 1024:.1f} kB)")
    return lines


def runtime_env(paths: list[Path]) -> dict | None:
    """The job's runtime_env that ships `paths` (None: nothing to ship)."""
    if not paths:
        return None
    return {"py_modules": [str(p) for p in paths], "excludes": EXCLUDES}
