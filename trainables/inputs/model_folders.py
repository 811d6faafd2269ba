"""Model sources checked before a run (`validate`, and `run` before Ray starts): a sentence-
transformers model given as a folder, a checkpoint of `contrastive_isotropy`, the offline MiniLM,
an `s3://` folder or a hub name, so that a study never fails on a model it could have read.

What is checked: a local folder exists and is a model (a sentence-transformers or Hugging Face
folder: `modules.json` or `config.json`; a `final_model/` such folder; or a `state.pt` that loads
with `weights_only=True` and holds a `config` and `model`: that one check imports torch, and
only when there is such a file); an `s3://` folder exists; the offline MiniLM's package is
installed. A hub name cannot be checked without the network: `validate` says so in a note.
"""

from __future__ import annotations

from pathlib import Path

from trainables.configs.contrastive_isotropy import OFFLINE_MINILM, Config, check_model, is_local_path

MODEL_FILES = ("modules.json", "config.json")


def check_source(source: str | None, field: str) -> str | None:
    """ValueError (with `.field`) when `source` cannot be a model; a note for a hub name; None
    when there is nothing to check (no model yet: a reference resolved at run time)."""
    if source is None or "${" in str(source):
        return None
    try:
        return _check(str(source))
    except ValueError as exc:
        exc.field = field  # type: ignore[attr-defined]
        raise


def _check(source: str) -> str | None:
    if source == OFFLINE_MINILM:
        check_model(source)
        return None
    if "://" in source:
        return _check_remote(source)
    path = Path(source).expanduser()
    if not path.exists():
        if is_local_path(source):
            raise ValueError(f"{source}: no such model folder")
        return f"{source} is a hub name: it is downloaded (or read from the hub cache) when the trial runs"
    if not path.is_dir():
        raise ValueError(f"{source}: not a folder (a model is a sentence-transformers folder or a checkpoint folder)")
    if any((path / name).is_file() for name in MODEL_FILES):
        return None
    if (path / "final_model").is_dir() and any((path / "final_model" / n).is_file() for n in MODEL_FILES):
        return None
    if (path / "state.pt").is_file():
        _check_state(path / "state.pt")
        return None
    raise ValueError(
        f"{source}: not a model folder: expected a sentence-transformers folder (modules.json or config.json), "
        "or a checkpoint of contrastive_isotropy (final_model/ or state.pt)"
    )


def _check_state(path: Path) -> None:
    """A checkpoint of `contrastive_isotropy`: readable with weights_only, with its settings."""
    from pydantic import ValidationError

    from trainables.runtime import checkpoints  # imports torch: only for a state.pt

    state = checkpoints.load(path)
    if "model" not in state or "config" not in state:
        raise ValueError(f"{path}: not a contrastive_isotropy checkpoint (it has no 'model' and 'config')")
    try:
        Config.model_validate(state["config"])
    except ValidationError as exc:
        raise ValueError(f"{path}: its config is not one of contrastive_isotropy ({exc.errors()[0]['msg']})") from None


def _check_remote(source: str) -> None:
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(source)
        kind = fs.get_file_info(path).type
    except (OSError, ValueError) as exc:
        raise ValueError(f"{source}: cannot read it ({' '.join(str(exc).split())[:160]})") from None
    if kind != pafs.FileType.Directory:
        raise ValueError(f"{source}: no such model folder")
    return None
