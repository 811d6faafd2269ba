"""Where a study's `trainable:` comes from, and what the orchestrator may ask of it.

A stage names its trainable in one of three ways (README, *Your own trainable*):
- a Python file, `./recipes/patch_transformer.py`, its path relative to the study file;
- an importable module, `mylab.recipes.patch_transformer`;
- a name registered by an installed package in the entry-point group `orchestrator.trainables`
  (`importlib.metadata`); the five built-in recipes are entries of this package's own metadata
  (pyproject.toml), so the orchestrator keeps no list of its own.

An entry (or a file, or a module) is *one module* holding everything (`train`, and optionally
`Config`, `INPUT_FIELDS`, `check`, `preflight`, ...), or a light *settings module* that names its
recipe (`RECIPE = "pkg.recipe"`) and its input checks (`INPUTS = "pkg.inputs"`): the built-ins
are split so that `validate` and `plan` never import torch; a one-file trainable is imported
whole by `validate`, so that its `Config` can check the study.

`resolve(name, study_dir)` gives a `Trainable`: its settings, input checks, the module the trial's
process imports (`recipe_name`), and the file or package folder Ray ships to every worker
(`source`: None for this package, installed with the orchestrator everywhere). A user's mistake
(a syntax error, an import error, no `train`) is a `TrainableError` that names the user's file
and line, not a traceback of ours.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

GROUP = "orchestrator.trainables"
_FILES: dict[str, Path] = {}  # module name -> the file trainable this process loaded under it
OURS = "trainables"  # this package: installed with the orchestrator on every node, never shipped


class UnknownTrainable(KeyError):
    def __init__(self, name: str):
        self.name = name
        names = ", ".join(sorted(entry_points())) or "(none: is the orchestrator installed? pip install -e .)"
        super().__init__(
            f"unknown trainable {name!r}: not a registered name ({names}), a .py file (./recipes/model.py, "
            "relative to the study file) or an importable module (mylab.recipes.model)"
        )

    def __str__(self) -> str:
        return self.args[0]


class TrainableError(ValueError):
    """A mistake in a user's trainable: `file` and `line` say where, `message` what."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message, self.file, self.line = message, file, line


@functools.cache
def entry_points() -> dict[str, str]:
    """{name: module} of every installed package's `orchestrator.trainables` entries."""
    return {ep.name: ep.value.split(":")[0] for ep in importlib.metadata.entry_points(group=GROUP)}


@dataclass(frozen=True)
class Trainable:
    """A resolved `trainable:` (see the module doc)."""

    name: str  # as written in the study file
    kind: str  # "entry point", "file" or "module"
    settings: ModuleType  # Config, INPUT_FIELDS, MODEL_FIELDS, DATA_PARALLEL, started_resources, ...
    inputs: ModuleType | None  # check, preflight, CHECK_FIELDS (None: no input checks)
    recipe_name: str  # the module with `train`, as the trial's process imports it
    source: Path | None = None  # what Ray ships to every worker: a .py file or a package folder
    package: Path | None = field(default=None, compare=False)  # the folder (or file) its code is in

    def recipe(self) -> ModuleType:
        """The module with `train` (imports torch for the built-ins)."""
        return load_recipe(self.recipe_name)

    def code_files(self) -> list[Path]:
        """The files of its code (what its code hash covers): a file trainable's file; else its
        modules (settings, input checks, recipe) and every module of their package they import
        (`trainables/code_files.py`)."""
        if self.package is None:
            return []
        if self.package.is_file():
            return [self.package]
        from trainables.code_files import import_closure

        names = [self.settings.__name__, self.recipe_name] + ([self.inputs.__name__] if self.inputs else [])
        return sorted({f for name in dict.fromkeys(names) for f in import_closure(name, self.package)})

    @property
    def config_model(self):
        """The pydantic `Config`, or None (then the trial's config is passed as written)."""
        return getattr(self.settings, "Config", None)

    @property
    def data_parallel(self) -> bool:
        return bool(getattr(self.settings, "DATA_PARALLEL", False))

    def started_resources(self, config: dict) -> dict[str, float]:
        """CPUs and GPUs a trial with `config` starts besides its own process (Ray Data actors,
        a helper pool): charged with it (the settings' optional `started_resources`)."""
        declared = getattr(self.settings, "started_resources", None)
        started = declared(config) if declared is not None else {}
        return {"cpu": float(started.get("cpu", 0.0)), "gpu": float(started.get("gpu", 0.0))}


def is_file(name: str) -> bool:
    return name.endswith(".py") or "/" in name or "\\" in name


def resolve(name: str, study_dir: Path | str | None = None) -> Trainable:
    """The trainable a stage names (see the module doc); UnknownTrainable, or TrainableError for
    a mistake in the user's code."""
    if is_file(name):
        return _from_file(name, Path(study_dir or "."))
    if name in entry_points():
        return _from_module(name, entry_points()[name], "entry point")
    if name.replace(".", "").replace("_", "").isalnum() and _findable(name):
        return _from_module(name, name, "module")
    raise UnknownTrainable(name)


