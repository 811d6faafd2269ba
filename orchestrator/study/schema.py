"""The study file: a pydantic schema (unknown keys rejected) and its loader.

`load_study(path)` returns a validated `Study` whose relative input paths are resolved against
the study file's folder, or raises `UserError` listing *every* problem as
`FILE:LINE: key.path: message`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import Problem, UserError, join_path
from orchestrator.study import notify_targets, trackers
from orchestrator.study.pydantic_errors import pydantic_problems
from orchestrator.study.race_settings import Race
from orchestrator.study.yaml_doc import YamlDoc, load_yaml

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def _check_name(value: str, what: str) -> str:
    # Names become folder names in storage: no separators, no `..`, nothing absolute.
    if not NAME_RE.match(value) or ".." in value:
        raise ValueError(
            f"invalid {what} {value!r}: use letters, digits, '_', '-', '.' (no '/', no '..'), "
            "starting with a letter or digit"
        )
    return value


def _unique(cls, v: list[int] | None) -> list[int] | None:
    if v is not None and len(set(v)) != len(v):
        raise ValueError("seeds must be unique")
    return v


class Resources(_Strict):
    """What one trial asks of the cluster."""

    cpu: float = Field(1.0, gt=0, description="CPUs per trial (per worker when workers > 1).")
    gpu: float = Field(
        0.0,
        ge=0,
        description="GPUs per trial; fractions pack several trials on one GPU. "
        "Dropped (with a note) on a cluster without GPUs.",
    )
    workers: int = Field(
        1,
        ge=1,
        description="Data-parallel Ray Train workers per trial, each with `cpu` "
        "and `gpu`; only for trainables that declare DATA_PARALLEL.",
    )

    @model_validator(mode="after")
    def _gpu_fraction(self) -> Resources:
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise ValueError("gpu above 1 must be a whole number")
        return self


class CheckpointPolicy(_Strict):
    """When trials checkpoint (always at their last epoch too).

    By default by time: at the end of the first epoch that finishes `interval_s` seconds after
    the last checkpoint, so a killed trial loses at most about that much work while short
    epochs do not pay for a checkpoint each (writing, uploading, and Tune's experiment-state
    snapshots). `every: N` checkpoints every N epochs instead.
    """

    every: int | None = Field(None, ge=1, description="Checkpoint every N epochs (overrides interval_s).")
    interval_s: float = Field(30.0, ge=0, description="Checkpoint when this many seconds passed since the last.")
    keep: int | None = Field(2, ge=1, description="Checkpoints kept per trial, besides the newest (None keeps all).")
    keep_best: bool = Field(
        True,
        description="Keep the `keep` best by the stage's select metric (the best epoch's among them); "
        "false: the `keep` newest.",
    )


class Select(_Strict):
    """What 'best trial' of a stage means, for later stages and reports."""

    metric: str
    mode: Literal["min", "max"]


class Gate(_Strict):
    """A decision point: stages that need this one run only if the condition holds."""

    metric: str
    op: Literal[">=", ">", "<=", "<"]
    value: float
    over: Literal["best", "mean"] = Field(
        "best", description="The best trial's value, or the mean over successful trials."
    )

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.value:g} ({self.over})"


class Compare(_Strict):
    """A paired comparison, seed by seed: every variant against one of them (`baseline`), or this
    stage against another one (`stage`; with `baseline`, that stage's variant), e.g. two
    architectures, each its own trainable, trained on the same data with the same seeds."""

    baseline: str | None = None
    stage: str | None = Field(None, description="Compare with this stage's trials, paired by seed.")

    @model_validator(mode="after")
    def _something(self) -> Compare:
        if self.baseline is None and self.stage is None:
            raise ValueError("give baseline (a variant of this stage), or stage (another stage), or both")
        return self


class Search(_Strict):
    """Optional Tune search over a space of hyper-parameters, on top of variants x grid x seeds."""

    space: str | dict[str, Any] = Field(description="A search-space YAML file, or the space inline.")
    num_samples: int = Field(1, ge=1)
    scheduler: Literal["fifo", "asha", "pbt"] = "fifo"
    scheduler_config: dict[str, Any] = Field(default_factory=dict)


class Defaults(_Strict):
    resources: Resources = Field(default_factory=Resources)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    max_failures: int = Field(1, ge=0, description="Retries of a trial whose worker dies.")
    checkpoint: CheckpointPolicy = Field(default_factory=CheckpointPolicy)
    report_interval_s: float = Field(
        1.0,
        ge=0,
        description="Trials report to Tune at most this often "
        "(the last report and reports with checkpoints always go out; every "
        "epoch is in the trial's metrics.csv). 0 reports every epoch.",
    )

    _unique_seeds = field_validator("seeds")(_unique)


class Stage(_Strict):
    trainable: str
    needs: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] | None = Field(None, min_length=1)
    resources: Resources | None = None
    search: Search | None = None
    select: Select | None = None
    race: Race | None = Field(None, description="Race the groups of seeds; stop the clearly worse ones.")
    compare: Compare | None = None
    within_seed: Literal["separate", "mean"] = Field(
        "separate",
        description="Tables over seeds: trials of a variant that differ in more than the seed (a "
        "fan-out's upstream trial, a search sample) are separate rows (`separate`), or are averaged per seed "
        "first (`mean`); n counts seeds either way.",
    )
    gate: Gate | list[Gate] | None = None
    stop: dict[str, float] = Field(default_factory=dict, description="Tune stopping criteria.")
    checkpoint: CheckpointPolicy | None = None
    max_failures: int | None = Field(None, ge=0)
    max_concurrent: int | None = Field(None, ge=1)
    report_interval_s: float | None = Field(None, ge=0, description="Overrides defaults.report_interval_s.")
    expected_trial_minutes: float | None = Field(None, gt=0, description="For plan's time estimate.")

    @model_validator(mode="after")
    def _scheduler_needs_select(self) -> Stage:
        if self.search and self.search.scheduler != "fifo" and self.select is None:
            raise ValueError(
                f"scheduler {self.search.scheduler!r} needs `select: {{metric: ..., mode: ...}}` "
                "on the stage (the metric it schedules on)"
            )
        return self

    @model_validator(mode="after")
    def _race_needs(self) -> Stage:
        if self.race is None:
            return self
        if self.select is None:
            raise ValueError("race needs `select: {metric: ..., mode: ...}` on the stage (the metric it races on)")
        if self.search and self.search.scheduler != "fifo":
            raise ValueError(
                f"race and search.scheduler {self.search.scheduler!r} would both stop trials: "
                "use one (race stops groups of seeds, the scheduler single trials)"
            )
        if self.report_interval_s:
            raise ValueError("race reads every epoch's report: remove report_interval_s from the stage, or set it to 0")
        return self

    @property
    def gates(self) -> list[Gate]:
        if self.gate is None:
            return []
        return self.gate if isinstance(self.gate, list) else [self.gate]

    @model_validator(mode="after")
    def _baseline_is_a_variant(self) -> Stage:
        if self.compare and self.compare.stage is None and self.compare.baseline not in self.variants:
            raise ValueError(
                f"compare.baseline {self.compare.baseline!r} is not a variant of this stage; "
                f"variants: {', '.join(self.variants) or '(none)'}"
            )
        return self

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, row in v.items():
            _check_name(name, "variant name")
            if row is None:
                raise ValueError(f"variant {name!r} is empty (write {{}} for 'base config only')")
        return v

    @field_validator("grid")
    @classmethod
    def _grid_lists(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values (an empty grid runs nothing)")
        return v

    _unique_seeds = field_validator("seeds")(_unique)


MAX_TRIALS = 20_000
NOTIFY_EVENTS = ("study_end", "stage_end", "gate", "trial_error", "budget", "race")
ENV_URL = notify_targets.ENV_URL


class Notify(_Strict):
    """Where the study's events go (orchestrator/study/notify_targets.py): Apprise URLs, or plain
    webhooks that receive a JSON POST. Whether each URL can be sent to (and each `${env:NAME}` is
    set) is checked by `validate` and `run` (`notify_targets.problems`), not here: `resume` reads
    the stored study file in a shell that may lack the secret, and runs with that URL off."""

    urls: list[str] = Field(
        default_factory=list,
        description="Apprise URLs (slack://..., discord://..., mailtos://..., ntfys://topic, json://host/path), "
        "or ${env:NAME} to read one from the environment (never stored or printed).",
    )
    webhooks: list[str] = Field(
        default_factory=list,
        description="Plain webhook URLs (https://...) that receive a JSON POST in `format`, or ${env:NAME}.",
    )
    events: list[Literal[NOTIFY_EVENTS]] = Field(
        default_factory=lambda: ["study_end", "gate", "trial_error", "budget"], min_length=1
    )
    format: Literal["slack", "json"] = Field(
        "slack", description='The body of `webhooks`: slack: {"text": ...}; json: event fields too.'
    )

    @field_validator("urls", "webhooks")
    @classmethod
    def _written(cls, v: list[str]) -> list[str]:
        for url in v:
            if not ENV_URL.match(url.strip()) and "://" not in url:
                raise ValueError(f"expected a URL (scheme://...) or ${{env:NAME}}, got {url[:40]!r}")
        return v

    @model_validator(mode="after")
    def _somewhere(self) -> Notify:
        if not self.urls and not self.webhooks:
            raise ValueError("give urls (Apprise URLs) or webhooks (http(s) URLs), or both")
        return self


class Limits(_Strict):
    max_trials: int = Field(
        MAX_TRIALS,
        ge=1,
        description="The most trials a study may expand to (grid x variants x seeds x samples, all stages): a "
        "larger study is refused before anything expands.",
    )


class Budget(_Strict):
    """A spend cap for the whole study (every stage, every run of it): see orchestrator/planning/budget.py."""

    usd: float | None = Field(None, gt=0, description="The most the study may spend, in USD.")
    gpu_hours: float | None = Field(None, gt=0, description="The most GPU-hours it may use.")
    gpu_price: str | float | None = Field(
        None, description="USD per GPU-hour: a key of cluster/prices.yaml (gpu_hour_usd) or a number."
    )
    cpu_price: str | float | None = Field(
        None, description="USD per CPU-hour: a key of cluster/prices.yaml (cpu_hour_usd) or a number (default 0)."
    )

    @model_validator(mode="after")
    def _a_cap(self) -> Budget:
        if self.usd is None and self.gpu_hours is None:
            raise ValueError("give usd, gpu_hours or both")
        for name in ("gpu_price", "cpu_price"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"{name}: expected a price >= 0, got {value}")
        return self


class Study(_Strict):
    name: str
    description: str = ""
    storage: str = "./runs"
    defaults: Defaults = Field(default_factory=Defaults)
    limits: Limits = Field(default_factory=Limits)
    budget: Budget | None = None
    notify: Notify | None = None
    callbacks: list[str | dict[str, Any]] = Field(
        default_factory=list,
        description="Experiment trackers: tensorboard, mlflow, wandb (see orchestrator/study/trackers.py).",
    )
    stages: dict[str, Stage] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "study name")

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, v: dict[str, Stage]) -> dict[str, Stage]:
        for name in v:
            _check_name(name, "stage name")
        return v

    # Effective per-stage settings (stage value, else the study default).
    def seeds_of(self, stage: Stage) -> list[int]:
        return stage.seeds if stage.seeds is not None else self.defaults.seeds

    def resources_of(self, stage: Stage) -> Resources:
        return stage.resources or self.defaults.resources

    def checkpoint_of(self, stage: Stage) -> CheckpointPolicy:
        return stage.checkpoint or self.defaults.checkpoint

    def report_interval_of(self, stage: Stage) -> float:
        if stage.report_interval_s is not None:
            return stage.report_interval_s
        if stage.race or (stage.search and stage.search.scheduler != "fifo"):
            return 0.0  # a race's rungs, ASHA and PBT count reports as time: one per epoch keeps them epochs
        return self.defaults.report_interval_s

    def max_failures_of(self, stage: Stage) -> int:
        return stage.max_failures if stage.max_failures is not None else self.defaults.max_failures


def load_study(path: str | Path) -> tuple[Study, YamlDoc]:
    """Load and schema-check a study file. Raises `UserError` with every problem found."""
    doc = load_yaml(path)
    try:
        study = Study.model_validate(doc.data)
    except ValidationError as exc:
        raise UserError(pydantic_problems(exc, doc, Study)) from None
    problems = _check_graph(study, doc) + trackers.check(study.callbacks, doc)
    problems += notify_targets.problems(study.notify, doc)  # not at `resume`: see Notify
    if problems:
        raise UserError(problems)
    return study, doc


def _check_graph(study: Study, doc: YamlDoc) -> list[Problem]:
    problems = []
    for name, stage in study.stages.items():
        for i, dep in enumerate(stage.needs):
            if dep not in study.stages:
                problems.append(
                    Problem(
                        doc.file,
                        f"unknown stage {dep!r}; stages are: {', '.join(study.stages)}",
                        join_path("stages", name, "needs", i),
                        doc.line_of(("stages", name, "needs", i)),
                    )
                )
            elif dep == name:
                problems.append(
                    Problem(
                        doc.file,
                        "a stage cannot need itself",
                        join_path("stages", name, "needs", i),
                        doc.line_of(("stages", name, "needs", i)),
                    )
                )
    for name, stage in study.stages.items():
        other = stage.compare.stage if stage.compare else None
        if other is None:
            continue
        where = ("stages", name, "compare", "stage")
        if other not in study.stages or other == name:
            message = f"unknown stage {other!r}; stages are: {', '.join(n for n in study.stages if n != name)}"
        elif stage.compare.baseline is not None and stage.compare.baseline not in study.stages[other].variants:
            where = ("stages", name, "compare", "baseline")
            message = f"stage {other!r} has no variant {stage.compare.baseline!r}"
        else:
            continue
        problems.append(Problem(doc.file, message, join_path(*where), doc.line_of(where)))
    if problems:
        return problems
    cycle = find_cycle({n: s.needs for n, s in study.stages.items()})
    if cycle:
        first = cycle[0]
        problems.append(
            Problem(
                doc.file,
                "stages depend on each other in a cycle: " + " -> ".join(cycle),
                join_path("stages", first, "needs"),
                doc.line_of(("stages", first, "needs")),
            )
        )
    return problems


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def topological_order(study: Study) -> list[str]:
    """Stages in an order where every stage comes after the stages it needs (file order otherwise)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        for dep in study.stages[name].needs:
            visit(dep)
        done.add(name)
        order.append(name)

    for name in study.stages:
        visit(name)
    return order
