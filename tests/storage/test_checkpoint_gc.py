"""`gc RUN_DIR`: which checkpoints go and which stay, on a study folder laid out as a run leaves
it (records, trial folders with Tune checkpoints and multitask_span's checkpoint_epoch_N.pt),
then end to end on a real finished chain study, on local disk and on S3 (moto)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from orchestrator.analysis.checkpoint_gc import garbage_collect
from orchestrator.errors import UserError
from orchestrator.storage.records import load_records
from orchestrator.storage.store import Store
from tests.conftest import TINY_STAGE, run_here
from tests.storage.test_s3_storage import _objects, s3  # noqa: F401 - the moto fixture

QUIET = Console(file=None, quiet=True)


def _trial(root: Path, stage: str, tid: str, status: str, *, best: int, latest: int, epochs=(), **extra) -> dict:
    folder = root / stage / tid
    for n in range(1, latest + 1):
        (folder / f"checkpoint_{n:06d}").mkdir(parents=True)
        (folder / f"checkpoint_{n:06d}" / "state.pt").write_bytes(b"x" * 1000)
    for e in epochs:
        (folder / f"checkpoint_epoch_{e}.pt").write_bytes(b"y" * 100)
    (folder / "metrics.csv").write_text("epoch\n1\n")
    return {
        "stage": stage,
        "trial_id": tid,
        "name": f"{stage}/{tid}",
        "variant": tid,
        "seed": 1,
        "status": status,
        "best": extra.pop("value", 0.5),
        "best_epoch": best,
        "metrics": {"epoch": latest},
        "checkpoint": str(folder / f"checkpoint_{best:06d}"),
        "latest_checkpoint": str(folder / f"checkpoint_{latest:06d}"),
        "path": str(folder),
        **extra,
    }


def _study(root: Path, fine_state: str = "complete") -> Path:
    """pre (4 trials: a best, b, c unfinished, d), span (epoch files), fine needs pre and used b's
    best (its lineage) and b's newest (named in its config)."""
    root.mkdir(parents=True)
    (root / "study.json").write_text(json.dumps({"name": "s", "stages": {"pre": [], "span": [], "fine": []}}))
    (root / "study.yaml").write_text("name: s\nstages:\n  pre: {}\n  span: {}\n  fine: {needs: [pre]}\n")
    select = {"metric": "val/loss", "mode": "min"}
    pre = {
        "a": _trial(root, "pre", "a", "done", best=2, latest=4, value=0.1),
        "b": _trial(root, "pre", "b", "done", best=3, latest=4, value=0.2),
        "c": _trial(root, "pre", "c", "interrupted", best=1, latest=3, value=0.3),
        "d": _trial(root, "pre", "d", "done", best=1, latest=2, value=0.4),
    }
    span = {"m": _trial(root, "span", "m", "done", best=2, latest=3, epochs=(1, 2, 3))}
    used = pre["b"]["latest_checkpoint"]  # fine used b's newest checkpoint through its config
    fine = {
        "f": _trial(
            root,
            "fine",
            "f",
            "done",
            best=1,
            latest=2,
            upstream={"pre.trials[b]": {"trial_id": "b", "checkpoint": pre["b"]["checkpoint"]}},
            config={"encoder": used + "/encoder.pt"},
        )
    }
    for name, trials in (("pre", pre), ("span", span), ("fine", fine)):
        record = {"stage": name, "state": fine_state if name == "fine" else "complete", "select": select}
        record["trials"] = trials
        (root / "_orchestrator" / "stages").mkdir(parents=True, exist_ok=True)
        (root / "_orchestrator" / "stages" / f"{name}.json").write_text(json.dumps(record))
    return root


def _left(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.glob("*/*/checkpoint_*")}


ALWAYS = {
    "pre/b/checkpoint_000003",  # b's best: fine's lineage
    "pre/b/checkpoint_000004",  # named in fine's config
    "pre/c/checkpoint_000001",  # c is unfinished: all of it
    "pre/c/checkpoint_000002",
    "pre/c/checkpoint_000003",
}


