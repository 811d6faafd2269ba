"""A study expanded into trials: variants x grid x seeds (x search samples), stages in
dependency order, every trial's settings and references checked (`load_plan`)."""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import trainables
from orchestrator.errors import Problem, UserError, join_path
from orchestrator.planning import race_rule
from orchestrator.planning.inputs import InputChecks, Row, resolve_inputs, value_key
from orchestrator.planning.trials import TrialSpec, deep_merge, trial_id
from orchestrator.study import references as refs
from orchestrator.study.schema import Resources, Stage, Study, load_study, topological_order
from orchestrator.study.search_space import describe, load_space, representative
from orchestrator.study.yaml_doc import YamlDoc

# what a reference stands for while its stage has not run (the values `validate` checks with)
PLACEHOLDERS = {
    "checkpoint": "/reference/checkpoint",
    "latest_checkpoint": "/reference/checkpoint",
    "trial_id": "reference",
    "metric": 0.0,
}


@dataclass
class StagePlan:
    name: str
    stage: Stage
    trials: list[TrialSpec]
    resources: Resources
    search_space: dict | None = None
    differing: list[str] = field(default_factory=list)  # config keys that differ between trials
    notes: list[str] = field(default_factory=list)  # what checking the inputs found (overlapping windows, ...)
    fan_out: int = 1  # downstream trials per planned row, from `top[K]` / `all` references
    resolved: bool = False  # references replaced by upstream results (at run time)
    trainable: trainables.Trainable | None = None  # what `stage.trainable` names (trainables/registry.py)

    @property
    def num_trials(self) -> int:
        per_row = 1 if self.resolved else self.fan_out
        return len(self.trials) * per_row * (self.stage.search.num_samples if self.stage.search else 1)

    @property
    def has_refs(self) -> bool:
        return not self.resolved and any(t.has_refs for t in self.trials)

    def describe_search(self) -> dict[str, str]:
        return describe(self.search_space) if self.search_space else {}


@dataclass
class Plan:
    study: Study
    doc: YamlDoc
    study_dir: Path
    stages: dict[str, StagePlan]
    order: list[str]

    @property
    def num_trials(self) -> int:
        return sum(s.num_trials for s in self.stages.values())


def load_plan(path: str | Path, check_inputs: bool = True) -> Plan:
    """Load, validate and expand a study file. Raises `UserError` listing every problem.

    `check_inputs=False` skips reading data files (for `plan`, whose data may live elsewhere).
    """
    study, doc = load_study(path)
    return build_plan(study, doc, Path(path).resolve().parent, check_inputs)


def build_plan(study: Study, doc: YamlDoc, study_dir: Path, check_inputs: bool = True) -> Plan:
    _check_size(study, doc)
    problems: list[Problem] = []
    stages: dict[str, StagePlan] = {}
    for name in topological_order(study):
        try:
            stages[name] = _StageExpansion(study, name, doc, study_dir, stages).expand(check_inputs)
        except UserError as exc:
            problems.extend(exc.problems)
    problems += _same_module_names(stages, doc)
    if problems:
        raise UserError(list({str(p): p for p in problems}.values()))  # each problem once, in order
    return Plan(study, doc, study_dir, stages, list(stages))


def _same_module_names(stages: dict[str, StagePlan], doc: YamlDoc) -> list[Problem]:
    """Two file trainables of a study with one file name: every worker imports a file trainable
    by its name, so they would be one module there."""
    seen: dict[str, StagePlan] = {}
    problems = []
    for sp in stages.values():
        if sp.trainable is None or sp.trainable.kind != "file":
            continue
        first = seen.setdefault(sp.trainable.recipe_name, sp)
        if first.trainable.source != sp.trainable.source:
            where = ("stages", sp.name, "trainable")
            problems.append(
                Problem(
                    doc.file,
                    f"{sp.trainable.source} and {first.trainable.source} (stage {first.name}) have the same module "
                    f"name {sp.trainable.recipe_name!r}, which every worker imports them by; rename one",
                    join_path(*where),
                    doc.line_of(where),
                )
            )
    return problems