def registered(data_parallel: bool | None = None) -> list[str]:
    """Names of the registered trainables (optionally only those that run data-parallel)."""
    names = sorted(entry_points())
    if data_parallel is None:
        return names
    return [n for n in names if resolve(n).data_parallel == data_parallel]


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is not there, or not a package
        return False


def _from_module(name: str, module_name: str, kind: str) -> Trainable:
    module = _import(module_name, source=_origin_folder(module_name))
    recipe_name = getattr(module, "RECIPE", module_name)
    inputs_name = getattr(module, "INPUTS", None)
    inputs = _import(inputs_name, None) if inputs_name else (module if _has_checks(module) else None)
    if recipe_name == module_name:
        _check_contract(module, module_name)
    top = module_name.split(".")[0]
    ours = top == OURS
    package = _package_folder(top)
    return Trainable(name, kind, module, inputs, recipe_name, source=None if ours else package, package=package)


def _from_file(name: str, study_dir: Path) -> Trainable:
    path = (study_dir / name).expanduser().resolve()
    if not path.is_file():
        raise TrainableError(f"{path}: no such file (the trainable's path is relative to the study file)")
    if path.suffix != ".py":
        raise TrainableError(f"{path}: a trainable file is a Python file (.py)")
    module_name = path.stem
    if not module_name.isidentifier():
        raise TrainableError(f"{path}: {module_name!r} cannot be a module name (letters, digits, _)")
    existing = sys.modules.get(module_name)
    ours = existing is not None and _FILES.get(module_name) is not None  # a file trainable loaded before
    if existing is not None and not ours:
        raise TrainableError(
            f"{path}: a module named {module_name!r} is already imported from elsewhere "
            f"({getattr(existing, '__file__', None) or 'built in'}); rename the file, since every worker imports "
            "it by that name"
        )
    if existing is None and _findable(module_name) and not _is_file_of(module_name, path):
        raise TrainableError(
            f"{path}: a module named {module_name!r} exists already ({importlib.util.find_spec(module_name).origin}); "
            "rename the file, since every worker imports it by that name"
        )
    # loaded afresh each time (a long-lived process, a notebook, sees the file as it is now)
    module = _import_file(module_name, path)
    _FILES[module_name] = path
    try:
        _check_contract(module, str(path))
    except TrainableError:
        sys.modules.pop(module_name, None)
        _FILES.pop(module_name, None)
        raise
    inputs = module if _has_checks(module) else None
    return Trainable(name, "file", module, inputs, module_name, source=path, package=path)


def _is_file_of(module_name: str, path: Path) -> bool:
    spec = importlib.util.find_spec(module_name)
    return spec is not None and spec.origin is not None and Path(spec.origin).resolve() == path


def _has_checks(module: ModuleType) -> bool:
    return callable(getattr(module, "check", None)) or callable(getattr(module, "preflight", None))


def _check_contract(module: ModuleType, where: str) -> None:
    """A one-module trainable has `train`, and a `Config` (if any) is a pydantic model."""
    file = getattr(module, "__file__", None)
    if not callable(getattr(module, "train", None)):
        raise TrainableError(f"{where}: no `train(config, session)` function (see README, Your own trainable)", file)
    config = getattr(module, "Config", None)
    if config is not None:
        from pydantic import BaseModel

        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise TrainableError(f"{where}: `Config` must be a pydantic BaseModel (or absent)", file)


def load_recipe(module_name: str) -> ModuleType:
    """The module with `train`, in the trial's process: by name (a user's file or package reaches
    the worker through Ray's runtime_env, under that name)."""
    return importlib.import_module(module_name)


def _import(module_name: str, source: Path | None) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's module: its own error, said where it is
        raise _user_error(exc, module_name, source) from None


def _import_file(module_name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # as a worker imports it: pickles and dataclasses find it
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: its own error, said where it is
        sys.modules.pop(module_name, None)
        raise _user_error(exc, module_name, path) from None
    return module


def _user_error(exc: BaseException, module_name: str, source: Path | None) -> TrainableError:
    """The error of importing a user's module, at the user's file and line (the innermost frame
    in the user's code; a SyntaxError's own position)."""
    text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    if isinstance(exc, SyntaxError) and exc.filename:
        return TrainableError(f"cannot import {module_name}: {text}", exc.filename, exc.lineno)
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if source is not None and _under(Path(f.filename), source)]
    last = (mine or frames or [None])[-1]
    return TrainableError(
        f"cannot import {module_name}: {text}", last.filename if last else None, last.lineno if last else None
    )


def _under(path: Path, source: Path) -> bool:
    try:
        path.resolve().relative_to(source if source.is_dir() else source.parent)
    except ValueError:
        return False
    return source.is_dir() or path.resolve() == source


def _origin_folder(module_name: str) -> Path | None:
    """The folder of the top-level package of a module that can be found, for error frames."""
    return _package_folder(module_name.split(".")[0])


def _package_folder(top: str) -> Path | None:
    """The folder of a top-level package (None for a single-file module or one not found)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        return Path(locations[0]).resolve() if len(locations) == 1 else None
    return Path(spec.origin).resolve() if spec.origin and spec.origin.endswith(".py") else None
