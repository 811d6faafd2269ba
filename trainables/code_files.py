"""The files a trainable's code is made of: its module and every module of its own package that it
imports, directly or through another, found by reading the imports (`ast`), not by importing them.

Why a static walk: the code hash (what a result was computed with) must be known to `validate`
and to the driver, which do not import the recipes of the built-ins (torch), and it should cover
what the trial runs, not every file of a package (a change to another recipe of the same package
changes nothing of this one's results). Imports of other packages (torch, numpy) are their
versions' business, recorded in each trial's metadata.json.
"""

from __future__ import annotations

import ast
from pathlib import Path


def _file_of(module: str, package: Path) -> Path | None:
    """The file of `module` (`top.a.b`) inside the folder of its top-level package."""
    base = package.joinpath(*module.split(".")[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imported(tree: ast.AST, module: str, is_package: bool, top: str) -> set[str]:
    """Modules of package `top` that a module's source imports (absolute and relative)."""
    found: set[str] = set()
    here = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == top}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != top:
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import submodule`
    return found


def import_closure(module: str, package: Path) -> list[Path]:
    """The files of `module` and of the modules of its package it imports, transitively; a
    single-file top-level module (`package` is a .py file) is that file."""
    if package.is_file():
        return [package]
    top = module.split(".")[0]
    seen: dict[Path, str] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _file_of(name, package)
        if path is None or path in seen:
            continue
        seen[path] = name
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError):
            continue  # importing it reports the error where it is
        todo.extend(_imported(tree, name, path.name == "__init__.py", top))
    return sorted(seen)