def _check_size(study: Study, doc: YamlDoc) -> None:
    """Refuse a study that would expand to more than `limits.max_trials` trials, counted from
    the sizes of its grids, variants, seeds and search samples before anything expands (a
    million-trial grid would otherwise take minutes to check and then go to Ray). The problem
    points at the largest factor. Fan-out references (`.all`, `top[K]`) multiply at run time
    and are not counted."""
    factors: list[tuple[int, str, tuple]] = []
    total = 0
    for name, stage in study.stages.items():
        where = ("stages", name)
        sizes = [(len(v), f"{name}: grid.{k}", (*where, "grid", k)) for k, v in stage.grid.items()]
        sizes += [(len(stage.variants), f"{name}: variants", (*where, "variants"))] if stage.variants else []
        seeds_at = (*where, "seeds") if stage.seeds is not None else ("defaults", "seeds")
        sizes += [(len(study.seeds_of(stage)), f"{name}: seeds", seeds_at)]
        if stage.search:
            sizes += [(stage.search.num_samples, f"{name}: search.num_samples", (*where, "search", "num_samples"))]
        total += math.prod(n for n, _, _ in sizes)
        factors += sizes
    limit = study.limits.max_trials
    if total > limit:
        ranked = sorted(factors, key=lambda f: -f[0])
        largest = ", ".join(f"{what} {n:,}" for n, what, _ in ranked[:4])
        raise UserError(
            Problem(
                doc.file,
                f"the study expands to {total:,} trials, more than limits.max_trials ({limit:,}); largest factors: "
                f"{largest} (raise limits.max_trials if you mean it)",
                join_path(*ranked[0][2]),
                doc.line_of(ranked[0][2]),
            )
        )


