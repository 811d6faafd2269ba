"""Malformed study files: exit 2, one line per problem naming file, line and key path; nothing started."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_STAGE

GOOD = (
    """\
name: tiny
storage: {storage}
stages:
  pretrain:
"""
    + TINY_STAGE
)


def _study(tmp_path, body: str) -> str:
    return body.replace("{storage}", str(tmp_path / "runs"))


CASES = {
    "unknown top-level key": ("name: x\nstages: {}\nfoo: 1\n", ["foo", "unknown key 'foo'"]),
    "unknown stage key": (
        GOOD + "    epochz: 3\n",
        ["stages.pretrain.epochz", "unknown key 'epochz'", "expected one of"],
    ),
    "unknown trainable": (
        GOOD.replace("lstm_mae_pretrain", "lstm_mae_pretrian"),
        ["stages.pretrain.trainable", "not a registered name (contrastive_isotropy, lstm_classifier_finetune"],
    ),
    "unknown trainable config key": (
        GOOD.replace("epochs: 2", "epochs: 2, hidden: 3"),
        ["stages.pretrain.config.hidden", "unknown key 'hidden'"],
    ),
    "wrong type": (GOOD.replace("epochs: 2", "epochs: many"), ["stages.pretrain.config.epochs", "integer"]),
    "negative learning rate": (
        GOOD.replace("epochs: 2", "epochs: 2, lr: -0.1"),
        ["stages.pretrain.config.lr", "greater than 0"],
    ),
    "bad mask strategy in variant": (
        GOOD + "    variants:\n      v1: {mask_strategy: stripes}\n",
        ["stages.pretrain.variants.v1.mask_strategy"],
    ),
    "empty grid": (GOOD + "    grid: {lr: []}\n", ["stages.pretrain.grid", "no values"]),
    "missing data file": (
        GOOD.replace('"synthetic:ohlc?n=120&length=40&seed=0"', "nothere.parquet"),
        ["stages.pretrain.config.data", "data file not found"],
    ),
    "bad synthetic uri": (GOOD.replace("seed=0", "sed=0"), ["unknown parameter 'sed'"]),
    "path traversal name": (GOOD.replace("name: tiny", "name: ../escape"), ["name", "no '..'"]),
    "absolute name": (GOOD.replace("name: tiny", "name: /etc/x"), ["name", "invalid study name"]),
    "cycle": (
        "name: c\nstages:\n  a:\n    needs: [b]\n" + TINY_STAGE + "  b:\n    needs: [a]\n" + TINY_STAGE,
        ["cycle", "a -> b -> a"],
    ),
    "unknown needs": (GOOD + "    needs: [nope]\n", ["stages.pretrain.needs[0]", "unknown stage 'nope'"]),
    "broken yaml": ("name: x\nstages:\n  a: [1, 2\n", ["invalid YAML"]),
    "python object tag": (
        "name: x\nstages: !!python/object/apply:os.system [echo owned]\n",
        ["could not determine a constructor"],
    ),
    "not a mapping": ("- 1\n- 2\n", ["expected a mapping"]),
    "empty file": ("", ["empty file"]),
    "duplicate trials": (GOOD + "    variants:\n      a: {epochs: 3}\n      b: {epochs: 3}\n", ["resolve to the same"]),
    "bad sampler": (GOOD + "    search: {space: {lr: {logarithmic: [1, 2]}}}\n", ["unknown sampler 'logarithmic'"]),
    "sampler bounds": (GOOD + "    search: {space: {lr: {loguniform: [0, 1]}}}\n", ["must be > 0"]),
    "asha without select": (
        GOOD + "    search: {space: {lr: {uniform: [0.1, 0.2]}}, scheduler: asha}\n",
        ["needs `select"],
    ),
    "negative cpu": (
        GOOD.replace("stages:", "defaults: {resources: {cpu: -1}}\nstages:"),
        ["defaults.resources.cpu", "greater than 0"],
    ),
    "data-parallel workers on a trainable without DDP": (
        "name: x\nstages:\n  f:\n    trainable: lstm_classifier_finetune\n    resources: {workers: 2}\n"
        "    config: {data: 'synthetic:ohlc?n=60&labeled=1'}\n",
        ["stages.f.resources.workers", "does not run data-parallel", "lstm_mae_pretrain"],
    ),
    "duplicate seeds": (GOOD.replace("stages:", "defaults: {seeds: [1, 1]}\nstages:"), ["seeds must be unique"]),
    "patch longer than window": (GOOD.replace("patch_len: 8", "patch_len: 80"), ["patch_len (80)"]),
    "race without select": (
        GOOD.replace("stages:", "defaults: {seeds: [1, 2, 3]}\nstages:") + "    race: {first: 2}\n",
        ["stages.pretrain", "race needs `select"],
    ),
    "race beside asha": (
        GOOD.replace("stages:", "defaults: {seeds: [1, 2, 3]}\nstages:")
        + "    select: {metric: val/loss, mode: min}\n    race: {first: 2}\n"
        + "    search: {space: {dropout: {uniform: [0, 0.2]}}, scheduler: asha}\n",
        ["stages.pretrain", "race and search.scheduler 'asha' would both stop trials"],
    ),
    "race with batched reports": (
        GOOD.replace("stages:", "defaults: {seeds: [1, 2, 3]}\nstages:")
        + "    select: {metric: val/loss, mode: min}\n    race: {first: 2}\n    report_interval_s: 5\n",
        ["stages.pretrain", "race reads every epoch's report"],
    ),
    "race with too few seeds": (
        GOOD.replace("stages:", "defaults: {seeds: [1, 2]}\nstages:")
        + "    select: {metric: val/loss, mode: min}\n    race: {first: 2}\n    variants: {a: {lr: 0.01}, b: {}}\n",
        ["stages.pretrain.race.min_seeds", "at least min_seeds=3 seeds per group; the stage has 2 (1, 2)"],
    ),
    "race that could never eliminate": (
        GOOD.replace("stages:", "defaults: {seeds: [1, 2, 3, 4, 5]}\nstages:")
        + "    select: {metric: val/loss, mode: min}\n    race: {first: 2, test: wilcoxon}\n"
        + "    variants: {a: {lr: 0.01}, b: {lr: 0.001}, c: {lr: 0.1}, d: {}}\n",
        ["stages.pretrain.race.test", "smallest p-value, 2^-5 = 0.0312", "4 groups (0.0139)"],
    ),
    "race factor not above 1": (
        GOOD.replace("stages:", "defaults: {seeds: [1, 2, 3]}\nstages:")
        + "    select: {metric: val/loss, mode: min}\n    race: {first: 2, factor: 1}\n",
        ["stages.pretrain.race.factor", "greater than 1"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_study_exits_2_with_one_line_per_problem(case, tmp_path, write_study, cli):
    body, expected = CASES[case]
    path = write_study(_study(tmp_path, body))
    for command in ("validate", "run"):
        code, out, err = cli(command, path)
        assert code == 2, (command, out, err)
        assert "Traceback" not in err + out
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and all(line.startswith(str(path)) for line in lines), err
        for fragment in expected:
            assert fragment in err, (fragment, err)
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_errors_carry_yaml_line_numbers(tmp_path, write_study, cli):
    path = write_study(_study(tmp_path, GOOD + "    epochz: 3\n"))
    code, _, err = cli("validate", path)
    assert code == 2
    assert f"{path}:8: stages.pretrain.epochz" in err


def test_every_problem_is_listed_at_once(tmp_path, write_study, cli):
    body = GOOD.replace("epochs: 2", "epochs: -1, lr: -1") + "    bogus: 1\n"
    code, _, err = cli("validate", write_study(_study(tmp_path, body)))
    assert code == 2
    assert "bogus" in err  # schema problems are reported together


def test_search_space_file_errors_name_that_file(tmp_path, write_study, cli):
    space = tmp_path / "space.yaml"
    space.write_text("space:\n  lr: {uniform: [1, 0.5]}\n")
    path = write_study(_study(tmp_path, GOOD + "    search: {space: space.yaml, num_samples: 2}\n"))
    code, _, err = cli("validate", path)
    assert code == 2
    assert err.startswith(f"{space}:2: space.lr: uniform needs lower < upper")


def test_valid_study_validates(tmp_path, write_study, cli):
    code, out, err = cli("validate", write_study(_study(tmp_path, GOOD)))
    assert code == 0, err
    assert "ok: study 'tiny', 1 trials" in out


CHAIN = (
    """\
