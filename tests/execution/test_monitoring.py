"""Monitoring of a running study: custom metrics read back from Ray's metrics endpoint, and
`status --watch` following the study to its end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO


def _metric(text: str, name: str, **tags) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"ray_{name}{{") and all(f'{k}="{v}"' in line for k, v in tags.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.e2e
def test_custom_metrics_and_status_watch_during_a_study(tmp_path, write_study):
    study = write_study("""\
        # monitoring
        name: mon
        storage: ./runs
        defaults: {resources: {cpu: 1}, seeds: [1, 2, 3]}
        stages:
          pre:
            trainable: lstm_mae_pretrain
            config: {data: "synthetic:ohlc?n=600&length=40&seed=0", window_length: 40, epochs: 30, hidden_size: 32,
                     batch_size: 32, aug_multiplier: 1, patch_len: 8, early_stopping_patience: null}
            select: {metric: val/loss, mode: min}
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_metrics_report_interval_ms="1000")
    run = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", study],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watch = None
    try:
        port = None
        for line in run.stdout:
            m = re.search(r"study metrics \(Prometheus format\): http://127\.0\.0\.1:(\d+)/metrics", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "the run prints its metrics endpoint"
        seen: dict[str, float] = {}  # the largest value each metric showed while the study ran
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            if watch is None and (tmp_path / "runs" / "mon" / "_orchestrator" / "status.json").exists():
                watch = subprocess.Popen(
                    [sys.executable, "-m", "orchestrator", "status", "runs/mon", "--watch", "--interval", "0.5"],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                time.sleep(0.5)
                continue
            now = {
                "running": _metric(text, "orchestrator_trials", study="mon", stage="pre", state="running"),
                "epochs": _metric(text, "orchestrator_epochs_done", study="mon", stage="pre"),
                "samples": _metric(text, "orchestrator_samples_per_second", study="mon", stage="pre"),
                "best": _metric(text, "orchestrator_best_metric", study="mon", stage="pre", metric="val/loss"),
            }
            seen.update({k: max(v, seen.get(k, v)) for k, v in now.items() if v is not None})
            if len(seen) == 4 and seen["running"] >= 1 and seen["epochs"] >= 1 and seen["samples"] > 0:
                break
            time.sleep(0.5)
        assert len(seen) == 4, f"custom metrics on the metrics endpoint while the study runs: {seen}"
        assert 1 <= seen["running"] <= 2 and seen["epochs"] >= 1 and seen["samples"] > 0 and seen["best"] > 0
        rest, _ = run.communicate(timeout=300)
        assert run.returncode == 0, rest[-2000:]
        assert watch is not None, "status.json appeared while the study ran"
        out, _ = watch.communicate(timeout=60)
        assert watch.returncode == 0, out[-2000:]
        assert "every stage has ended" in out and "complete" in out
    finally:
        for proc in (run, watch):
            if proc is not None and proc.poll() is None:
                proc.kill()
