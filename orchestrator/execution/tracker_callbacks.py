"""The trackers' Tune callbacks, with each trial's run labelled by its stage (a module of its own:
importing Ray's MLflow integration imports MLflow, ~0.6 s that a study without trackers does not
pay; Tune pickles these classes into the experiment by this module's path)."""

from __future__ import annotations

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback


def _stage_of(trial) -> str:
    return trial.config["trial"]["stage"]


class StageTaggedMLflow(MLflowLoggerCallback):
    """MLflow's callback with each run tagged with its trial's stage (the stage's own Tuner's,
    or, for the whole study's, the trial's)."""

    fixed_stage: str | None = None

    def log_trial_start(self, trial):
        self.tags = {**self.tags, "stage": self.fixed_stage or _stage_of(trial)}
        super().log_trial_start(trial)


class StageGroupedWandb(WandbLoggerCallback):
    """W&B's callback with each run grouped by its trial's stage (unless the study names a group)."""

    fixed_group: str | None = None

    def log_trial_start(self, trial):
        self.group = self.fixed_group or _stage_of(trial)
        super().log_trial_start(trial)
