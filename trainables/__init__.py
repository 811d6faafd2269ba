"""Registry of trainables: name -> module, imported lazily (torch is heavy).

Every trainable module exposes:
- `Config`: a pydantic model of its settings (unknown keys rejected), one docstring per field;
- `train(config: dict, session: Session | None = None) -> dict`: runs one trial and returns
  its final metrics; usable under Ray Tune or standalone (`trainables.session.LocalSession`);
- optionally `INPUT_FIELDS` (config keys that name input files, resolved against the study
  file's folder) and `check_inputs(config: Config) -> None`, which raises `ValueError` with a
  one-line message (and row numbers) for bad data before any Ray starts.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TRAINABLES: dict[str, str] = {
    "lstm_mae_pretrain": "trainables.lstm_mae_pretrain",
    "lstm_classifier_finetune": "trainables.lstm_classifier_finetune",
}


class UnknownTrainable(KeyError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"unknown trainable {name!r}; valid names: {', '.join(sorted(TRAINABLES))}")

    def __str__(self) -> str:
        return self.args[0]


def get(name: str) -> ModuleType:
    """Import and return the trainable module registered as `name`."""
    if name not in TRAINABLES:
        raise UnknownTrainable(name)
    return importlib.import_module(TRAINABLES[name])
