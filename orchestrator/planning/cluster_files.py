"""`plan --cluster NAME`: the shape of a cluster described by a Ray cluster launcher file.

NAME is a file (`cluster/p4d.yaml`) or the name of one in this repository's `cluster/`
folder (`p4d`). Each node type contributes its `resources` (CPU/GPU) when given, else the
instance type's from the table below; the head counts once and every worker type at its
`max_workers` (the cluster fully scaled up). Local-provider files count the head and each
`worker_ips` entry, with `resources` from `--gpus/--cpus` if the file does not say.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import Problem, UserError
from orchestrator.planning.resources import ClusterShape
from orchestrator.study.yaml_doc import load_yaml

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"

# vCPUs and GPUs of instance types worth planning for (AWS documentation).
INSTANCE_TYPES: dict[str, tuple[int, int]] = {
    "p4d.24xlarge": (96, 8),
    "p4de.24xlarge": (96, 8),
    "p5.48xlarge": (192, 8),
    "p5e.48xlarge": (192, 8),
    "p3.2xlarge": (8, 1),
    "p3.8xlarge": (32, 4),
    "p3.16xlarge": (64, 8),
    "g5.xlarge": (4, 1),
    "g5.2xlarge": (8, 1),
    "g5.12xlarge": (48, 4),
    "g5.48xlarge": (192, 8),
    "g6.xlarge": (4, 1),
    "g6.12xlarge": (48, 4),
    "g6.48xlarge": (192, 8),
    "m6i.large": (2, 0),
    "m6i.xlarge": (4, 0),
    "m6i.2xlarge": (8, 0),
    "m6i.4xlarge": (16, 0),
    "m5.large": (2, 0),
    "m5.xlarge": (4, 0),
    "m5.2xlarge": (8, 0),
}


def resolve(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = CLUSTER_DIR / f"{name}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in CLUSTER_DIR.glob("*.yaml") if p.name != "prices.yaml")
    raise UserError(Problem("--cluster", f"no cluster file {name!r}; known: {', '.join(known)} (or give a path)"))


def _node(node_type: dict, where: str, file: str) -> tuple[float, float]:
    res = node_type.get("resources") or {}
    instance = (node_type.get("node_config") or {}).get("InstanceType")
    cpus, gpus = INSTANCE_TYPES.get(instance, (None, None)) if instance else (None, None)
    cpus = res.get("CPU", cpus)
    gpus = res.get("GPU", gpus)
    if cpus is None or gpus is None:
        raise UserError(
            Problem(
                file,
                f"{where}: cannot tell its CPUs/GPUs (instance type {instance!r} unknown); "
                "set `resources: {CPU: n, GPU: m}` on the node type",
            )
        )
    return float(cpus), float(gpus)


def shape_of(name: str, cpus: float | None = None, gpus: float | None = None) -> ClusterShape:
    path = resolve(name)
    doc = load_yaml(path).data
    nodes: list[tuple[float, float]] = []
    provider = (doc.get("provider") or {}).get("type")
    if provider == "local":
        ips = [doc["provider"].get("head_ip")] + list(doc["provider"].get("worker_ips") or [])
        if cpus is None or gpus is None:
            raise UserError(
                Problem(
                    "--cluster",
                    f"{path}: a local-provider file does not say what its nodes have; add --cpus and --gpus (per node)",
                )
            )
        nodes = [(cpus, gpus)] * len([ip for ip in ips if ip])
    else:
        types = doc.get("available_node_types") or {}
        head = doc.get("head_node_type")
        for type_name, node_type in types.items():
            count = (1 if type_name == head else 0) + int(node_type.get("max_workers", 0) if type_name != head else 0)
            nodes += [_node(node_type, f"available_node_types.{type_name}", str(path))] * count
    if not nodes:
        raise UserError(Problem(str(path), "no nodes found (expected available_node_types or provider.worker_ips)"))
    return ClusterShape(sum(n[0] for n in nodes), sum(n[1] for n in nodes), tuple(nodes), path.stem)
