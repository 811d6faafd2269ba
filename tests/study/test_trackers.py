"""Tracker callbacks: validation errors at `validate` (MLflow and TensorBoard recording every trial
are checked on the study of tests/e2e/test_cli.py)."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_STAGE

BODY = (
    "name: tracked\nstorage: {storage}\ndefaults: {{seeds: [1, 2]}}\ncallbacks: {callbacks}\nstages:\n  pre:\n"
    + TINY_STAGE.replace("{", "{{").replace("}", "}}")
)


@pytest.mark.parametrize(
    "callbacks,expected",
    [
        ("[neptune]", "unknown tracker 'neptune'; expected one of: tensorboard, mlflow, wandb"),
        ("[{mlflow: {uri: x}}]", "unknown option(s) for mlflow: uri"),
        ("[wandb]", "wandb needs"),
    ],
)
def test_bad_tracker_entries_fail_validate(tmp_path, cli, callbacks, expected, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    path = tmp_path / "study.yaml"
    path.write_text(BODY.format(storage=tmp_path / "runs", callbacks=callbacks))
    code, _, err = cli("validate", path)
    assert code == 2 and "callbacks[0]" in err and expected in err, err
