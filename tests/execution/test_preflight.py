"""`preflight`: every study file of the repo passes on CPU; a broken trial is reported by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO

STUDIES = sorted(
    [REPO / "matrix.yaml", *(REPO / "search_spaces").glob("*.yaml"), *(REPO / "examples").glob("*/study.yaml")]
)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_study_file_passes_preflight(cli, path: Path, tmp_path):
    code, out, err = cli("preflight", path, "--workdir", tmp_path)
    assert code == 0, out[-3000:] + err[-2000:]
    assert "pre-flight passed" in out


def test_a_trial_that_would_fail_is_reported_by_name(cli, write_study, tmp_path):
    study = write_study("""\
        # an encoder of hidden 8 cannot go into a classifier of hidden 16: only a run finds out
        name: broken
        storage: ./runs
        defaults: {seeds: [1]}
        stages:
          pre:
            trainable: lstm_mae_pretrain
            config: {data: "synthetic:ohlc?n=80&length=40&seed=0", window_length: 40, hidden_size: 8, patch_len: 8}
            select: {metric: val/loss, mode: min}
          fine:
            needs: [pre]
            trainable: lstm_classifier_finetune
            config: {data: "synthetic:ohlc?n=60&length=40&seed=1&labeled=1", window_length: 40, num_heads: 2,
                     encoder: "${pre.best.checkpoint}"}
            variants:
              good: {hidden_size: 8}
              bad: {hidden_size: 16}
    """)
    code, out, err = cli("preflight", study, "--workdir", tmp_path / "pf")
    assert code == 1
    assert "ok   fine/good/s1" in out and "FAIL fine/bad/s1" in out
    failed = out.split("pre-flight failed")[1]
    assert "fine/bad/s1" in failed and "fine/good/s1" not in failed
    assert "weight_ih_l0" in failed and "(64, 4)" in failed and "(32, 4)" in failed  # names both shapes
    assert list((tmp_path / "pf" / "fine").glob("*/error.txt"))
    assert not (tmp_path / "runs").exists()  # nothing written to the study's storage


def test_preflight_of_a_malformed_study_is_a_one_line_error(cli, write_study):
    study = write_study("""\
        # bad
        name: x
        stages:
          a: {trainable: no_such_trainable}
    """)
    code, out, err = cli("preflight", study)
    assert code == 2 and "no_such_trainable" in err and "Traceback" not in err + out
