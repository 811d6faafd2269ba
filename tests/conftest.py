"""Shared fixtures: the session's local Ray, study files in tmp folders, the CLI in this process
or as a real process."""

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
# No test downloads a model: the MiniLM is the offline package's. Set before any Ray starts, so
# that trial workers of the shared Ray (`shared_ray`) inherit it too.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared_ray():
    """The test session's one local Ray (2 CPUs), started on first use in this process; studies
    run in this process (`run_here("run", ...)`, `run_study_in_process`) use it instead of
    starting their own (a CLI process pays ~8 s more per run: imports, Ray's start and
    shutdown). A test that needs a Ray of its own (a multi-node `Cluster`, a lost node) calls
    `stop_shared_ray()` first; the next user starts it again. A Ray that an in-process command
    started itself (`cli("run", ...)` with none running, as a user's run would) is used too."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    return ray


def stop_shared_ray() -> None:
    import ray

    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _shut_down_shared_ray():
    yield
    stop_shared_ray()


@pytest.fixture
def without_ray():
    """No Ray in this process (the shared one stopped): for tests that check a command refused
    its input before starting one (`ray.is_initialized()` stays False)."""
    stop_shared_ray()


@pytest.fixture
def ray_local():
    """A real local Ray with 2 CPUs (the session's shared one)."""
    return shared_ray()


@pytest.fixture
def write_study(tmp_path):
    def write(text: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def cli():
    """Invoke the CLI in this process (fast); returns (exit code, stdout, stderr). A `run` or
    `resume` uses the Ray this process has (the shared one), or starts one as a user's would."""
    return invoke_cli


def invoke_cli(*args: str):
    """`python -m orchestrator ARGS` in this process: (exit code, stdout, stderr)."""
    from orchestrator.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    err = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # an exception the CLI did not turn into a message: its traceback, for the assertion
        import traceback

        err += "".join(traceback.format_exception(result.exception))
    return result.exit_code, result.stdout, err


def run_here(*args, cwd: Path, env: dict | None = None, **_) -> subprocess.CompletedProcess:
    """`run_cli` in this process (same result object; `run_cli`'s timeout is not applied): the
    CLI invoked from `cwd`, with `env` set on top of this process's environment for the call.
    What the driver reads from the environment sees `env`; trials on the shared Ray do not (its
    workers were started before)."""
    if args and args[0] in ("run", "resume"):
        shared_ray()
    before, here = {k: os.environ.get(k) for k in env or {}}, Path.cwd()
    os.environ.update(env or {})
    os.chdir(cwd)
    try:
        code, out, err = invoke_cli(*map(str, args))
    finally:
        os.chdir(here)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["orchestrator", *map(str, args)], code, out, err)


def run_study_in_process(path: Path, storage: Path, console) -> int:
    """What `run PATH --storage STORAGE` does, in this process, on the shared Ray: run the
    study, write and print its tables; the exit code."""
    from orchestrator.analysis.run_summary import write_and_show
    from orchestrator.execution.ray_start import RunOptions
    from orchestrator.execution.study_runner import run_study
    from orchestrator.planning.expand import load_plan

    shared_ray()
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
