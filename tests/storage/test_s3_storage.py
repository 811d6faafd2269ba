"""S3 storage through a real S3 API (moto's server on 127.0.0.1): tables, checkpoints and
artifacts land in the bucket, read back from anywhere, no secret leaks, and an outage is survived."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, TINY_STAGE, run_cli, run_here

pytestmark = pytest.mark.e2e

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-TEST-SECRET-4f2a"


@pytest.fixture(scope="module")
def s3():
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "AKIATESTKEY",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3")
    client.create_bucket(Bucket="studies")
    state = {"server": server, "port": port, "env": env, "client": client}
    yield state
    state["server"].stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _objects(client, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="studies", Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket="studies", Key=obj["Key"])["Body"].read()
    return out


def _study(name: str, epochs: int = 2, seeds: str = "[1, 2]") -> str:
    return f"name: {name}\ndefaults: {{seeds: {seeds}, max_failures: 2}}\nstages:\n  pretrain:\n" + TINY_STAGE.replace(
        "epochs: 2", f"epochs: {epochs}"
    ).replace("patch_len: 8}", "patch_len: 8, early_stopping_patience: null}")


def test_study_on_s3_survives_an_outage_lands_in_the_bucket_and_reads_back_without_secrets(s3, tmp_path):
    from moto.server import ThreadedMotoServer

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    (work / "study.yaml").write_text(_study("outage", epochs=30, seeds="[1, 2, 3]"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "study.yaml", "--storage", "s3://studies/team"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("started"):
            break
    time.sleep(2)
    s3["server"].stop()  # S3 unreachable for ~10 s
    time.sleep(10)
    s3["server"] = ThreadedMotoServer(ip_address="127.0.0.1", port=s3["port"], verbose=False)
    s3["server"].start()
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=300) == 0, out
    objects = _objects(s3["client"], "team/outage/")
    assert "team/outage/results.parquet" in objects and "team/outage/study.yaml" in objects
    df = pd.read_parquet(io.BytesIO(objects["team/outage/results.parquet"]))
    assert len(df) == 3 and set(df["status"]) == {"done"} and (df["final.epoch"] == 30).all(), df
    for tid in df["trial_id"]:
        assert f"team/outage/pretrain/{tid}/metadata.json" in objects
        assert f"team/outage/pretrain/{tid}/metrics.csv" in objects
        assert any(k.startswith(f"team/outage/pretrain/{tid}/checkpoint_") for k in objects)
    assert sum(k.endswith("/state.pt") for k in objects) >= 3 and sum(k.endswith("/encoder.pt") for k in objects) >= 3
    assert not (work / "runs").exists()  # nothing written locally

    # read back from a clean working directory: results, status, and a local copy by sync
    res = run_here("results", "s3://studies/team/outage", "--format", "csv", cwd=elsewhere)
    assert res.returncode == 0 and res.stdout.count("\n") == 4, res.stderr
    assert "s3://studies/team/outage/pretrain/" in res.stdout  # checkpoints are S3 URIs
    assert run_here("status", "s3://studies/team/outage", cwd=elsewhere).returncode == 0
    resumed = run_cli("resume", "s3://studies/team/outage", cwd=elsewhere)
    assert resumed.returncode == 0 and "complete in storage, skipped" in resumed.stdout, resumed.stderr
    sync = run_here("sync", "s3://studies/team/outage", elsewhere / "copy", cwd=elsewhere)
    assert sync.returncode == 0 and "verified by SHA-256" in sync.stdout
    assert len(pd.read_parquet(elsewhere / "copy" / "results.parquet")) == 3

    # the secret key is in no object and no local file of the run
    assert not [k for k, body in objects.items() if SECRET.encode() in body]
    leaked = []
    session = Path("/tmp/ray/session_latest")
    for root in (work, elsewhere, session.resolve() if session.exists() else None):
        if root is None:
            continue
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000 and SECRET.encode() in path.read_bytes():
                leaked.append(str(path))
    assert not leaked


def test_a_missing_bucket_or_denied_access_is_not_retried_for_minutes(s3):
    from orchestrator.storage.store import Store
    from trainables.runtime.retries import permanent

    started = time.perf_counter()
    with pytest.raises(OSError, match="not found|NoSuchBucket|NO_SUCH_BUCKET"):
        Store("s3://no-such-bucket/study").write_text("x", "a.txt")
    assert time.perf_counter() - started < 5  # was ~2 minutes of backoff
    for message in (
        "When reading information for key 'a' in bucket 'b': AWS Error ACCESS_DENIED during HeadObject",
        "AWS Error [code 15]: No response body.",
        "AWS Error INVALID_ACCESS_KEY_ID during PutObject",
    ):
        assert permanent(OSError(message)), message
    for message in (
        "AWS Error NETWORK_CONNECTION during PutObject: curlCode: 7, Couldn't connect to server",
        "AWS Error SLOW_DOWN during PutObject",
        "AWS Error [code 99]: curlCode: 28, Timeout was reached",
    ):
        assert not permanent(OSError(message)), message
