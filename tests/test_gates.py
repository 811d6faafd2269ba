"""Gates through the CLI: a study whose first stage misses its gate skips the second (exit 0)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from orchestrator.gates import evaluate
from orchestrator.spec import Gate
from tests.conftest import TINY_STAGE, run_cli

STUDY = """\
name: gated
storage: {storage}
defaults: {{seeds: [1]}}
stages:
  pre:
""" + TINY_STAGE.replace("{", "{{").replace("}", "}}") + """\
    select: {{metric: val/loss, mode: min}}
    gate: [{{metric: val/loss, op: "<=", value: {threshold}, over: best}}, {{metric: val/masked_mse, op: "<", value: 10}}]
  fine:
    needs: [pre]
""" + TINY_STAGE.replace("{", "{{").replace("}", "}}")


def _record(values, status="done"):
    return {"select": {"metric": "acc", "mode": "max"},
            "trials": {str(i): {"status": status, "best": v, "metrics": {"loss": 1 - v}} for i, v in enumerate(values)}}


def test_gate_semantics():
    rec = _record([0.2, 0.5, 0.4])
    best, mean, low = evaluate(rec, [Gate(metric="acc", op=">=", value=0.45), Gate(metric="acc", op=">=", value=0.45,
                                                                                    over="mean"),
                                     Gate(metric="loss", op="<", value=0.6)])
    assert best["passed"] and best["measured"] == 0.5
    assert not mean["passed"] and mean["measured"] == pytest.approx(1.1 / 3)
    assert low["passed"] and low["measured"] == pytest.approx(0.5)  # lowest loss for "<"
    none, = evaluate(_record([0.9], status="error"), [Gate(metric="acc", op=">", value=0)])
    assert not none["passed"] and none["measured"] is None


@pytest.mark.e2e
@pytest.mark.parametrize("threshold,passes", [(0.000001, False), (1000.0, True)])
def test_gate_decides_whether_the_next_stage_runs(tmp_path, threshold, passes):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(storage=tmp_path / "runs", threshold=threshold))
    plan = run_cli("plan", study, cwd=tmp_path)
    assert "gate: val/loss <= " in plan.stdout
    proc = run_cli("run", study, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    root = tmp_path / "runs" / "gated"
    df = pd.read_parquet(root / "results.parquet")
    record = json.loads((root / "_orchestrator" / "stages" / "pre.json").read_text())
    gate = record["gates"][0]
    assert gate["passed"] is passes and gate["measured"] == pytest.approx(df[df.stage == "pre"]["best.val/loss"].min())
    fine = json.loads((root / "_orchestrator" / "stages" / "fine.json").read_text())
    if passes:
        assert fine["state"] == "complete" and set(df[df.stage == "fine"]["status"]) == {"done"}
    else:
        assert fine["state"] == "gated" and "did not pass its gate val/loss <=" in fine["reason"]
        assert "stage fine gated" in out and "fine" not in set(df.stage)
        assert "gated" in run_cli("status", root, cwd=tmp_path).stdout
    md = run_cli("results", root, cwd=tmp_path).stdout
    assert ("gate ✅" if passes else "gate ❌") in md
