"""Experiment trackers named in the study file (`callbacks: [tensorboard, mlflow, wandb]`): which
exist, their options, and the checks `validate` makes (the Tune callbacks themselves are built in
`orchestrator.execution.trackers`).

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
            ((name, options),) = entry.items()
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
            problems.append(
                Problem(message=f"unknown tracker {name!r}; expected one of: {', '.join(TRACKERS)}", **where)
            )
            continue
        if not isinstance(options, dict) or set(options) - spec["options"]:
            allowed = ", ".join(sorted(spec["options"])) or "none"
            problems.append(
                Problem(
                    message=f"unknown option(s) for {name}: "
                    f"{', '.join(sorted(set(options) - spec['options']))}; options: {allowed}",
                    **where,
                )
            )
            continue
        if importlib.util.find_spec(spec["package"]) is None:
            problems.append(
                Problem(message=f"{name} needs the package {spec['package']!r}: pip install {spec['extra']}", **where)
            )
            continue
        if (
            name == "wandb"
            and not os.environ.get("WANDB_API_KEY")
            and os.environ.get("WANDB_MODE") not in ("offline", "disabled")
        ):
            problems.append(
                Problem(message="wandb needs WANDB_API_KEY in the environment (or WANDB_MODE=offline)", **where)
            )
    return problems
