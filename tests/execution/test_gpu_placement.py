"""GPU fan-out on a two-node cluster with 2 logical GPUs each (ray.cluster_utils on this CPU
machine): fractional GPUs pack two trials per GPU without over-subscribing any, and a
`workers: 2` trial gets two GPUs. Placements come from each trial's metadata.json (Ray's
`get_gpu_ids()` and node id, recorded by the trial itself)."""

from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def two_gpu_nodes():
    from ray.cluster_utils import Cluster

    os.environ["ORCHESTRATOR_DIST_BACKEND"] = "gloo"  # logical GPUs only: no NCCL here
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 2})
    cluster.add_node(num_cpus=4, num_gpus=2)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()
    os.environ.pop("ORCHESTRATOR_DIST_BACKEND", None)


@pytest.mark.e2e
def test_eight_half_gpu_trials_on_four_gpus_and_a_two_gpu_trial(two_gpu_nodes, tmp_path, write_study):
    tiny = (
        '{data: "synthetic:ohlc?n=60&length=40&seed=0", window_length: 40, epochs: 1, hidden_size: 8, '
        "patch_len: 8, aug_multiplier: 0, batch_size: 32}"
    )
    study = write_study(f"""\
        # gpu packing
        name: gpus
        storage: ./runs
        defaults: {{seeds: [1, 2, 3, 4, 5, 6, 7, 8]}}
        stages:
          packed:
            trainable: lstm_mae_pretrain
            resources: {{cpu: 0.25, gpu: 0.5}}
            config: {tiny}
          wide:
            trainable: lstm_mae_pretrain
            seeds: [1]
            resources: {{cpu: 1, gpu: 1, workers: 2}}
            config: {tiny}
    """)
    proc = run_cli("run", study, "--address", two_gpu_nodes.address, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "8 trials, 8 at a time" in proc.stdout

    nodes = {n.node_id for n in two_gpu_nodes.list_all_nodes()}
    intervals = []
    for folder in (tmp_path / "runs" / "gpus" / "packed").iterdir():
        if not (folder / "metadata.json").exists():
            continue
        meta = json.loads((folder / "metadata.json").read_text())
        place = meta["placement"]
        assert place["node_id"] in nodes
        assert len(place["gpu_ids"]) == 1 and place["gpu_ids"][0] in {"0", "1"}
        assert place["cuda_visible_devices"] == place["gpu_ids"][0]  # the trial sees only its GPU
        assert meta["device"] == "cpu"  # no real CUDA: CPU fallback
        result = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()][-1]
        start = meta["timing"]["function_started_at"]
        intervals.append((start, start + result["time_total_s"], (place["node_id"], place["gpu_ids"][0])))
    assert len(intervals) == 8
    events = sorted([(s, 1, g) for s, _, g in intervals] + [(e, -1, g) for _, e, g in intervals])
    running, per_gpu, peak = 0, defaultdict(int), 0
    for _, delta, gpu in events:
        running += delta
        per_gpu[gpu] += delta
        peak = max(peak, running)
        assert per_gpu[gpu] <= 2, f"GPU {gpu} over-subscribed"
    assert peak <= 8

    wide = [f for f in (tmp_path / "runs" / "gpus" / "wide").iterdir() if (f / "metadata.json").exists()]
    assert len(wide) == 1
    workers = json.loads((wide[0] / "metadata.json").read_text())["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    gpus = {(w["node_id"], g) for w in workers for g in w["gpu_ids"]}
    assert len(gpus) == 2 and all(len(w["gpu_ids"]) == 1 for w in workers)  # two GPUs, one per worker
