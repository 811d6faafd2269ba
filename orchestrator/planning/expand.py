"""Expand a study into trials: variants x grid x seeds (x search samples), in stage DAG order.

Trial identity is a content hash of (trainable, config as written, seed): re-running the same
study finds the same trials, and two rows that resolve to the same trial are an error.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import trainables
from orchestrator.study import references as refs
from orchestrator.errors import Problem, UserError, join_path
from orchestrator.study.search_space import describe, load_space
from orchestrator.study.schema import Resources, Stage, Study, load_study, topological_order
from orchestrator.study.yaml_doc import YamlDoc

SYNTHETIC_PREFIX = "synthetic:"


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of `base` with `override` merged in (nested dicts merged, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def trial_id(trainable: str, config: dict, seed: int) -> str:
    payload = json.dumps({"trainable": trainable, "config": config, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def grid_label(value: Any) -> str:
    """A grid value as it appears in trial names: itself if short, else a 6-character digest
    (the full value is in the trial's config and in `plan`)."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    if len(text) <= 20 and "/" not in text:
        return text
    return "~" + hashlib.sha256(text.encode()).hexdigest()[:6]


@dataclass
class TrialSpec:
    stage: str
    trainable: str
    variant: str | None
    seed: int
    config: dict            # as written (merged), hashed into the id
    grid: dict              # the grid values of this trial
    id: str
    run_config: dict = field(default_factory=dict)  # config with input paths resolved: what the trial gets
    upstream: dict = field(default_factory=dict)    # lineage: which upstream trials its references used

    @property
    def name(self) -> str:
        parts = [self.stage, self.variant or "base"]
        parts += [f"{k}={grid_label(v)}" for k, v in self.grid.items()]
        name = "/".join(parts + [f"s{self.seed}"])
        fan = [v["trial"].split("/", 1)[-1] for k, v in sorted(self.upstream.items()) if "." in k]
        return name + "".join(f"@{f}" for f in fan)

    @property
    def has_refs(self) -> bool:
        return any(True for _ in refs.walk(self.config))

    def to_dict(self) -> dict:
        return {"stage": self.stage, "trainable": self.trainable, "variant": self.variant, "seed": self.seed,
                "config": self.run_config, "grid": self.grid, "id": self.id, "name": self.name,
                "upstream": self.upstream}


@dataclass
class StagePlan:
    name: str
    stage: Stage
    trials: list[TrialSpec]
    resources: Resources
    search_space: dict | None = None
    differing: list[str] = field(default_factory=list)   # config keys that differ between trials
    notes: list[str] = field(default_factory=list)       # what checking the inputs found (overlapping windows, ...)
    fan_out: int = 1        # downstream trials per planned row, from `top[K]` / `all` references
    resolved: bool = False  # references replaced by upstream results (at run time)

    @property
    def num_trials(self) -> int:
        per_row = 1 if self.resolved else self.fan_out
        return len(self.trials) * per_row * (self.stage.search.num_samples if self.stage.search else 1)

    @property
    def has_refs(self) -> bool:
        return not self.resolved and any(t.has_refs for t in self.trials)


@dataclass
class ClusterShape:
    """What the cluster offers: totals, and per node when known (`plan --cluster`)."""
    cpus: float
    gpus: float
    nodes: tuple = ()          # ((cpus, gpus), ...) per node; empty = one node with the totals
    name: str | None = None

    @property
    def node_list(self) -> tuple:
        return self.nodes or ((self.cpus, self.gpus),)

    @classmethod
    def local(cls) -> "ClusterShape":
        return cls(cpus=float(os.cpu_count() or 1), gpus=float(_local_gpu_count()))


def _local_gpu_count() -> int:
    # Without importing torch (slow): CUDA_VISIBLE_DEVICES if set, else nvidia-smi -L.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def effective_resources(res: Resources, shape: ClusterShape) -> tuple[dict, str | None]:
    """Per-trial Ray resources on this cluster; GPU requests are dropped (with a note) without GPUs."""
    gpu = res.gpu
    note = None
    if gpu > 0 and shape.gpus <= 0:
        note = f"cluster has no GPUs: dropping gpu={gpu} per trial, trials run on CPU"
        gpu = 0.0
    return {"cpu": res.cpu * res.workers, "gpu": gpu * res.workers, "workers": res.workers}, note


def concurrency(res: dict, shape: ClusterShape, limit: int | None) -> int:
    """How many trials of a stage fit on the cluster at once, node by node: a trial's resources
    (one bundle per data-parallel worker) cannot be split across nodes below one worker, so
    4 x 0.3 GPU fit 3 per GPU, not 3.33, and 8-GPU nodes hold 2 trials of gpu: 4 each."""
    workers = res.get("workers", 1)
    cpu, gpu = res["cpu"] / workers, res["gpu"] / workers
    bundles = 0
    for node_cpus, node_gpus in shape.node_list:
        fits = [math.floor(node_cpus / cpu + 1e-9)] if cpu > 0 else []
        if gpu > 0:
            # fractional GPUs pack within one GPU: floor(1 / gpu) trials per GPU
            per_gpu = math.floor(1 / gpu + 1e-9) if gpu < 1 else 1 / gpu
            fits.append(math.floor(math.floor(node_gpus + 1e-9) * per_gpu + 1e-9))
        bundles += min(fits) if fits else 1
    n = bundles // workers if workers > 1 else bundles
    if limit:
        n = min(n, limit)
    return max(n, 0)


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
    problems: list[Problem] = []
    stages: dict[str, StagePlan] = {}
    for name in topological_order(study):
        try:
            stages[name] = _expand_stage(study, name, doc, study_dir, check_inputs, stages)
        except UserError as exc:
            problems.extend(exc.problems)
    if problems:
        raise UserError(_dedupe(problems))
    return Plan(study, doc, study_dir, stages, list(stages))


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def _origin(stage_name: str, stage: Stage, variant: str | None, key: str) -> tuple:
    """Where in the study file a top-level config key of a trial was set."""
    if key in stage.grid:
        return ("stages", stage_name, "grid", key)
    if variant is not None and key in stage.variants[variant]:
        return ("stages", stage_name, "variants", variant, key)
    if key in stage.config:
        return ("stages", stage_name, "config", key)
    return ("stages", stage_name, "config")


def _expand_stage(study: Study, name: str, doc: YamlDoc, study_dir: Path, check_inputs: bool,
                  built: dict[str, StagePlan]) -> StagePlan:
    stage = study.stages[name]
    where = ("stages", name, "trainable")
    try:
        module = trainables.settings(stage.trainable)
    except trainables.UnknownTrainable as exc:
        raise UserError(Problem(doc.file, str(exc), join_path(*where), doc.line_of(where))) from None

    if study.resources_of(stage).workers > 1 and not getattr(module, "DATA_PARALLEL", False):
        where = ("stages", name, "resources", "workers") if stage.resources else ("defaults", "resources", "workers")
        parallel = sorted(n for n in trainables.TRAINABLES if getattr(trainables.settings(n), "DATA_PARALLEL", False))
        raise UserError(Problem(doc.file, f"trainable {stage.trainable!r} does not run data-parallel; workers > 1 "
                                f"needs one that does ({', '.join(parallel)}); use gpu: N for one process with "
                                "N GPUs", join_path(*where), doc.line_of(where)))
    space = None
    if stage.search is not None:
        space, _ = load_space(stage.search.space, study_dir, doc, ("stages", name, "search", "space"))

    rows: list[tuple[str | None, dict]] = (
        [(v, row) for v, row in stage.variants.items()] if stage.variants else [(None, {})]
    )
    grid_keys = list(stage.grid)
    combos = list(itertools.product(*(stage.grid[k] for k in grid_keys))) if grid_keys else [()]
    problems: list[Problem] = []
    trials: list[TrialSpec] = []
    seen: dict[str, str] = {}
    fan_out: dict[tuple, int] = {}
    input_fields = _input_fields(module)
    # inputs already checked (or not to be checked): each distinct data file is read once
    checked_inputs: set[tuple] | None = set() if check_inputs else None
    notes: list[str] = []
    for variant, row in rows:
        for combo in combos:
            grid = dict(zip(grid_keys, combo))
            config = deep_merge(deep_merge(stage.config, row), grid)
            for seed in study.seeds_of(stage):
                tid = trial_id(stage.trainable, config, seed)
                spec = TrialSpec(name, stage.trainable, variant, seed, config, grid, tid)
                if tid in seen:
                    problems.append(Problem(doc.file, f"trials {seen[tid]} and {spec.name} resolve to the same "
                                            "config and seed; make the variants differ",
                                            join_path("stages", name), doc.line_of(("stages", name))))
                    continue
                seen[tid] = spec.name
                spec.run_config = _resolve_inputs(config, module, study_dir)
                probe = copy.deepcopy(dict(spec.run_config, seed=seed))
                ref_problems = _check_refs(study, name, stage, variant, config, doc, built, probe, fan_out)
                if ref_problems:
                    problems.extend(ref_problems)
                    continue
                if space:  # sampled keys are checked with a representative value
                    for key, sampler in space.items():
                        probe[key] = _representative(sampler)
                problems.extend(_check_config(module, probe, name, stage, variant, doc, checked_inputs,
                                              input_fields, config, notes))
                trials.append(spec)
    if problems:
        raise UserError(problems)
    keys = {k for t in trials for k in t.config}
    differing = sorted(k for k in keys if len({_key(t.config.get(k)) for t in trials}) > 1)
    differing += sorted({k for t in trials for k, v in t.config.items() if refs.looks_like_ref(v)} - set(differing))
    return StagePlan(name, stage, trials, study.resources_of(stage), space, differing, list(dict.fromkeys(notes)),
                     fan_out=math.prod(fan_out.values()) if fan_out else 1)


def _check_refs(study: Study, name: str, stage: Stage, variant: str | None, config: dict, doc: YamlDoc,
                built: dict[str, StagePlan], probe: dict, fan_out: dict[tuple, int]) -> list[Problem]:
    """Check the references in a trial's config; put representative values into `probe`."""
    problems = []
    for path, text in refs.walk(config):
        origin = _origin(name, stage, variant, str(path[0])) + tuple(path[1:])
        where = dict(file=doc.file, path=join_path(*origin), line=doc.line_of(origin))
        try:
            ref = refs.parse(text)
        except refs.RefError as exc:
            problems.append(Problem(message=str(exc), **where))
            continue
        if ref.stage not in study.stages:
            problems.append(Problem(message=f"{text}: unknown stage {ref.stage!r}; stages are: "
                                    f"{', '.join(study.stages)}", **where))
            continue
        if ref.stage not in stage.needs:
            problems.append(Problem(message=f"{text}: stage {name!r} must list {ref.stage!r} in `needs` "
                                    "to use its results", **where))
            continue
        upstream = built.get(ref.stage)
        if upstream is None:  # the upstream stage itself had problems, reported there
            continue
        per_variant = len(upstream.trials) // max(1, len({t.variant for t in upstream.trials}))
        needs_select = ref.selector in ("best", "top") or (ref.selector == "trials" and (
            per_variant > 1 or upstream.stage.search is not None))
        if needs_select and upstream.stage.select is None:
            problems.append(Problem(message=f"{text}: stage {ref.stage!r} has no `select` (metric and mode), so "
                                    "its best trial is undefined", **where))
            continue
        if ref.selector == "trials" and ref.variant not in upstream.stage.variants:
            problems.append(Problem(message=f"{text}: stage {ref.stage!r} has no variant {ref.variant!r}; "
                                    f"variants: {', '.join(upstream.stage.variants) or '(none)'}", **where))
            continue
        up_module = trainables.settings(upstream.stage.trainable)
        if ref.field.startswith("config."):
            key = ref.field.split(".")[1]
            if key not in up_module.Config.model_fields:
                problems.append(Problem(message=f"{text}: trainable {upstream.stage.trainable} has no config key "
                                        f"{key!r}", **where))
                continue
            first = upstream.trials[0].run_config if upstream.trials else {}
            value = first.get(key, up_module.Config.model_fields[key].default)
        else:
            value = {"checkpoint": "/reference/checkpoint", "latest_checkpoint": "/reference/checkpoint",
                     "trial_id": "reference", "metric": 0.0}[ref.field]
        refs.set_path(probe, path, value)
        if ref.fan_out:
            fan_out[ref.group] = ref.k if ref.selector == "top" else upstream.num_trials
    return problems


def resolve_stage(sp: StagePlan, records: dict[str, dict], study_dir: Path) -> StagePlan:
    """The stage with its references replaced by upstream results (raises refs.RefError)."""
    module = trainables.settings(sp.stage.trainable)
    trials = []
    seen: dict[str, TrialSpec] = {}
    for spec in sp.trials:
        for resolved, lineage, id_config in refs.expand(spec.config, records):
            tid = trial_id(spec.trainable, id_config, spec.seed)
            new = TrialSpec(spec.stage, spec.trainable, spec.variant, spec.seed, resolved, spec.grid, tid,
                            _resolve_inputs(resolved, module, study_dir), lineage)
            if tid in seen:
                # e.g. ${pre.best} in one variant and ${pre.top[1]} (or trials[x], x the best) in
                # another: the same upstream trial, so the same config and seed. Two trials in one
                # folder would overwrite each other's checkpoints and records.
                used = ", ".join(sorted(f"{v['trial']}" for v in lineage.values())) or "the same inputs"
                raise refs.RefError(f"trials {seen[tid].name} and {new.name} are the same trial once references are "
                                    f"resolved (same config and seed; both use {used}); make the variants differ")
            seen[tid] = new
            trials.append(new)
    return StagePlan(sp.name, sp.stage, trials, sp.resources, sp.search_space, sp.differing, sp.notes, resolved=True)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _representative(sampler: dict) -> Any:
    (kind, args), = sampler.items()
    if kind in ("choice", "grid"):
        return args[0]
    if kind in ("randint", "lograndint"):
        return int(args[0])
    return float(args[0])


def _input_fields(module) -> tuple:
    """The trainable's file inputs, then its path-or-name fields (e.g. a local model or a hub name)."""
    return tuple(getattr(module, "INPUT_FIELDS", ())) + tuple(getattr(module, "MODEL_FIELDS", ()))


def _resolve_inputs(config: dict, module, study_dir: Path) -> dict:
    """Relative input paths are relative to the study file; MODEL_FIELDS only when they are paths."""
    out = copy.deepcopy(config)
    def resolve(value):
        if isinstance(value, str) and not _is_uri(value):
            path = Path(value).expanduser()
            return str(path if path.is_absolute() else (study_dir / path).resolve())
        return value

    for key in getattr(module, "INPUT_FIELDS", ()):
        if key in out:
            value = out[key]
            out[key] = [resolve(v) for v in value] if isinstance(value, list) else resolve(value)
    for key in getattr(module, "MODEL_FIELDS", ()):
        if isinstance(out.get(key), str) and module.is_local_path(out[key]) and not _is_uri(out[key]):
            out[key] = resolve(out[key])
    return out


def _is_uri(value: str) -> bool:
    return value.startswith(SYNTHETIC_PREFIX) or "://" in value or value.startswith("${")


def _check_config(module, config: dict, stage_name: str, stage: Stage, variant: str | None, doc: YamlDoc,
                  checked_inputs: set[tuple] | None, input_fields: tuple, raw_config: dict,
                  notes: list[str]) -> list[Problem]:
    try:
        parsed = module.Config.model_validate(config)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if not loc:  # a cross-field check of the whole config
                path = ("stages", stage_name, "config")
            else:
                origin = _origin(stage_name, stage, variant, str(loc[0]))
                path = origin + loc[1:] if origin[-1] == loc[0] else origin + loc
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc[-1]!r} for trainable {stage.trainable}; expected one of: " + \
                      ", ".join(k for k in module.Config.model_fields if k != "seed")
            elif err["type"] == "missing":
                msg = f"required key {loc[-1]!r} is missing"
            else:
                msg = err["msg"].removeprefix("Value error, ")
                if not isinstance(err.get("input"), (dict, list)):
                    msg += f" (got {err.get('input')!r})"
            problems.append(Problem(doc.file, msg, join_path(*path), doc.line_of(path)))
        return problems
    key = tuple(_key(config.get(f)) for f in input_fields + tuple(getattr(module, "CHECK_FIELDS", ())))
    if checked_inputs is None or key in checked_inputs:
        return []
    checked_inputs.add(key)
    check = getattr(module, "check_inputs", None)
    if check is None:
        return []
    # Inputs given as references exist only at run time: check the others, with those unset.
    by_ref = {f for f in input_fields if refs.looks_like_ref(raw_config.get(f))}
    if by_ref:
        if any(module.Config.model_fields[f].is_required() for f in by_ref):
            return []
        parsed = parsed.model_copy(update={f: None for f in by_ref})
    try:
        note = check(parsed)
        if isinstance(note, str) and note:
            notes.append(note)
    except ValueError as exc:
        field_name = getattr(exc, "field", input_fields[0] if input_fields else "")
        path = _origin(stage_name, stage, variant, field_name)
        return [Problem(doc.file, str(exc), join_path(*path), doc.line_of(path))]
    return []


def describe_search(stage_plan: StagePlan) -> dict[str, str]:
    return describe(stage_plan.search_space) if stage_plan.search_space else {}