class _StageExpansion:
    """The trials of one stage, checked: its trainable, its rows, references and settings."""

    def __init__(self, study: Study, name: str, doc: YamlDoc, study_dir: Path, built: dict[str, StagePlan]):
        self.study, self.name, self.doc, self.study_dir, self.built = study, name, doc, study_dir, built
        self.stage = study.stages[name]
        self.fan_out: dict[tuple, int] = {}

    def expand(self, check_inputs: bool) -> StagePlan:
        trainable = self._trainable()
        module = trainable.settings
        space = None
        if self.stage.search is not None:
            where = ("stages", self.name, "search", "space")
            space, _ = load_space(self.stage.search.space, self.study_dir, self.doc, where)
        checks = InputChecks(trainable, read_data=check_inputs)
        problems: list[Problem] = []
        trials: list[TrialSpec] = []
        seen: dict[str, str] = {}
        for spec, row in self._specs():
            if spec.id in seen:
                problems.append(
                    Row(self.doc, self.name, self.stage, None).problem(
                        f"trials {seen[spec.id]} and {spec.name} resolve to the same config and seed; make the "
                        "variants differ",
                        ("stages", self.name),
                    )
                )
                continue
            seen[spec.id] = spec.name
            spec.run_config = resolve_inputs(spec.config, module, self.study_dir)
            probe = copy.deepcopy(dict(spec.run_config, seed=spec.seed))
            ref_problems = self._check_refs(spec.config, row, probe)
            if ref_problems:
                problems.extend(ref_problems)
                continue
            for key, sampler in (space or {}).items():  # sampled keys are checked with a representative value
                probe[key] = representative(sampler)
            problems.extend(checks.check(probe, spec.config, row))
            trials.append(spec)
        problems += self._race_problems(trials, checks.notes)
        if problems:
            raise UserError(problems)
        return StagePlan(
            self.name,
            self.stage,
            trials,
            self.study.resources_of(self.stage),
            space,
            _differing(trials),
            list(dict.fromkeys(checks.notes)),
            fan_out=math.prod(self.fan_out.values()) if self.fan_out else 1,
            trainable=trainable,
        )

    def _race_problems(self, trials: list[TrialSpec], notes: list[str]) -> list[Problem]:
        """A race that could never eliminate anything is a mistake in the study file."""
        race = self.stage.race
        if race is None or not trials:
            return []
        where = Row(self.doc, self.name, self.stage, None)
        seeds = self.study.seeds_of(self.stage)
        if len(seeds) < race.min_seeds:
            return [
                where.problem(
                    f"race needs at least min_seeds={race.min_seeds} seeds per group; the stage has {len(seeds)} "
                    f"({', '.join(map(str, seeds))}): add seeds or lower min_seeds",
                    ("stages", self.name, "race", "min_seeds"),
                )
            ]
        samples = self.stage.search.num_samples if self.stage.search else 1
        groups = len(trials) // len(seeds) * samples * (math.prod(self.fan_out.values()) if self.fan_out else 1)
        if groups < 2:
            notes.append("race: the stage has one group of seeds: nothing to race against")
            return []
        first = race_rule.rung_level(race.alpha, 1) / (groups - 1)
        if race_rule.smallest_p(race.test, len(seeds)) > first:
            return [
                where.problem(
                    f"race with test wilcoxon on {len(seeds)} seeds can never eliminate a group: its smallest "
                    f"p-value, 2^-{len(seeds)} = {0.5 ** len(seeds):.3g}, is above the first rung's level for "
                    f"{groups} groups ({first:.3g}); use test: t, or more seeds",
                    ("stages", self.name, "race", "test"),
                )
            ]
        return []

    def _trainable(self) -> trainables.Trainable:
        """The stage's trainable (`trainables/registry.py`); also checks that it runs data-parallel
        if asked to. A mistake in a user's trainable is one line at the user's file and line."""
        where = ("stages", self.name, "trainable")
        row = Row(self.doc, self.name, self.stage, None)
        try:
            trainable = trainables.resolve(self.stage.trainable, self.study_dir)
        except trainables.UnknownTrainable as exc:
            raise UserError(row.problem(str(exc), where)) from None
        except trainables.TrainableError as exc:
            raise UserError(user_code_problem(exc, row, where)) from None
        if self.study.resources_of(self.stage).workers > 1 and not trainable.data_parallel:
            where = (
                ("stages", self.name, "resources", "workers")
                if self.stage.resources
                else ("defaults", "resources", "workers")
            )
            parallel = trainables.registered(data_parallel=True)
            raise UserError(
                row.problem(
                    f"trainable {self.stage.trainable!r} does not run data-parallel; workers > 1 needs one that "
                    f"does (DATA_PARALLEL = True, e.g. {', '.join(parallel)}); use gpu: N for one process with N GPUs",
                    where,
                )
            )
        return trainable

    def _specs(self):
        """(trial, its row) for every variant x grid combination x seed, in file order."""
        stage = self.stage
        rows = list(stage.variants.items()) if stage.variants else [(None, {})]
        keys = list(stage.grid)
        combos = list(itertools.product(*(stage.grid[k] for k in keys))) if keys else [()]
        for variant, values in rows:
            row = Row(self.doc, self.name, stage, variant)
            for combo in combos:
                grid = dict(zip(keys, combo, strict=True))
                config = deep_merge(deep_merge(stage.config, values), grid)
                for seed in self.study.seeds_of(stage):
                    tid = trial_id(stage.trainable, config, seed)
                    yield TrialSpec(self.name, stage.trainable, variant, seed, config, grid, tid), row

    def _check_refs(self, config: dict, row: Row, probe: dict) -> list[Problem]:
        """Check the references in a trial's config; put placeholder values into `probe`."""
        problems = []
        for path, text in refs.walk(config):
            where = row.origin(str(path[0])) + tuple(path[1:])
            try:
                ref = refs.parse(text)
            except refs.RefError as exc:
                problems.append(row.problem(str(exc), where))
                continue
            message = self._ref_problem(ref)
            if message:
                problems.append(row.problem(f"{text}: {message}", where))
                continue
            upstream = self.built.get(ref.stage)
            if upstream is None:  # the upstream stage itself had problems, reported there
                continue
            refs.set_path(probe, path, _placeholder(ref, upstream, self.built))
            if ref.fan_out:
                self.fan_out[ref.group] = ref.k if ref.selector == "top" else upstream.num_trials
        return problems

    def _ref_problem(self, ref: refs.Ref) -> str | None:
        """What is wrong with a reference of this stage, or None."""
        if ref.stage not in self.study.stages:
            return f"unknown stage {ref.stage!r}; stages are: {', '.join(self.study.stages)}"
        if ref.stage not in self.stage.needs:
            return f"stage {self.name!r} must list {ref.stage!r} in `needs` to use its results"
        upstream = self.built.get(ref.stage)
        if upstream is None:
            return None
        per_variant = len(upstream.trials) // max(1, len({t.variant for t in upstream.trials}))
        needs_select = ref.selector in ("best", "top") or (
            ref.selector == "trials" and (per_variant > 1 or upstream.stage.search is not None)
        )
        if needs_select and upstream.stage.select is None:
            return f"stage {ref.stage!r} has no `select` (metric and mode), so its best trial is undefined"
        if ref.selector == "trials" and ref.variant not in upstream.stage.variants:
            return (
                f"stage {ref.stage!r} has no variant {ref.variant!r}; "
                f"variants: {', '.join(upstream.stage.variants) or '(none)'}"
            )
        if ref.field.startswith("config."):
            key = ref.field.split(".")[1]
            model = upstream.trainable.config_model
            if model is not None and key not in model.model_fields:
                return f"trainable {upstream.stage.trainable} has no config key {key!r}"
            if model is None and not any(key in t.config for t in upstream.trials):
                return f"no trial of stage {ref.stage!r} sets config key {key!r} (its trainable has no Config)"
        return None


