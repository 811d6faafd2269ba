"""The Tune callbacks of the experiment trackers a study names (`orchestrator.study.trackers`
checks the entries at `validate`): MLflow and Weights & Biases loggers, one run per trial.
TensorBoard needs no callback: Tune writes its event files by default."""

from __future__ import annotations

import os

from orchestrator.errors import Problem, UserError
from orchestrator.study.trackers import entries


def build(callbacks: list, study: str, stage: str | None, study_uri: str, local: bool) -> list:
    """Tune callbacks for one stage's Tuner, or (`stage` None) for the whole study's, which tag
    each trial's run with the trial's own stage (MLflow tag `stage`, W&B group)."""
    out = []
    for name, options in entries(callbacks):
        if name == "mlflow":
            from orchestrator.execution.tracker_callbacks import StageTaggedMLflow

            uri = (
                options.get("tracking_uri")
                or os.environ.get("MLFLOW_TRACKING_URI")
                or (f"file://{study_uri}/mlruns" if local else None)
            )
            if uri and "://" not in uri:
                uri = f"file://{os.path.abspath(uri)}"
            if uri and uri.startswith("file://"):
                # MLflow 3 refuses its file store unless asked; a local folder is what a study
                # on one machine wants (use a tracking server or sqlite:/// for more).
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            preflight_mlflow(uri, options.get("experiment", study))
            callback = StageTaggedMLflow(
                tracking_uri=uri, experiment_name=options.get("experiment", study), tags={"study": study}
            )
            callback.fixed_stage = stage
            out.append(callback)
        elif name == "wandb":
            from orchestrator.execution.tracker_callbacks import StageGroupedWandb

            callback = StageGroupedWandb(project=options.get("project", study), group=options.get("group", stage))
            callback.fixed_group = options.get("group") or stage
            out.append(callback)
    return out


def preflight_mlflow(uri: str | None, experiment: str) -> None:
    """Reach the tracking store before any trial runs: a bad URI is a clear error, not a crash."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(experiment) is None:
            client.create_experiment(experiment)
    except Exception as exc:  # noqa: BLE001 - any MLflow failure becomes one clear line
        raise UserError(
            Problem(
                "callbacks",
                f"mlflow tracking store {uri or '(default)'} is not usable: {' '.join(str(exc).split())[:300]}",
            )
        ) from None
