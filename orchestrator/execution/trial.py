"""The Ray Tune function trainable that runs one trial of any registered trainable.

Tune's `param_space` carries `{"trial": <TrialSpec dict>, "search": <sampled values>}`; this
wrapper merges them, builds a `TuneSession` and calls the trainable's `train`. Running every
stage through one wrapper keeps the Tune side (resources, names, storage) in the orchestrator
and lets trainables stay plain functions.
"""

from __future__ import annotations

import os
import posixpath

import pyarrow.fs as pafs

import trainables
from orchestrator.planning.trials import deep_merge
from orchestrator.storage.relocation import relocated
from trainables.runtime.session import TuneSession, checkpoints_newest_first


def trial_config(config: dict) -> dict:
    """The trainable's config for a Tune trial config (sampled search values win)."""
    trial = config["trial"]
    return dict(deep_merge(trial["config"], config.get("search") or {}), seed=trial["seed"])


def recipe_name(trial: dict) -> str:
    """The module with the trainable's `train` (trials of experiments stored before it was in the
    trial's config name a registered trainable)."""
    return trial.get("recipe") or trainables.resolve(trial["trainable"]).recipe_name


def _placement() -> dict:
    from trainables.runtime.distributed import placement

    return placement()


def _study_folder_now() -> str | None:
    """The study folder this trial is stored in now (its Tune storage, two levels above the trial
    folder `<study>/<stage>/<trial id>`), as a URI like the orchestrator's: a local path, or the
    scheme of the storage's filesystem."""
    from ray import tune

    storage = tune.get_context().get_storage()
    if storage is None:
        return None
    root = posixpath.dirname(posixpath.dirname(storage.trial_fs_path.rstrip("/")))
    kind = storage.storage_filesystem.type_name
    return root if kind == "local" else f"{kind}://{root}"


def run_trial(config: dict) -> None:
    import time

    import psutil
    from ray import tune

    function_started_at = time.time()
    here = _study_folder_now()
    if here is not None and config["trial"].get("storage") not in (None, here):
        # the study folder was moved since Tune stored this trial's config: its paths (upstream
        # checkpoints, the storage itself) are read from where the study is now
        config = relocated(config, config["trial"]["storage"], here)
    trial = dict(config["trial"], recipe=recipe_name(config["trial"]))
    parallel = trial.get("workers", 1) > 1
    # The first trial of a worker pays the imports (torch). A data-parallel trial's own process
    # only waits for its Ray Train workers, which import the trainable themselves.
    module = None if parallel else trainables.load_recipe(trial["recipe"])
    import_s = time.time() - function_started_at
    ctx = tune.get_context()
    session = TuneSession(
        checkpoint_every=trial["checkpoint_every"],
        checkpoint_interval_s=trial.get("checkpoint_interval_s", 30.0),
        report_interval_s=trial.get("report_interval_s", 0.0),
        select=trial.get("select"),
        context={
            "study": trial["study"],
            "stage": trial["stage"],
            "variant": trial["variant"],
            "seed": trial["seed"],
            "trial_id": os.path.basename(ctx.get_trial_dir().rstrip("/")),
            "trial_name": ctx.get_trial_name(),
            "sampled": config.get("search") or {},
            "git": trial.get("git"),
            "code": trial.get("code"),  # the hash of the trainable's code (orchestrator/planning/code.py)
            "upstream": trial.get("upstream") or {},
            "placement": {} if parallel else _placement(),  # data-parallel: per worker
            # when this worker process started and when this trial began in it: the first trial
            # of a worker pays the process start and imports (see bench/orchestration.py)
            "timing": {
                "process_started_at": psutil.Process().create_time(),
                "function_started_at": function_started_at,
                "import_s": import_s,
            },
        },
    )
    if parallel:
        from orchestrator.execution import data_parallel

        data_parallel.run(trial, trial_config(config), session.context)
        return
    from trainables.runtime import telemetry

    session.telemetry = telemetry.for_this_trial(trial.get("worker_resources", {}).get("gpu"))
    try:
        final = module.train(trial_config(config), session)
        if not session.reported and isinstance(final, dict) and final:
            # Restored a checkpoint taken after the last epoch (the driver died before Tune's
            # snapshot recorded it): Tune's last result is older, so send the final one again.
            session.report(final)
        session.flush()  # a held last report (e.g. a diverged epoch) must reach Tune
    finally:
        if session.telemetry is not None:
            session.telemetry.stop()


class RestoreFromNewestCheckpoint:
    """Part of the trial actor that Tune builds from `run_trial` (Tune's `__mixins__` hook).

    A restored experiment restarts each unfinished trial from the checkpoint its last experiment
    snapshot names. After a killed driver that checkpoint may be gone: the snapshot is taken
    every ~10 s, and in between Tune may have pruned it (`checkpoint.keep`). Tune would then
    fail the trial on every retry ("does not exist on storage anymore") and the study would lose
    it. Here the trial starts from its newest checkpoint on storage instead (the one
    `TuneSession.restore_state` loads anyway), or afresh when it has none.
    """

    def restore(self, checkpoint_path):
        checkpoint = getattr(checkpoint_path, "checkpoint", None)
        storage = getattr(self, "_storage", None)
        if checkpoint is not None and storage is not None and not _exists(checkpoint):
            from ray import tune

            fs = storage.storage_filesystem
            newest = checkpoints_newest_first(fs, storage.trial_fs_path)
            print(
                f"checkpoint {checkpoint.path} of the experiment snapshot is gone; "
                f"restoring {newest[0] if newest else 'nothing: the trial starts afresh'}",
                flush=True,
            )
            if not newest:
                return None
            # the same result type, with the snapshot's metrics (iteration counts) kept
            checkpoint_path = type(checkpoint_path)(tune.Checkpoint(newest[0], filesystem=fs), checkpoint_path.metrics)
        return super().restore(checkpoint_path)


def _exists(checkpoint) -> bool:
    return checkpoint.filesystem.get_file_info(checkpoint.path).type != pafs.FileType.NotFound


run_trial.__mixins__ = (RestoreFromNewestCheckpoint,)
