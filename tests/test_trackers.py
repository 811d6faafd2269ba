"""Tracker callbacks: validation errors at `validate`; MLflow records every trial in a local store."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_STAGE, run_cli

BODY = "name: tracked\nstorage: {storage}\ndefaults: {{seeds: [1, 2]}}\ncallbacks: {callbacks}\nstages:\n  pre:\n" + \
    TINY_STAGE.replace("{", "{{").replace("}", "}}")


@pytest.mark.parametrize("callbacks,expected", [
    ("[neptune]", "unknown tracker 'neptune'; expected one of: tensorboard, mlflow, wandb"),
    ("[{mlflow: {uri: x}}]", "unknown option(s) for mlflow: uri"),
    ("[wandb]", "wandb needs"),
])
def test_bad_tracker_entries_fail_validate(tmp_path, cli, callbacks, expected, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    path = tmp_path / "study.yaml"
    path.write_text(BODY.format(storage=tmp_path / "runs", callbacks=callbacks))
    code, _, err = cli("validate", path)
    assert code == 2 and "callbacks[0]" in err and expected in err, err


@pytest.mark.e2e
def test_mlflow_records_params_and_metrics_of_every_trial(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to read a file store
    store = tmp_path / "mlruns"
    path = tmp_path / "study.yaml"
    path.write_text(BODY.format(storage=tmp_path / "runs", callbacks=f"[tensorboard, {{mlflow: {{tracking_uri: {store}}}}}]"))
    proc = run_cli("run", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = MlflowClient(tracking_uri=f"file://{store}")
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["stage"] == "pre"
        assert any(k.endswith("seed") for k in run.data.params)
        assert any("config/epochs" in k or k.endswith("epochs") for k in run.data.params)
        assert "val/loss" in run.data.metrics and "train/loss" in run.data.metrics
    assert list((tmp_path / "runs" / "tracked" / "pre").glob("*/events.out.tfevents.*"))  # TensorBoard files
