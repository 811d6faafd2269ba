"""Trainables: the five built-in recipes, the components they are made of, and the contract any
trainable keeps, the researcher's own included. `trainables/registry.py` finds them.

The contract (the public API; README, *Your own trainable*)
----------------------------------------------------------
A trainable is a module (one `.py` file, a module of a package, or an entry of the
`orchestrator.trainables` entry-point group) with:

- `train(config: dict, session) -> dict` (required): runs one trial and returns its final
  metrics. `config` is exactly the trial's config from the study file (variant, grid and search
  values merged, references resolved, input paths made absolute) plus `seed`. `session` is
  the object the built-ins use (`trainables.runtime.session.Session`):
  - `session.report(metrics: dict, checkpoint_dir: str | None = None)`: one epoch's numbers
    (name them as you like; an `epoch`, `step` or `fold` key is the progress unit), optionally
    with a folder to keep as its checkpoint (write `state.pt` into it with
    `trainables.runtime.checkpoints.save`);
  - `session.checkpoint_due(epoch, metrics) -> bool`: ask before reporting an epoch whether to
    write a checkpoint with it (the stage's clock, and every epoch that improves its `select`
    metric, so that the best epoch has one);
  - `session.restore_state() -> dict | None`: the newest checkpoint's state (resume after a
    killed worker or driver, a retry), or None to start afresh;
  - `session.artifact_dir`: a folder for files kept with the trial (plots, predictions);
  - `session.context`: who runs the trial (study, stage, trial id, seed, code hash), for your
    `metadata.json`.
- `Config` (optional): a pydantic model of the settings. With it `validate` checks every
  trial's config (unknown keys rejected, errors at the study file's line) and references
  `${stage.best.config.key}` to it; without it the config is passed as written.
- `INPUT_FIELDS` (optional): config keys that name input files or folders, resolved against the
  study file's folder; `MODEL_FIELDS`: keys that are a folder or a hub name (resolved if a path).
- `check(config) -> str | None` (optional): read the inputs before any Ray starts (`validate`,
  `run`); raise `ValueError` with a one-line message (set `exc.field` to the config key it is
  about); return a note to print. `CHECK_FIELDS`: other keys it reads (it runs once per distinct
  inputs).
- `preflight(config, workdir) -> dict` (optional): config overrides for `orchestrator preflight`
  (a few steps on tiny data); without it `epochs` (if the config has it) becomes 1.
- `DATA_PARALLEL = True` (optional): `workers: N` runs `train` in N Ray Train workers; wrap the
  model with `trainables.runtime.distributed.wrap` and shard the data with `.shard`.
- `started_resources(config) -> {"cpu": c, "gpu": g}` (optional): what a trial starts on the
  cluster besides itself (actors), charged with it.

A trainable may instead be split (the built-ins are, so that `validate` never imports torch): a
light *settings module* with the above but `train`, and `RECIPE = "pkg.recipe"` (the module
with `train`) and `INPUTS = "pkg.inputs"` (with `check`, `preflight`). Stable: everything above.
Not stable: the built-ins' own components (`trainables.data`, `.models`, `.losses`, ...), which
you may import, and which may change between releases.

Built-in recipes (one file each: `train` as the entry, then setup, fit and evaluation), each with
its settings in `trainables/configs/<name>.py` and its input checks in `trainables/inputs/<name>.py`;
they compose the components of `data/`, `models/`, `losses/`, `metrics/` and `runtime/`, which
never import a recipe; the orchestrator reaches a recipe only through the registry.
"""

from __future__ import annotations

from trainables.registry import (
    Trainable,
    TrainableError,
    UnknownTrainable,
    load_recipe,
    registered,
    resolve,
)

__all__ = ["Trainable", "TrainableError", "UnknownTrainable", "load_recipe", "registered", "resolve"]
