"""A pretrain -> fine-tune chain through the CLI: references, lineage, fan-out, failure isolation."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from tests.conftest import TINY_STAGE, run_here
from tests.execution.test_notify import Hook

pytestmark = pytest.mark.e2e

FINE = """\
    trainable: lstm_classifier_finetune
    config: {data: "synthetic:ohlc?n=60&length=40&seed=1&labeled=1", window_length: 40, num_heads: 2,
             folds: 2, epochs: 2, hidden_size: "${pre.best.config.hidden_size}"}
"""

STUDY = (
    """\
name: chain
storage: {storage}
defaults: {seeds: [1], max_failures: 0}
stages:
  pre:
"""
    + TINY_STAGE
    + """\
    variants: {a: {mask_strategy: patch}, b: {mask_strategy: random}, c: {mask_strategy: block}}
    select: {metric: val/loss, mode: min}
  broken:
"""
    + TINY_STAGE.replace("patch_len: 8}", "patch_len: 8, device: cuda}")
    + """\
  fine:
    needs: [pre]
"""
    + FINE
    + """\
    variants:
      pretrained: {encoder: "${pre.best.checkpoint}", freeze_encoder_epochs: 1}
      scratch: {}
  fan:
    needs: [pre]
"""
    + FINE
    + """\
    variants:
      top2: {encoder: "${pre.top[2]}"}
  after_broken:
    needs: [broken]
"""
    + FINE.replace('"${pre.best.config.hidden_size}"', "8")
)


def _run_with_webhook(study, tmp_path):
    """Validate and run the chain with a local webhook for `trial_error`: (the run, what it got)."""
    hook = Hook()
    notify = f"notify: {{webhooks: ['{hook.url}'], events: [trial_error], format: json}}\n"
    study.write_text(STUDY.replace("{storage}", str(tmp_path / "runs")).replace("stages:\n", notify + "stages:\n", 1))
    try:
        assert run_here("validate", study, cwd=tmp_path).returncode == 0
        return run_here("run", study, cwd=tmp_path), hook.received
    finally:
        hook.close()


def test_chain_resolves_references_records_lineage_and_isolates_failures(tmp_path):
    study = tmp_path / "study.yaml"
    proc, received = _run_with_webhook(study, tmp_path)
    out = proc.stdout + proc.stderr
    (sent,) = received  # the trial that fails at run time posted `trial_error`
    assert sent["event"] == "trial_error" and sent["trial"] == "broken/base/s1" and "CUDA" in sent["error"], sent
    assert proc.returncode == 1 and "Traceback" not in out, out  # a failed stage and a skipped one
    assert "stage after_broken skipped" in out and "'broken', which has no successful trial" in out
    error_line = next(line for line in proc.stdout.splitlines() if line.startswith("error"))
    assert "broken/base/s1" in error_line and "CUDA" in error_line, error_line  # the reason, on the terminal

    root = tmp_path / "runs" / "chain"
    df = pd.read_parquet(root / "results.parquet")
    pre = df[df.stage == "pre"]
    best = pre.sort_values("best.val/loss").iloc[0]
    for _, row in pre.iterrows():  # the best value is of every epoch, its checkpoint the best epoch's
        epochs = pd.read_csv(root / "pre" / row["trial_id"] / "metrics.csv")
        assert row["best.val/loss"] == epochs["val/loss"].min()
        state = torch.load(f"{row['checkpoint']}/state.pt", weights_only=True)
        assert state["epoch"] == epochs.loc[epochs["val/loss"].idxmin(), "epoch"]
        assert (
            torch.load(f"{row['checkpoint']}/encoder.pt", weights_only=True)["source"]["best_epoch"] == state["epoch"]
        )
    assert set(df[df.stage == "broken"]["status"]) == {"error"}
    assert "CUDA" in df[df.stage == "broken"]["error"].iloc[0]

    fine = df[df.stage == "fine"].set_index("trial")
    assert set(fine["status"]) == {"done"}
    pretrained = fine.loc["fine/pretrained/s1"]
    assert pretrained["upstream.pre.trial"] == best["trial"]
    assert pretrained["upstream.pre.trial_id"] == best["trial_id"]
    assert pretrained["config.encoder"] == best["checkpoint"] == pretrained["upstream.pre.checkpoint"]
    meta = json.loads((root / "fine" / pretrained["trial_id"] / "metadata.json").read_text())
    assert meta["encoder"]["hparams"]["hidden_size"] == 8 and meta["upstream"]["pre"]["trial_id"] == best["trial_id"]

    fan = df[df.stage == "fan"]
    top2 = pre.sort_values("best.val/loss")["trial"].head(2).tolist()
    assert sorted(fan["upstream.pre.top[2].trial"]) == sorted(top2) and fan["trial_id"].is_unique
    assert "after_broken" not in set(df.stage)

    for stage in ("pre", "fine", "fan", "broken"):
        assert (root / "tables" / f"{stage}.parquet").exists()
    status = run_here("status", root, cwd=tmp_path).stdout
    assert "skipped" in status
    assert run_here("report", root, cwd=tmp_path).returncode == 0
    plan = (root / "report" / "report.md").read_text()
    assert "| fine | lstm_classifier_finetune | 2 | complete | pre |" in plan  # the needs column
    assert "| after_broken | lstm_classifier_finetune | 0 | skipped | broken |" in plan

    # a re-run keeps every finished stage; the skipped one is re-evaluated (still skipped)
    again = run_here("run", study, cwd=tmp_path)
    assert again.returncode == 1 and "stage fine: complete in storage, skipped" in again.stdout
    assert "stage after_broken skipped" in again.stdout and "started a local Ray" not in again.stdout
    assert pd.read_parquet(root / "results.parquet")["trial_id"].tolist() == df["trial_id"].tolist()