def _placeholder(ref: refs.Ref, upstream: StagePlan, built: dict[str, StagePlan]):
    """The value a (valid) reference stands for until its stage has run: a config value of the
    upstream stage's first trial, followed through that stage's own reference if it has one
    (`${b.best.config.hidden}` where stage b took `hidden` from stage a)."""
    if not ref.field.startswith("config."):
        return PLACEHOLDERS[ref.field]
    key = ref.field.split(".")[1]
    first = upstream.trials[0].run_config if upstream.trials else {}
    model = upstream.trainable.config_model
    value = first.get(key, model.model_fields[key].default if model is not None else None)
    if refs.looks_like_ref(value):
        inner = refs.parse(value)
        if inner.stage in built:
            return _placeholder(inner, built[inner.stage], built)
    return value


def user_code_problem(exc: trainables.TrainableError, row: Row, where: tuple) -> Problem:
    """A mistake in a user's trainable: at the user's file and line when known (where the fix
    is), naming the stage's `trainable` key and its line in the study file."""
    if exc.file is None:
        return row.problem(exc.message, where)
    at = f"{row.doc.file}:{row.doc.line_of(where)}" if row.doc.line_of(where) else row.doc.file
    return Problem(exc.file, f"{exc.message} (the trainable of {at})", join_path(*where), exc.line)


def _differing(trials: list[TrialSpec]) -> list[str]:
    """Config keys whose value differs between trials, then keys set by references."""
    keys = {k for t in trials for k in t.config}
    differing = sorted(k for k in keys if len({value_key(t.config.get(k)) for t in trials}) > 1)
    return differing + sorted(
        {k for t in trials for k, v in t.config.items() if refs.looks_like_ref(v)} - set(differing)
    )
