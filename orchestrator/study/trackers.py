"""Experiment-tracker callbacks: `callbacks: [tensorboard, mlflow, wandb]` in the study file.

Each entry is a name or `{name: {options}}`; they wire Ray Tune's own logger callbacks:
- `tensorboard`: Tune writes TensorBoard event files per trial (its default loggers); the entry
  checks that `tensorboardX` is installed. Open with `tensorboard --logdir <storage>/<study>`.
- `mlflow` (`tracking_uri`, `experiment`): `ray.air.integrations.mlflow.MLflowLoggerCallback`,
  one MLflow run per trial with its parameters and every reported metric. Without a
  tracking_uri, MLFLOW_TRACKING_URI, else `<storage>/<study>/mlruns` for local storage.
- `wandb` (`project`, `group`): `ray.air.integrations.wandb.WandbLoggerCallback`; needs
  WANDB_API_KEY in the environment (or WANDB_MODE=offline).
A missing package or credentials is an error at `validate`, never a crash mid-run.
"""

from __future__ import annotations

import importlib.util
import os

from orchestrator.errors import Problem, join_path
from orchestrator.study.yaml_doc import YamlDoc

TRACKERS = {
    "tensorboard": {"package": "tensorboardX", "options": set(), "extra": "ray[tune] (tensorboardX)"},
    "mlflow": {"package": "mlflow", "options": {"tracking_uri", "experiment"}, "extra": "mlflow (or mlflow-skinny)"},
    "wandb": {"package": "wandb", "options": {"project", "group"}, "extra": "wandb"},
}


def entries(callbacks: list) -> list[tuple[str, dict]]:
    out = []
    for entry in callbacks:
        if isinstance(entry, str):
            out.append((entry, {}))
        else:
            (name, options), = entry.items()
            out.append((name, dict(options or {})))
    return out


def check(callbacks: list, doc: YamlDoc) -> list[Problem]:
    problems = []
    for i, entry in enumerate(callbacks):
        path = ("callbacks", i)
        where = dict(file=doc.file, path=join_path(*path), line=doc.line_of(path))
        if not isinstance(entry, (str, dict)) or (isinstance(entry, dict) and len(entry) != 1):
            problems.append(Problem(message="expected a tracker name or {name: {options}}", **where))
            continue
        name, options = entries([entry])[0]
        spec = TRACKERS.get(name)
        if spec is None:
            problems.append(Problem(message=f"unknown tracker {name!r}; expected one of: {', '.join(TRACKERS)}", **where))
            continue
        if not isinstance(options, dict) or set(options) - spec["options"]:
            allowed = ", ".join(sorted(spec["options"])) or "none"
            problems.append(Problem(message=f"unknown option(s) for {name}: "
                                    f"{', '.join(sorted(set(options) - spec['options']))}; options: {allowed}", **where))
            continue
        if importlib.util.find_spec(spec["package"]) is None:
            problems.append(Problem(message=f"{name} needs the package {spec['package']!r}: pip install "
                                    f"{spec['extra']}", **where))
            continue
        if name == "wandb" and not os.environ.get("WANDB_API_KEY") and \
                os.environ.get("WANDB_MODE") not in ("offline", "disabled"):
            problems.append(Problem(message="wandb needs WANDB_API_KEY in the environment (or WANDB_MODE=offline)",
                                    **where))
    return problems


def build(callbacks: list, study: str, stage: str, study_uri: str, local: bool) -> list:
    """Tune callbacks for one stage's Tuner."""
    out = []
    for name, options in entries(callbacks):
        if name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            uri = options.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or (
                f"file://{study_uri}/mlruns" if local else None)
            if uri and "://" not in uri:
                uri = f"file://{os.path.abspath(uri)}"
            if uri and uri.startswith("file://"):
                # MLflow 3 refuses its file store unless asked; a local folder is what a study
                # on one machine wants (use a tracking server or sqlite:/// for more).
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            preflight_mlflow(uri, options.get("experiment", study))
            out.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=options.get("experiment", study),
                                            tags={"study": study, "stage": stage}))
        elif name == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            out.append(WandbLoggerCallback(project=options.get("project", study), group=options.get("group", stage)))
    return out


def preflight_mlflow(uri: str | None, experiment: str) -> None:
    """Reach the tracking store before any trial runs: a bad URI is a clear error, not a crash."""
    from mlflow.tracking import MlflowClient

    from orchestrator.errors import UserError

    try:
        client = MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(experiment) is None:
            client.create_experiment(experiment)
    except Exception as exc:  # noqa: BLE001 - any MLflow failure becomes one clear line
        raise UserError(Problem("callbacks", f"mlflow tracking store {uri or '(default)'} is not usable: "
                                f"{' '.join(str(exc).split())[:300]}")) from None
