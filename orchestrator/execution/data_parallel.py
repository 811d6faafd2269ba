"""A trial with `workers: N`: N data-parallel Ray Train workers launched from inside the Tune trial
(the Ray 2.60 pattern: a Tune function trainable runs a `TorchTrainer` and waits for it).

Why not `ray.tune.integration.ray_train.TuneReportCallback`: it forwards rank 0's metrics but
only the *path* of a checkpoint, so the Tune trial would have no checkpoint and a later stage's
`${stage.best.checkpoint}` would have nothing to point at. `_Forward` sends (metrics,
checkpoint path) through a Ray queue instead, and the Tune trial reports both, the checkpoint
as a `tune.Checkpoint` on the storage where Train wrote it (Tune copies it into the trial).

The Train run lives in `<storage>/<stage>/_train/<trial id>`: a Tune trial that is retried after
a failure starts the same run again, and Ray Train resumes it from its latest checkpoint.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import trainables


def _worker_loop(cfg: dict) -> None:
    """Runs on every Train worker: the trainable's `train` with a TrainSession."""
    from trainables.runtime import distributed, telemetry
    from trainables.runtime.session import TrainSession

    session = TrainSession(checkpoint_every=cfg["checkpoint_every"], context=cfg["context"], select=cfg.get("select"))
    session.context = dict(session.context, placement=distributed.placement())
    session.telemetry = telemetry.for_this_trial(cfg.get("gpu_share"), own_device_only=True)
    try:
        trainables.load_recipe(cfg["recipe"]).train(cfg["config"], session)
    finally:
        if session.telemetry is not None:
            session.telemetry.stop()


def _forward_callback(queue):
    from ray.train import UserCallback

    class _Forward(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            queue.put({"metrics": dict(metrics[0]), "checkpoint": checkpoint.path if checkpoint else None})

    return _Forward()


def run(trial: dict, config: dict, context: dict) -> None:
    """Run the trial's Train workers and relay their reports to Tune (called in the Tune trial)."""
    from ray import tune
    from ray.util.queue import Empty, Queue

    from orchestrator.storage.store import Store

    storage_path, storage_fs = Store(trial["storage"]).ray_storage()
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = _trainer(trial, {"config": config, "context": context}, queue, (storage_path, storage_fs))
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the trial's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="train-fit", daemon=True)
    thread.start()
    last_checkpoint = None
    while thread.is_alive() or not queue.empty():
        try:
            item = queue.get(timeout=0.5)
        except Empty:
            continue
        checkpoint = None
        if item["checkpoint"]:
            checkpoint = last_checkpoint = tune.Checkpoint(item["checkpoint"], filesystem=storage_fs)
        tune.report(item["metrics"], checkpoint=checkpoint)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    if last_checkpoint is not None:
        _copy_artifacts(last_checkpoint)


def _trainer(trial: dict, loop_config: dict, queue, storage: tuple):
    """The trial's TorchTrainer: `workers` ranks with their share of the trial's resources, its
    run in `<stage>/_train/<trial id>` of the study's storage, reports forwarded into `queue`."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage_path, storage_fs = storage
    per_worker = trial["worker_resources"]
    # NCCL between GPU workers, gloo on CPU. ORCHESTRATOR_DIST_BACKEND=gloo overrides it for
    # clusters whose "GPUs" are logical only (tests on ray.cluster_utils, a CPU machine).
    backend = os.environ.get("ORCHESTRATOR_DIST_BACKEND") or ("nccl" if per_worker["gpu"] > 0 else "gloo")
    return TorchTrainer(
        _worker_loop,
        train_loop_config={
            "trainable": trial["trainable"],
            "recipe": trial["recipe"],
            **loop_config,
            "checkpoint_every": trial["checkpoint_every"],
            "select": trial.get("select"),
            "gpu_share": per_worker["gpu"],
        },
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(
            num_workers=trial["workers"],
            use_gpu=per_worker["gpu"] > 0,
            resources_per_worker={"CPU": per_worker["cpu"], "GPU": per_worker["gpu"]},
        ),
        run_config=RunConfig(
            name=loop_config["context"]["trial_id"],
            storage_path=f"{storage_path.rstrip('/')}/{trial['stage']}/_train",
            storage_filesystem=storage_fs,
            callbacks=[_forward_callback(queue)],
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0),
        ),
    )


def _copy_artifacts(checkpoint) -> None:
    """Rank 0's files (metrics.csv, metadata.json, ...) from the last checkpoint into the trial folder."""
    from trainables.runtime.session import TrainSession

    with checkpoint.as_directory() as folder:
        source = Path(folder) / TrainSession.ARTIFACTS
        if source.is_dir():
            shutil.copytree(source, os.getcwd(), dirs_exist_ok=True)
