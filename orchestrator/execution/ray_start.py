"""Ray for a run: connect to a cluster (`--address`, RAY_ADDRESS) or start one in-process, with
what an in-process Ray needs to start trials fast (warm workers) and to keep credentials out of
Ray's logs."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass

from rich.console import Console

from orchestrator.execution import cluster_auth
from orchestrator.planning.expand import StagePlan
from orchestrator.planning.resources import ClusterShape


@dataclass
class RunOptions:
    """How to run a study (the `run` / `resume` options)."""

    storage: str | None = None
    address: str | None = None
    max_concurrent: int | None = None
    retry_errored: bool = False
    dashboard: bool = False
    num_cpus: int | None = None
    num_gpus: int | None = None
    # the spend cap: `--budget`, `--budget-gpu-hours` and `--gpu-price` over the study's
    # `budget:` (or, for `resume`, the cap stored by the last run), `--over-budget`
    budget_usd: float | None = None
    budget_gpu_hours: float | None = None
    gpu_price: str | None = None
    over_budget: bool = False
    stored_cap: object | None = None  # orchestrator.planning.budget.Cap
    allow_code_change: bool = False  # run trials with a trainable whose code changed since the study ran

    @property
    def cluster(self) -> str | None:
        """The cluster to join: `--address`, else `RAY_ADDRESS`; None: an in-process Ray."""
        return self.address or os.environ.get("RAY_ADDRESS") or None


def _keep_credentials_out_of_ray() -> None:
    """Stop Ray Tune from copying AWS credentials into every trial's runtime_env.

    Tune propagates AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the driver's environment
    as runtime_env variables, and Ray's runtime-env agent writes runtime_envs to its log in
    plain text. Trials do not need it: on a local Ray they inherit the driver's environment
    through the raylet, and cluster nodes should use their instance role or their own
    environment. (Checked by tests/storage/test_s3_storage.py, which greps Ray's logs for the secret.)
    """
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = {
        name for name in class_cache.ENV_VARS_TO_PROPAGATE if not name.startswith("AWS_")
    }


def preload_pays(sp: StagePlan, options: RunOptions) -> bool:
    """Whether the first stage keeps every worker Ray prestarts busy (Ray starts one per CPU
    core, up to its CPU count), so that preloading torch into them wastes no memory on idle
    ones (~0.4 GB each: a 32-core pod running 4 GPU trials would hold 28 idle)."""
    cores = os.cpu_count() or 1
    prestarted = min(options.num_cpus or cores, cores)
    limit = options.max_concurrent or sp.stage.max_concurrent or sp.num_trials
    busy = min(limit, sp.num_trials) * sp.resources.workers
    per_cpu = int((options.num_cpus or cores) // max(sp.resources.cpu, 0.01))
    return min(busy, per_cpu) >= prestarted


@contextlib.contextmanager
def _warm_local_workers(preload: list[str]):
    """Let the first trials of an in-process Ray start on warm worker processes.

    Ray starts worker processes when the driver connects, but gives an actor such a worker
    only if the actor has no runtime_env of its own; Tune gives every trial actor one, made of
    environment variables it copies from the driver (PL_DISABLE_FORK and the variables in
    `ENV_VARS_TO_PROPAGATE`). In an in-process Ray the workers are children of this process
    and inherit its environment anyway, so the copy is dropped (the variables are set here
    instead). With `preload`, Ray's `preload_python_modules` setting makes every worker import
    those modules (the trial code, torch included) before it accepts work, so the prestarted
    ones do that while Ray finishes starting and Tune sets up. Measured in bench/README.md
    (issue 9).
    """
    from ray.tune.execution import class_cache

    for name, value in class_cache.DEFAULT_ENV_VARS.items():
        os.environ.setdefault(name, value)
    class_cache.DEFAULT_ENV_VARS = {}
    class_cache.ENV_VARS_TO_PROPAGATE = set()
    # read by the raylet when ray.init starts it; not left behind for other Rays of this process
    before = os.environ.get("RAY_preload_python_modules")
    if preload and before is None:  # a user's own setting wins
        os.environ["RAY_preload_python_modules"] = ",".join(preload)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_preload_python_modules", None)


# What Tune imports on the driver when an experiment starts, before its first trial: its
# TensorBoard logger (`tensorboardX`, a default callback when installed) and the tracker
# integrations its usage tags check callbacks against (ray/air/_internal/usage.py,
# `_count_callbacks`). Measured 2.6 s of the Tuner's first seconds on this 2-core machine
# (cProfile of a run); imported here while `ray.init` waits for Ray's processes instead.
TUNE_DRIVER_MODULES = (
    "tensorboardX",
    "ray.tune.logger.tensorboardx",
    "ray.air.integrations.mlflow",
    "ray.air.integrations.wandb",
    "ray.air.integrations.comet",
    "ray.tune.logger.aim",
)


def _import_tune_driver_modules() -> None:
    for name in TUNE_DRIVER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue  # not installed: Tune does without it too (tensorboardX is optional)


def init_ray(
    options: RunOptions, console: Console, preload: list[str] = (), runtime_env: dict | None = None
) -> ClusterShape:
    """Connect to the given Ray cluster or start one in-process; `preload`: modules the
    workers of an in-process Ray import before they accept work; `runtime_env`: the job's (a
    user's trainable shipped to every worker: `orchestrator/execution/shipping.py`)."""
    import ray

    _keep_credentials_out_of_ray()
    started = time.perf_counter()
    imports = threading.Thread(target=_import_tune_driver_modules, name="tune-driver-imports", daemon=True)
    imports.start()

    # Tune logs every failed trial's traceback at ERROR; the terminal gets our one line per
    # trial instead, and the traceback stays in the trial's folder (error.txt) and the table.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    address = options.cluster
    if ray.is_initialized():
        pass_through = "connected to the running Ray"
        if runtime_env:
            console.print(
                "[yellow]warning[/]: Ray was started before this run: the trainable's code is not shipped to its "
                "workers (they must be able to import it)"
            )
    elif address:
        sent = cluster_auth.prepare(address, "--address" if options.address else "RAY_ADDRESS")
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        pass_through = f"connected to Ray at {address} ({sent})"
    else:
        # address="local": always a new in-process Ray. Without it ray.init() attaches to any
        # cluster `ray start` left on this machine (/tmp/ray/ray_current_cluster), even a dead one.
        with _warm_local_workers(preload):
            ray.init(
                address="local",
                num_cpus=options.num_cpus,
                num_gpus=options.num_gpus,
                include_dashboard=options.dashboard,
                dashboard_host="127.0.0.1",
                log_to_driver=False,
                configure_logging=True,
                logging_level="ERROR",
                runtime_env=runtime_env,
            )
        pass_through = "started a local Ray" + (" (dashboard http://127.0.0.1:8265)" if options.dashboard else "")
    imports.join()
    res = ray.cluster_resources()
    nodes = tuple(
        (float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
        for n in ray.nodes()
        if n.get("Alive")
    )
    shape = ClusterShape(cpus=float(res.get("CPU", 0)), gpus=float(res.get("GPU", 0)), nodes=nodes)
    console.print(
        f"[dim]{pass_through}: {shape.cpus:g} CPUs, {shape.gpus:g} GPUs ({time.perf_counter() - started:.1f} s)[/]"
    )
    node = getattr(ray._private.worker, "_global_node", None)
    if not address and node is not None and getattr(node, "metrics_export_port", None):
        console.print(f"[dim]study metrics (Prometheus format): http://127.0.0.1:{node.metrics_export_port}/metrics[/]")
    return shape