name: chain
storage: {storage}
stages:
  pre:
"""
    + TINY_STAGE
    + """\
    variants: {a: {mask_strategy: patch}, b: {mask_strategy: block}}
    select: {metric: val/loss, mode: min}
  fine:
    needs: [pre]
    trainable: lstm_classifier_finetune
    config: {data: "synthetic:ohlc?n=60&length=40&seed=1&labeled=1", window_length: 40, hidden_size: 8,
             num_heads: 2, folds: 2, epochs: 2, encoder: "${pre.best.checkpoint}"}
"""
)

CHAIN_CASES = {
    "reference to a missing stage": (
        CHAIN.replace("${pre.best.checkpoint}", "${nope.best.checkpoint}"),
        ["stages.fine.config.encoder", "unknown stage 'nope'"],
    ),
    "best without select": (
        CHAIN.replace("    select: {metric: val/loss, mode: min}\n", ""),
        ["stages.fine.config.encoder", "has no `select`"],
    ),
    "reference without needs": (CHAIN.replace("    needs: [pre]\n", ""), ["must list 'pre' in `needs`"]),
    "unknown variant": (CHAIN.replace("${pre.best.checkpoint}", "${pre.trials[c]}"), ["has no variant 'c'"]),
    "unknown config key": (
        CHAIN.replace(
            "hidden_size: 8,\n             num_heads",
            'hidden_size: "${pre.best.config.hiden}",\n             num_heads',
        ),
        ["has no config key 'hiden'"],
    ),
    "malformed reference": (CHAIN.replace("${pre.best.checkpoint}", "${pre.bestest}"), ["bad reference"]),
    "encoder file missing": (
        CHAIN.replace("${pre.best.checkpoint}", "missing/encoder.pt"),
        ["stages.fine.config.encoder", "no exported encoder here"],
    ),
}


@pytest.mark.parametrize("case", sorted(CHAIN_CASES))
def test_bad_references_exit_2_at_validate(case, tmp_path, write_study, cli):
    body, expected = CHAIN_CASES[case]
    path = write_study(_study(tmp_path, body))
    code, out, err = cli("validate", path)
    assert code == 2, out + err
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in err, (fragment, err)


def test_valid_chain_validates_and_plans_symbolically(tmp_path, write_study, cli):
    path = write_study(_study(tmp_path, CHAIN))
    code, out, err = cli("validate", path)
    assert code == 0, err
    code, out, err = cli("plan", path)
    assert code == 0 and "${pre.best.checkpoint}" in out and "needs pre" in out


def _bad_parquet(tmp_path, kind: str) -> str:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from trainables.data import ohlc as ohlc_data
    from trainables.data import synthetic_ohlc as synthetic

    data = synthetic.generate(12, 40, 0)
    ohlc, extra = data["ohlc"], {}
    if kind == "nan":
        ohlc[3, 5, 0] = np.nan
    elif kind == "invariant":
        ohlc[6, 2, 1] = ohlc[6, 2, 2] - 1
    elif kind == "inf":
        ohlc[1, 0, 3] = np.inf
    path = tmp_path / f"{kind}.parquet"
    if kind == "short":
        table = pa.table({"window_id": ["a", "b"], "ohlc": [ohlc[0].tolist(), ohlc[1][:39].tolist()]})
    elif kind == "nocol":
        table = pa.table({"window_id": ["a"], "prices": [ohlc[0].tolist()]})
    elif kind == "notparquet":
        path.write_text("window_id,ohlc\n")
        return str(path)
    elif kind == "empty":
        table = ohlc_data.windows_table(ohlc[:0], [])
    elif kind == "nolabel":
        table = ohlc_data.windows_table(ohlc, [f"w{i}" for i in range(12)])
    elif kind == "onelabel":
        table = ohlc_data.windows_table(
            ohlc,
            [f"w{i}" for i in range(12)],
            label=["x"] * 12,
            expansion_start=data["expansion_start"],
            expansion_end=data["expansion_end"],
        )
    elif kind in ("nulllabel", "textspan", "nanspan"):
        label = [None if kind == "nulllabel" and i == 4 else str(v) for i, v in enumerate(data["label"])]
        start = [
            float("nan") if kind == "nanspan" and i == 2 else float(v) for i, v in enumerate(data["expansion_start"])
        ]
        start = [str(int(v)) for v in start] if kind == "textspan" else start
        table = pa.table(
            {
                "window_id": [f"w{i}" for i in range(12)],
                "ohlc": [w.tolist() for w in ohlc],
                "label": label,
                "expansion_start": start,
                "expansion_end": data["expansion_end"],
            }
        )
    else:
        table = ohlc_data.windows_table(ohlc, [f"w{i}" for i in range(12)], **extra)
    pq.write_table(table, path)
    return str(path)


DATA_CASES = {
    "nan prices": ("pretrain", "nan", ["row 3: NaN or infinite prices"]),
    "infinite price": ("pretrain", "inf", ["row 1: NaN or infinite prices"]),
    "broken OHLC invariant": ("pretrain", "invariant", ["row 6: OHLC invariant broken"]),
    "wrong window length": ("pretrain", "short", ["row 1: window has 39 bars; expected 40"]),
    "missing ohlc column": ("pretrain", "nocol", ["missing column(s) ohlc"]),
    "not parquet": ("pretrain", "notparquet", ["not a readable Parquet file"]),
    "no rows": ("pretrain", "empty", ["no rows"]),
    "labels missing": ("fine", "nolabel", ["missing column(s) label, expansion_start, expansion_end"]),
    "single class": ("fine", "onelabel", ["needs at least 2 classes"]),
    "null label": ("fine", "nulllabel", ["row 4: label is empty"]),
    "span index as text": ("fine", "textspan", ["column 'expansion_start' has type string; expected integer"]),
    "span index missing": ("fine", "nanspan", ["row 2: expansion_start is missing or not a whole bar index"]),
}

FINE_ONLY = """\
name: data
storage: {storage}
stages:
  fine:
    trainable: lstm_classifier_finetune
    config: {data: "DATA", window_length: 40, hidden_size: 8, num_heads: 2, folds: 2, epochs: 1}
