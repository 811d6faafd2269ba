"""Shared fixtures: a module-scoped local Ray, study files in tmp folders, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray with 2 CPUs for the tests of one module, shut down after them."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture
def write_study(tmp_path):
    def write(text: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def cli():
    """Invoke the CLI in-process (fast); returns (exit code, stdout, stderr)."""
    from orchestrator.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, [str(a) for a in args])
        err = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            # an exception the CLI did not turn into a message: its traceback, for the assertion
            import traceback

            err += "".join(traceback.format_exception(result.exception))
        return result.exit_code, result.stdout, err

    return invoke


def run_study_in_process(path: Path, storage: Path, console) -> int:
    """What `run PATH --storage STORAGE` does, in this process (a Ray already initialised is
    used): run the study, write and print its tables; the exit code."""
    from orchestrator.analysis.run_summary import write_and_show
    from orchestrator.execution.ray_start import RunOptions
    from orchestrator.execution.study_runner import run_study
    from orchestrator.planning.expand import load_plan

    outcome = run_study(load_plan(path), path.read_text(), RunOptions(storage=str(storage)), console)
    write_and_show(outcome.store, outcome.ended, console)
    return outcome.conclude(console)


def run_cli(
    *args, cwd: Path, timeout: float = 300, env: dict | None = None, inherit: bool = True, **kwargs
) -> subprocess.CompletedProcess:
    """Run `python -m orchestrator ...` as a real process (what a user does); `env`: variables
    set on top of this process's environment, or (`inherit=False`) the whole environment."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})} if inherit else dict(env or {})
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


TINY_STAGE = """\
    trainable: lstm_mae_pretrain
    config: {data: "synthetic:ohlc?n=120&length=40&seed=0", window_length: 40, epochs: 2, hidden_size: 8,
             batch_size: 32, aug_multiplier: 1, patch_len: 8}
"""