def test_each_keep_choice_keeps_what_it_promises(tmp_path):
    best = _study(tmp_path / "best")
    before = _left(best)
    garbage_collect(str(best), "best", dry_run=True, console=QUIET)
    assert _left(best) == before  # a dry run deletes nothing
    found = garbage_collect(str(best), "best", dry_run=False, console=QUIET)
    assert _left(best) == ALWAYS | {
        "pre/a/checkpoint_000002",
        "pre/d/checkpoint_000001",
        "span/m/checkpoint_000002",
        "span/m/checkpoint_epoch_2.pt",  # the best epoch's periodic weights
        "fine/f/checkpoint_000001",
    }
    assert found.freed == 1000 * 6 + 1000 * 2 + 100 * 2 + 1000  # pre, span (and its epoch files), fine
    records = load_records(Store(str(best)))  # a record that named a deleted checkpoint forgets it
    assert records["pre"]["trials"]["a"]["latest_checkpoint"] is None
    assert records["pre"]["trials"]["a"]["gc"] == {"latest_checkpoint": "deleted by gc"}
    assert records["pre"]["trials"]["a"]["checkpoint"].endswith("checkpoint_000002")

    latest = _study(tmp_path / "latest")
    garbage_collect(str(latest), "latest", dry_run=False, console=QUIET)
    assert _left(latest) == ALWAYS | {
        "pre/a/checkpoint_000002",
        "pre/a/checkpoint_000004",
        "pre/d/checkpoint_000001",
        "pre/d/checkpoint_000002",
        "span/m/checkpoint_000002",
        "span/m/checkpoint_000003",
        "span/m/checkpoint_epoch_2.pt",
        "span/m/checkpoint_epoch_3.pt",
        "fine/f/checkpoint_000001",
        "fine/f/checkpoint_000002",
    }

    selected = _study(tmp_path / "selected")
    garbage_collect(str(selected), "selected", dry_run=False, console=QUIET)
    # each stage's best trial keeps its best checkpoint; b keeps what fine used; d nothing
    assert _left(selected) == ALWAYS | {
        "pre/a/checkpoint_000002",
        "span/m/checkpoint_000002",
        "span/m/checkpoint_epoch_2.pt",
        "fine/f/checkpoint_000001",
    }
    d = load_records(Store(str(selected)))["pre"]["trials"]["d"]
    assert d["checkpoint"] is None and d["latest_checkpoint"] is None
    table = pd.read_parquet(selected / "results.parquet")  # the tables were written again
    assert pd.isna(table.set_index("trial_id").loc["d", "checkpoint"])
    for path in table["checkpoint"].dropna():
        assert Path(path).exists(), path


def test_a_stage_that_a_pending_stage_needs_keeps_its_best_and_newest(tmp_path):
    root = _study(tmp_path / "s", fine_state="interrupted")
    garbage_collect(str(root), "selected", dry_run=False, console=QUIET)
    left = _left(root)
    assert {"pre/a/checkpoint_000004", "pre/b/checkpoint_000003"} <= left  # references resolve later
    assert "span/m/checkpoint_000003" not in left  # nothing needs span


