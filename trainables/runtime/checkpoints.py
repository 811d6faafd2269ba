"""Checkpoints are dicts with named keys, saved with torch.save and loaded with weights_only=True
(a checkpoint can never run code). A truncated or corrupt file is reported clearly."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "state.pt"


def plain(obj):
    """Numpy scalars and arrays -> Python numbers and tensors, so that `weights_only` loading
    (which allows tensors and Python containers only) can read the checkpoint back."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    return obj


def save(obj: dict, path: str | Path) -> None:
    """Save atomically (temporary file, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(plain(obj), tmp)
    os.replace(tmp, path)


def load(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint dict; raise ValueError naming the file if it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: checkpoint file not found")
    if not zipfile.is_zipfile(path):  # what torch.save writes: anything else is cut short or another file
        raise ValueError(f"{path}: not a readable checkpoint (not a torch.save archive: truncated, or another file)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: refused: it holds objects other than tensors and plain containers, which could run code "
            f"when loaded ({' '.join(str(exc).split())[:120]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({' '.join(str(exc).split())[:160]})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj
