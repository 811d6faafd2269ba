"""Joining a real cluster that uses Ray's token authentication, as close to `ray up` as one
machine gets: `ray start --head` (token auth turned on by the token file in its HOME) and a second
node joined with `ray start --address` (RAY_AUTH_MODE=token, as the cluster files start it), two
raylets of one CPU each; `run --address` from a shell with the token file and no RAY_AUTH_MODE
places trials on both; a wrong or missing token is one line, exit 2; and a cluster without
authentication still works without a token. Both `ray start --block` processes are started and
stopped by the test itself, by process id."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from orchestrator.execution import cluster_auth
from tests import conftest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
STUDY = """\
name: joined
storage: ./runs
defaults: {seeds: [1, 2], max_failures: 0}
stages:
  pre:
    trainable: lstm_mae_pretrain
    config: {data: "synthetic:ohlc?n=120&length=40&seed=0", window_length: 40, epochs: 20, hidden_size: 8,
             batch_size: 32, aug_multiplier: 1, patch_len: 8, early_stopping_patience: null}
    resources: {cpu: 1}
"""


def _home(root: Path, name: str, token: str | None) -> Path:
    home = root / name
    (home / ".ray").mkdir(parents=True)
    if token is not None:
        (home / ".ray" / "auth_token").write_text(token)
    return home


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    return dict(env, HOME=str(home), PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0", **extra)


def run_cli(*args, cwd: Path, env: dict, timeout: float):
    """The CLI with exactly `env`: this process may have RAY_AUTH_MODE set by an earlier
    in-process Ray, a user's shell would not."""
    return conftest.run_cli(*args, cwd=cwd, env=env, timeout=timeout, inherit=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(address: str, token: str | None) -> int:
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            reply = stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=5)
        except grpc.RpcError:
            return 0
    return sum(n.state == 0 for n in reply.node_info_list)  # ALIVE


@contextlib.contextmanager
def _two_nodes(home: Path, token: str | None, worker_mode: str | None):
    """A head and a second node, one CPU each; yields the head's address."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay short
    port = _free_port()
    address = f"127.0.0.1:{port}"
    logs = open(Path(temp) / "start.log", "w")  # noqa: SIM115 (closed below)
    started: list[subprocess.Popen] = []
    try:
        head = [RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]
        started.append(
            subprocess.Popen(
                [*head, f"--temp-dir={temp}", "--block", "--disable-usage-stats"],
                env=_env(home),
                stdout=logs,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        deadline = time.time() + 90
        while _alive_nodes(address, token) < 1:
            assert time.time() < deadline, Path(temp, "start.log").read_text()[-3000:]
            time.sleep(0.5)
        worker_env = _env(home, **({"RAY_AUTH_MODE": worker_mode} if worker_mode else {}))
        started.append(
            subprocess.Popen(
                [RAY, "start", f"--address={address}", "--num-cpus=1", "--block"],
                env=worker_env,
                stdout=logs,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        while _alive_nodes(address, token) < 2:
            assert time.time() < deadline, Path(temp, "start.log").read_text()[-3000:]
            time.sleep(0.5)
        yield address
    finally:
        for proc in reversed(started):  # `ray start --block` stops what it started on SIGTERM
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(started):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        logs.close()
        shutil.rmtree(temp, ignore_errors=True)


def _placements(root: Path) -> set[str]:
    return {json.loads(p.read_text())["placement"]["node_id"] for p in root.glob("pre/*/metadata.json")}


def test_run_joins_a_token_cluster_of_two_nodes_and_a_wrong_token_is_one_line(tmp_path):
    token = secrets.token_hex(32)
    home = _home(tmp_path, "home", token)
    (tmp_path / "study.yaml").write_text(STUDY)
    with _two_nodes(home, token, worker_mode="token") as address:
        # the head turned authentication on by itself: no token, no answer
        assert cluster_auth.probe(address, None)[0] == "unauthenticated"
        done = run_cli("run", "study.yaml", "--address", address, cwd=tmp_path, timeout=300, env=_env(home))
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-4000:]
        assert f"connected to Ray at {address} (token from {home}/.ray/auth_token): 2 CPUs" in out
        assert "Unauthenticated" not in out and "Traceback" not in out
        assert len(_placements(tmp_path / "runs" / "joined")) == 2  # a trial on each node
        # a wrong token, a missing one: one line naming the address and how to get the token
        for name, other in (("wrong", secrets.token_hex(32)), ("none", None)):
            refused = run_cli(
                "run", "study.yaml", "--address", address, "--storage", f"./{name}",
                cwd=tmp_path, timeout=120, env=_env(_home(tmp_path, name, other)),
            )  # fmt: skip
            lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
            assert refused.returncode == 2 and len(lines) == 1, lines
            assert lines[0].startswith(f"--address: the Ray cluster at {address}") and "ray get-auth-token" in lines[0]
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and token in p.read_text(errors="ignore")]
    assert leaked == [home / ".ray" / "auth_token"], leaked  # never in output, study files or records


def test_a_cluster_without_authentication_still_works_and_gets_no_token(tmp_path):
    """Started where there is no token, the cluster has authentication off; a client that has a
    token (the quick start wrote one) must not send it: a token such a cluster does not expect
    leaves its trial actors cancelled before they start (seen with the fake-GPU cluster test)."""
    home = _home(tmp_path, "home", None)
    client = _home(tmp_path, "client", secrets.token_hex(32))
    (tmp_path / "study.yaml").write_text(STUDY)
    with _two_nodes(home, None, worker_mode=None) as address:
        assert cluster_auth.probe(address, None)[0] == "ok"
        done = run_cli("run", "study.yaml", env=_env(client, RAY_ADDRESS=address), cwd=tmp_path, timeout=300)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-4000:]
        assert f"connected to Ray at {address} (no token needed): 2 CPUs" in out
        assert len(_placements(tmp_path / "runs" / "joined")) == 2


def test_the_token_is_looked_for_in_rays_order_and_an_unreadable_token_path_is_one_line(tmp_path, monkeypatch):
    from orchestrator.errors import UserError

    home = _home(tmp_path, "home", "from-the-file\n")
    monkeypatch.setenv("HOME", str(home))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert cluster_auth.local_token() == ("from-the-file", f"{home}/.ray/auth_token")
    (tmp_path / "elsewhere").write_text("from-the-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    assert cluster_auth.local_token() == ("from-the-path", "RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-the-variable")
    assert cluster_auth.local_token() == ("from-the-variable", "RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="RAY_AUTH_TOKEN_PATH: cannot read the Ray token file it names"):
        cluster_auth.local_token()
    (home / ".ray" / "auth_token").unlink()
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    assert cluster_auth.local_token()[0] is None