"""


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_files_exit_2_naming_file_and_rows(case, tmp_path, write_study, cli):
    stage, kind, expected = DATA_CASES[case]
    data = _bad_parquet(tmp_path, kind)
    if stage == "pretrain":
        body = GOOD.replace('"synthetic:ohlc?n=120&length=40&seed=0"', f'"{data}"')
    else:
        body = FINE_ONLY.replace("DATA", data)
    path = write_study(_study(tmp_path, body))
    for command in ("validate", "run"):
        code, out, err = cli(command, path)
        assert code == 2, (command, out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in err
        assert data in lines[0] and "config.data" in lines[0]
        for fragment in expected:
            assert fragment in lines[0], (fragment, lines[0])
    assert not (tmp_path / "runs").exists()


def test_truncated_encoder_checkpoint_exits_2(tmp_path, write_study, cli):
    from trainables.models import encoders

    enc = tmp_path / "encoder.pt"
    encoders.export(encoders.BiLSTMEncoder(4, 8, 1), enc)
    enc.write_bytes(enc.read_bytes()[:200])
    body = FINE_ONLY.replace("DATA", "synthetic:ohlc?n=40&length=40&seed=1&labeled=1").replace(
        "epochs: 1}", f'epochs: 1, encoder: "{enc}"}}'
    )
    code, _, err = cli("validate", write_study(_study(tmp_path, body)))
    assert code == 2 and "stages.fine.config.encoder" in err and "not a readable checkpoint" in err


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path, capfd):
    """weights_only loading: a checkpoint that would run code on load is rejected, not executed,
    whether it is a bare pickle or a torch.save archive."""
    import pickle

    import torch

    from trainables.runtime import checkpoints

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "state.pt"
    path.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        checkpoints.load(path)
    torch.save({"model": Evil()}, path)
    with pytest.raises(ValueError, match="refused: it holds objects other than tensors"):
        checkpoints.load(path)
    assert "owned" not in capfd.readouterr().out


def test_unusable_storage_is_one_line_exit_2(tmp_path, write_study, cli):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    path = write_study(_study(tmp_path, GOOD))
    code, out, err = cli("run", path, "--storage", blocker / "runs")
    assert code == 2 and "cannot use this storage" in err and "Traceback" not in err + out


def test_compare_with_an_unknown_stage_or_variant_is_one_line(tmp_path, write_study, cli):
    body = GOOD.rstrip() + "\n    compare: {stage: nowhere}\n"
    code, _, err = cli("validate", write_study(_study(tmp_path, body)))
    assert code == 2 and "compare.stage: unknown stage 'nowhere'" in err, err
