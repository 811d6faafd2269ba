"""A stage's search on Ray Tune: its space as Tune samplers (`orchestrator.study.search_space`
reads and checks it) and its trial scheduler (ASHA, PBT) on the stage's select metric."""

from __future__ import annotations

from ray import tune
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

from orchestrator.planning.expand import StagePlan


def to_tune(space: dict) -> dict:
    """Build the Ray Tune `param_space` fragment for a checked space."""
    out = {}
    for key, spec in space.items():
        ((name, args),) = spec.items()
        if name == "grid":
            out[key] = tune.grid_search(list(args))
        elif name == "choice":
            out[key] = tune.choice(list(args))
        else:
            out[key] = getattr(tune, name)(*args)
    return out


def scheduler(sp: StagePlan):
    """The stage's trial scheduler on its select metric, or None (first in, first out)."""
    search = sp.stage.search
    if search is None or search.scheduler == "fifo":
        return None
    select = sp.stage.select
    kwargs = dict(search.scheduler_config)
    if search.scheduler == "asha":
        return ASHAScheduler(metric=select.metric, mode=select.mode, time_attr="training_iteration", **kwargs)
    # PBT perturbs a Domain by multiplying it: categorical keys must be given as plain lists
    # (which it resamples or shifts instead).
    domains = to_tune(sp.search_space)
    mutations = {
        k: (list(spec["choice"]) if "choice" in spec else domains[k])
        for k, spec in sp.search_space.items()
        if "grid" not in spec
    }
    return PopulationBasedTraining(
        metric=select.metric,
        mode=select.mode,
        time_attr="training_iteration",
        hyperparam_mutations={"search": mutations},
        **kwargs,
    )