def test_a_running_study_and_a_bad_choice_are_refused(tmp_path):
    import time

    root = _study(tmp_path / "s")
    with pytest.raises(UserError, match="unknown choice 'all'"):
        garbage_collect(str(root), "all", dry_run=True, console=QUIET)
    # a study run before leases existed: its fresh live status says it runs
    status = {"updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {"pre": {"state": "running"}}}
    (root / "_orchestrator" / "status.json").write_text(json.dumps(status))
    with pytest.raises(UserError, match="the study is running"):
        garbage_collect(str(root), "best", dry_run=True, console=QUIET)


def test_the_driver_lease_says_whether_a_study_runs(tmp_path):
    """Held: renewed within 2 minutes by a process that is alive (same host: the same process, by
    its start time) or by another host. Not held: expired, or its process on this host is gone (a
    driver killed with SIGKILL) or is another one with the same pid."""
    import socket
    import subprocess
    import sys
    import time

    root = _study(tmp_path / "s")
    lease = root / "_orchestrator" / "lease.json"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        import psutil

        started = psutil.Process(alive.pid).create_time()
        for host, pid, age, process_started_at, held in [
            (socket.gethostname(), alive.pid, 5, started, True),
            (socket.gethostname(), alive.pid, 5, started - 3600, False),  # the pid was reused by another process
            (socket.gethostname(), dead.pid, 5, None, False),
            ("another-node", 1, 100, None, True),
            ("another-node", 1, 200, None, False),
        ]:
            lease.write_text(
                json.dumps(
                    {
                        "host": host,
                        "pid": pid,
                        "renewed_at": time.time() - age,
                        "process_started_at": process_started_at,
                    }
                )
            )
            if held:
                with pytest.raises(UserError, match=rf"the study is running \(pid {pid} on host {host}"):
                    garbage_collect(str(root), "best", dry_run=True, console=QUIET)
            else:
                garbage_collect(str(root), "best", dry_run=True, console=QUIET)
    finally:
        alive.kill()


CHAIN = (
    """\
name: gcchain
defaults: {seeds: [1], max_failures: 0, checkpoint: {every: 1, keep: null}}
stages:
  pre:
"""
    + TINY_STAGE.replace("epochs: 2", "epochs: 4")
    + """\
    variants: {a: {mask_strategy: patch}, b: {mask_strategy: random}, c: {mask_strategy: block},
               broken: {device: cuda}}
    select: {metric: val/loss, mode: min}
  fine:
    needs: [pre]
    trainable: lstm_classifier_finetune
    config: {data: "synthetic:ohlc?n=60&length=40&seed=1&labeled=1", window_length: 40, num_heads: 2,
             folds: 2, epochs: 2, hidden_size: 8, encoder: "${pre.best.checkpoint}"}
"""
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gc")
    (folder / "study.yaml").write_text(CHAIN)
    proc = run_here("run", "study.yaml", "--storage", folder / "runs", cwd=folder)
    assert proc.returncode == 1 and "1 trial(s) failed" in proc.stdout, proc.stdout + proc.stderr  # `broken`
    return folder / "runs" / "gcchain"


def _valid_after_gc(root: Store) -> None:
    """Every path the tables show exists; the downstream reference still resolves to a checkpoint."""
    from orchestrator.planning.expand import build_plan
    from orchestrator.planning.references import resolve_stage
    from orchestrator.study.schema import Study
    from orchestrator.study.yaml_doc import parse_yaml

    table = pd.read_parquet(__import__("io").BytesIO(root.read_bytes("results.parquet")))
    for path in [*table["checkpoint"].dropna(), *table["upstream.pre.checkpoint"].dropna()]:
        assert root.exists(*Path(path).parts[-3:]), path
    for record in load_records(root).values():
        for trial in record["trials"].values():
            for key in ("checkpoint", "latest_checkpoint"):
                assert trial.get(key) is None or root.exists(*Path(trial[key]).parts[-3:]), (key, trial[key])
    doc = parse_yaml(root.read_text("study.yaml"), "study.yaml")
    plan = build_plan(Study.model_validate(doc.data), doc, Path.cwd(), check_inputs=False)
    fine = resolve_stage(plan.stages["fine"], load_records(root), Path.cwd())
    encoder = fine.trials[0].config["encoder"]
    assert root.exists(*Path(encoder).parts[-3:], "state.pt"), encoder


@pytest.mark.e2e
def test_gc_on_a_finished_chain_study_local(chain, tmp_path):
    root = tmp_path / "gcchain"
    shutil.copytree(chain, root)
    (tmp_path / "study.yaml").write_text(CHAIN)
    count = len(list(root.glob("pre/*/checkpoint_*")))
    dry = run_here("gc", root, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and "would free" in dry.stdout and len(list(root.glob("pre/*/checkpoint_*"))) == count
    done = run_here("gc", root, "--keep", "selected", cwd=tmp_path)
    assert done.returncode == 0 and "freed" in done.stdout, done.stdout + done.stderr
    assert len(list(root.glob("pre/*/checkpoint_*"))) == 1  # the best trial's best epoch: fine's encoder
    _valid_after_gc(Store(str(root)))
    # a later run restores the stage's experiment (to retry its failed trial): Tune's state still
    # names the deleted checkpoints, and no record may name them again
    again = run_here("run", tmp_path / "study.yaml", "--storage", tmp_path, "--retry-errored", cwd=tmp_path)
    assert again.returncode == 1 and "1 trial(s) failed" in again.stdout, again.stdout + again.stderr
    assert len(list(root.glob("pre/*/checkpoint_*"))) == 1
    _valid_after_gc(Store(str(root)))


@pytest.mark.e2e
def test_gc_on_a_finished_chain_study_on_s3(chain, s3, tmp_path):  # noqa: F811 - the moto fixture
    uri = "s3://studies/gc/gcchain"
    assert run_here("sync", chain, uri, cwd=tmp_path).returncode == 0
    before = _objects(s3["client"], "gc/gcchain/pre/")
    done = run_here("gc", uri, cwd=tmp_path)  # --keep best: every pre trial keeps its best epoch
    assert done.returncode == 0 and "freed" in done.stdout, done.stdout + done.stderr
    after = _objects(s3["client"], "gc/gcchain/pre/")
    parts = [k.split("/") for k in after]
    checkpoints = {tuple(p[3:5]) for p in parts if len(p) > 5 and p[4].startswith("checkpoint_")}
    assert len(checkpoints) == 3 and len(after) < len(before)
    _valid_after_gc(Store(uri))


def test_tune_keeps_the_best_by_select_or_the_newest():
    from orchestrator.execution.stage_runner import checkpoint_config
    from orchestrator.study.schema import CheckpointPolicy
    from trainables.runtime.selection import CHECKPOINT_SCORE

    by_select = checkpoint_config(2, selects=True, keep_best=CheckpointPolicy().keep_best)
    assert by_select.num_to_keep == 2 and by_select.checkpoint_score_attribute == CHECKPOINT_SCORE
    newest = checkpoint_config(2, selects=True, keep_best=CheckpointPolicy(keep_best=False).keep_best)
    assert newest.num_to_keep == 2 and newest.checkpoint_score_attribute is None
    assert checkpoint_config(None, selects=False).checkpoint_score_attribute is None


@pytest.mark.e2e
def test_a_study_whose_trials_report_rarely_is_not_collected_while_it_runs(tmp_path):
    """The live status says nothing for minutes when trials report rarely: here it is made old on
    purpose, and the driver's lease alone keeps `gc` (and a second driver) away."""
    import datetime
    import os
    import signal
    import time

    from tests.execution.test_faults import _popen

    (tmp_path / "study.yaml").write_text(
        "name: busy\nstorage: ./runs\ndefaults: {seeds: [1]}\nstages:\n  pre:\n"
        + TINY_STAGE.replace("epochs: 2", "epochs: 5000").replace(
            "patch_len: 8}", "patch_len: 8, early_stopping_patience: null}"
        )
    )
    proc = _popen(["run", "study.yaml"], tmp_path)
    root = tmp_path / "runs" / "busy"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(root.glob("pre/*/metadata.json")):
            time.sleep(0.2)
        assert (root / "_orchestrator" / "lease.json").exists()
        long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
        status = json.loads((root / "_orchestrator" / "status.json").read_text())
        status["updated_at"] = long_ago.strftime("%Y-%m-%dT%H:%M:%S%z")
        (root / "_orchestrator" / "status.json").write_text(json.dumps(status))
        refused = run_here("gc", root, cwd=tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        (line,) = [x for x in refused.stderr.splitlines() if x.strip()]
        assert f"the study is running (pid {proc.pid} on host" in line and "collect after it ends" in line
        second = run_here("run", "study.yaml", cwd=tmp_path)
        assert second.returncode == 2 and "being run by another driver" in second.stderr, second.stderr
    finally:
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: the driver ends, its lease with it
        proc.communicate(timeout=120)
    assert not (root / "_orchestrator" / "lease.json").exists()
    assert run_here("gc", root, "--dry-run", cwd=tmp_path).returncode == 0
