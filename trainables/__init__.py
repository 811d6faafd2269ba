"""Registry of trainables: name -> module, imported lazily (torch is heavy).

Every trainable has a settings module `trainables/configs/<name>.py` (no torch import, so
`plan` and `validate` stay fast) with:
- `Config`: a pydantic model of its settings (unknown keys rejected), one description per field;
- optionally `INPUT_FIELDS`: config keys that name input files, resolved against the study
  file's folder; `MODEL_FIELDS`: keys that are a local folder or a hub name (resolved only
  when they are paths);
- optionally `DATA_PARALLEL = True`: `train` runs under N Ray Train workers (`workers: N`),
  wrapping its model with `trainables.distributed` (DDP) and sharding its data by rank;
- optionally `preflight(config, workdir) -> dict`: config overrides for `orchestrator
  preflight` (a few steps on tiny data);
- optionally `check_inputs(config: Config) -> str | None`, which raises `ValueError` with a
  one-line message (and row numbers) for bad data before any Ray starts, and may return a
  one-line note that `validate` prints (how the windows are split); it reads the data without
  torch (a driver that imports torch pays ~2 s on a small machine for nothing); with
  `CHECK_FIELDS`, the other settings it reads: `validate` checks once per distinct value of
  the inputs and these (once per data file, not per trial of a learning-rate grid);

and a trainable module `trainables/<name>.py` with:
- `train(config: dict, session: Session | None = None) -> dict`: runs one trial and returns
  its final metrics; usable under Ray Tune or standalone (`trainables.session.LocalSession`).
  It asks `session.checkpoint_due(epoch, metrics)` before reporting each epoch, so that every
  epoch that improves the stage's select metric has its own checkpoint (`trainables.selection`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

TRAINABLES: dict[str, str] = {
    "lstm_mae_pretrain": "trainables.lstm_mae_pretrain",
    "lstm_classifier_finetune": "trainables.lstm_classifier_finetune",
    "multitask_span": "trainables.multitask_span",
    "contrastive_isotropy": "trainables.contrastive_isotropy",
}


class UnknownTrainable(KeyError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"unknown trainable {name!r}; valid names: {', '.join(sorted(TRAINABLES))}")

    def __str__(self) -> str:
        return self.args[0]


def get(name: str) -> ModuleType:
    """Import and return the trainable module registered as `name` (imports torch)."""
    if name not in TRAINABLES:
        raise UnknownTrainable(name)
    return importlib.import_module(TRAINABLES[name])


def settings(name: str) -> ModuleType:
    """The settings module of trainable `name`: `Config` and `INPUT_FIELDS`, without torch."""
    if name not in TRAINABLES:
        raise UnknownTrainable(name)
    return importlib.import_module(TRAINABLES[name].replace("trainables.", "trainables.configs.", 1))
