"""Gates through the CLI: a study whose first stage misses its gate skips the second (exit 0)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from orchestrator.execution.gates import evaluate
from orchestrator.study.schema import Gate
from tests.conftest import TINY_STAGE, run_here

TINY = TINY_STAGE.replace("{", "{{").replace("}", "}}")
# Two chains in one study (one run of Ray): the gate of `pass_pre` holds, that of `fail_pre` not.
STUDY = (
    """\
name: gated
storage: {storage}
defaults: {{seeds: [1]}}
stages:
  pass_pre:
"""
    + TINY
    + """\
    select: {{metric: val/loss, mode: min}}
    gate: [{{metric: val/loss, op: "<=", value: 1000.0, over: best}}, {{metric: val/masked_mse, op: "<", value: 10}}]
  pass_fine:
    needs: [pass_pre]
"""
    + TINY
    + """\
  fail_pre:
"""
    + TINY
    + """\
    select: {{metric: val/loss, mode: min}}
    gate: [{{metric: val/loss, op: "<=", value: 0.000001, over: best}}, {{metric: val/masked_mse, op: "<", value: 10}}]
  fail_fine:
    needs: [fail_pre]
"""
    + TINY
)


def _record(values, status="done"):
    return {
        "select": {"metric": "acc", "mode": "max"},
        "trials": {str(i): {"status": status, "best": v, "metrics": {"loss": 1 - v}} for i, v in enumerate(values)},
    }


def test_gate_semantics():
    rec = _record([0.2, 0.5, 0.4])
    best, mean, low = evaluate(
        rec,
        [
            Gate(metric="acc", op=">=", value=0.45),
            Gate(metric="acc", op=">=", value=0.45, over="mean"),
            Gate(metric="loss", op="<", value=0.6),
        ],
    )
    assert best["passed"] and best["measured"] == 0.5
    assert not mean["passed"] and mean["measured"] == pytest.approx(1.1 / 3)
    assert low["passed"] and low["measured"] == pytest.approx(0.5)  # lowest loss for "<"
    (none,) = evaluate(_record([0.9], status="error"), [Gate(metric="acc", op=">", value=0)])
    assert not none["passed"] and none["measured"] is None


@pytest.mark.e2e
def test_gate_decides_whether_the_next_stage_runs(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(storage=tmp_path / "runs"))
    plan = run_here("plan", study, cwd=tmp_path)
    assert "gate: val/loss <= " in plan.stdout
    proc = run_here("run", study, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    root = tmp_path / "runs" / "gated"
    df = pd.read_parquet(root / "results.parquet")
    md = run_here("results", root, cwd=tmp_path).stdout
    for prefix, passes in (("pass", True), ("fail", False)):
        record = json.loads((root / "_orchestrator" / "stages" / f"{prefix}_pre.json").read_text())
        gate = record["gates"][0]
        assert gate["passed"] is passes
        assert gate["measured"] == pytest.approx(df[df.stage == f"{prefix}_pre"]["best.val/loss"].min())
        fine = json.loads((root / "_orchestrator" / "stages" / f"{prefix}_fine.json").read_text())
        if passes:
            assert fine["state"] == "complete" and set(df[df.stage == f"{prefix}_fine"]["status"]) == {"done"}
        else:
            assert fine["state"] == "gated" and "did not pass its gate val/loss <=" in fine["reason"]
            assert f"stage {prefix}_fine gated" in out and f"{prefix}_fine" not in set(df.stage)
    assert "gated" in run_here("status", root, cwd=tmp_path).stdout
    assert "gate ✅" in md and "gate ❌" in md
