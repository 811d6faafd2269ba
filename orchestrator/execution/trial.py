"""The Ray Tune function trainable that runs one trial of any registered trainable.

Tune's `param_space` carries `{"trial": <TrialSpec dict>, "search": <sampled values>}`; this
wrapper merges them, builds a `TuneSession` and calls the trainable's `train`. Running every
stage through one wrapper keeps the Tune side (resources, names, storage) in the orchestrator
and lets trainables stay plain functions.
"""

from __future__ import annotations

import os

import trainables
from orchestrator.planning.trials import deep_merge
from trainables.runtime.session import TuneSession


def trial_config(config: dict) -> dict:
    """The trainable's config for a Tune trial config (sampled search values win)."""
    trial = config["trial"]
    return dict(deep_merge(trial["config"], config.get("search") or {}), seed=trial["seed"])


def _placement() -> dict:
    from trainables.runtime.distributed import placement

    return placement()


def run_trial(config: dict) -> None:
    import time

    import psutil
    from ray import tune

    function_started_at = time.time()
    trial = config["trial"]
    parallel = trial.get("workers", 1) > 1
    # The first trial of a worker pays the imports (torch). A data-parallel trial's own process
    # only waits for its Ray Train workers, which import the trainable themselves.
    module = None if parallel else trainables.get(trial["trainable"])
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

    session.telemetry = telemetry.for_this_trial()
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
