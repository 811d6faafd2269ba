"""Registry of trainables: name -> recipe module, imported lazily (torch is heavy).

The recipes live at the top of this package, one file each (`train` as the entry, then
its setup, fit and evaluation); they compose the components of `data/`, `models/`, `losses/`,
`metrics/` and `runtime/`, which never import a recipe. The orchestrator reaches a recipe only
through this registry (`get`, `settings`).

Every trainable has a settings module `trainables/configs/<name>.py` (no torch import, so
`plan` and `validate` stay fast) with:
- `Config`: a pydantic model of its settings (unknown keys rejected), one description per field;
- optionally `INPUT_FIELDS`: config keys that name input files, resolved against the study
  file's folder; `MODEL_FIELDS`: keys that are a local folder or a hub name (resolved only
  when they are paths);
- optionally `DATA_PARALLEL = True`: `train` runs under N Ray Train workers (`workers: N`),
  wrapping its model with `trainables.runtime.distributed` (DDP) and sharding its data by rank;
- optionally `started_resources(config: dict) -> {"cpu": c, "gpu": g}`: what a trial with this
  config starts on the cluster besides its own process (Ray Data actors, a helper pool), so that
  `plan`'s estimate, the spend and the budget charge it;

optionally an inputs module `trainables/inputs/<name>.py` (torch-free too, apart from a check
that must load a model) with:
- `check(config: Config) -> str | None`, which raises `ValueError` with a one-line message (and
  row numbers) for bad data before any Ray starts, and may return a one-line note that
  `validate` prints (how the windows are split); it reads the data without torch (a driver that
  imports torch pays ~2 s on a small machine for nothing); with `CHECK_FIELDS`, the other
  settings it reads: `validate` checks once per distinct value of the inputs and these (once
  per data file, not per trial of a learning-rate grid);
- `preflight(config, workdir) -> dict`: config overrides for `orchestrator preflight` (a few
  steps on tiny data);

and a recipe module `trainables/<name>.py` with:
- `train(config: dict, session: Session | None = None) -> dict`: runs one trial and returns
  its final metrics; usable under Ray Tune or standalone
  (`trainables.runtime.session.LocalSession`). It asks `session.checkpoint_due(epoch, metrics)`
  before reporting each epoch, so that every epoch that improves the stage's select metric has
  its own checkpoint (`trainables.runtime.selection`).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

TRAINABLES: dict[str, str] = {
    "lstm_mae_pretrain": "trainables.lstm_mae_pretrain",
    "lstm_classifier_finetune": "trainables.lstm_classifier_finetune",
    "multitask_span": "trainables.multitask_span",
    "contrastive_isotropy": "trainables.contrastive_isotropy",
    "retrieval_eval": "trainables.retrieval_eval",
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


def inputs_of(name: str) -> ModuleType | None:
    """The inputs module of trainable `name` (`check`, `preflight`), or None if it has none."""
    if name not in TRAINABLES:
        raise UnknownTrainable(name)
    target = TRAINABLES[name].replace("trainables.", "trainables.inputs.", 1)
    if importlib.util.find_spec(target) is None:
        return None
    return importlib.import_module(target)


def started_resources(name: str, config: dict) -> dict[str, float]:
    """CPUs and GPUs that a trial of trainable `name` with `config` starts besides its own
    process (see the module doc); none unless its settings module says so."""
    declared = getattr(settings(name), "started_resources", None)
    started = declared(config) if declared is not None else {}
    return {"cpu": float(started.get("cpu", 0.0)), "gpu": float(started.get("gpu", 0.0))}
