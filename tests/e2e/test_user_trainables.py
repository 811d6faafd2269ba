"""The researcher's own trainable, named three ways (a .py file, an importable module, an entry
point of an installed package), each in a study with references to and from a built-in stage;
shipped to the workers through Ray's runtime_env; its code hashed, a change refused until allowed;
its mistakes one line at the user's file and line; `new-trainable`'s output run as written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, TINY_STAGE, run_cli

pytestmark = pytest.mark.e2e

HELPERS = '''"""A helper module of the package: shipped with it."""

def widen(hidden: int) -> int:
    return hidden
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A study folder with a file trainable (the scaffold's output), a package `mylab` that is on
    no worker's path, and a fake installed distribution registering `demo` as an entry point."""
    root = tmp_path_factory.mktemp("lab")
    made = run_cli("new-trainable", "recipes/tiny.py", cwd=root)
    assert made.returncode == 0, made.stderr
    source = (root / "recipes" / "tiny.py").read_text()
    package = root / "lab" / "mylab"
    (package / "recipes").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "recipes" / "__init__.py").write_text("")
    (package / "helpers.py").write_text(HELPERS)
    (package / "recipes" / "tiny.py").write_text(
        source.replace("from pydantic import", "from mylab.helpers import widen\nfrom pydantic import").replace(
            "torch.nn.Linear(8, cfg.hidden)", "torch.nn.Linear(8, widen(cfg.hidden))"
        )
    )
    dist = root / "lab" / "mylab_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[orchestrator.trainables]\ndemo = mylab.recipes.tiny\n")
    return root


def _env(lab: Path) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(REPO), str(lab / "lab")])}


STUDY = (
    """\
name: own
storage: ./runs
defaults: {seeds: [1], max_failures: 0}
stages:
  pre:
"""
    + TINY_STAGE
    + """\
    select: {metric: val/loss, mode: min}
  from_file:
    needs: [pre]
    trainable: ./recipes/tiny.py
    config: {epochs: 3, hidden: "${pre.best.config.hidden_size}"}
    select: {metric: val/loss, mode: min}
  from_module:
    needs: [pre]
    trainable: mylab.recipes.tiny
    config: {epochs: 3, hidden: "${pre.best.config.hidden_size}"}
  from_entry_point:
    needs: [from_file]
    trainable: demo
    config: {epochs: 2, hidden: "${from_file.best.config.hidden}", init_from: "${from_file.best.checkpoint}"}
  fine:
    needs: [from_file]
    trainable: lstm_classifier_finetune
    config: {data: "synthetic:ohlc?n=60&length=40&seed=1&labeled=1", window_length: 40, num_heads: 2,
             folds: 2, epochs: 1, hidden_size: "${from_file.best.config.hidden}"}
"""
)


def test_three_ways_to_name_a_trainable_with_references_to_and_from_built_ins(lab):
    (lab / "study.yaml").write_text(STUDY)
    done = run_cli("run", "study.yaml", cwd=lab, env=_env(lab), timeout=400)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "ships to every Ray worker (runtime_env py_modules)" in out and "recipes/tiny.py" in out
    root = lab / "runs" / "own"
    table = pd.read_parquet(root / "results.parquet").set_index("stage")
    assert (table["status"] == "done").all(), table[["trial", "status", "error"]]
    assert table.loc["from_file", "config.hidden"] == 8  # ${pre.best.config.hidden_size}
    assert table.loc["fine", "config.hidden_size"] == 8  # a built-in reading a user stage
    assert table.loc["from_entry_point", "upstream.from_file.checkpoint"] == table.loc["from_file", "checkpoint"]
    for stage in ("from_file", "from_module", "from_entry_point"):
        (meta,) = [json.loads(p.read_text()) for p in (root / stage).glob("*/metadata.json")]
        # the module the worker imported came through Ray's runtime_env, as on a remote node
        assert "runtime_resources" in meta["module_file"], (stage, meta["module_file"])
        assert meta["code"] == table.loc[stage, "code"] and len(meta["code"]) == 16
    study = json.loads((root / "study.json").read_text())
    assert set(study["code"]) == {"lstm_mae_pretrain", "./recipes/tiny.py", "mylab.recipes.tiny", "demo"} | {
        "lstm_classifier_finetune"
    }
    # the module and the modules of its package that it imports
    assert set(study["code"]["mylab.recipes.tiny"]["files"]) == {"mylab/recipes/tiny.py", "mylab/helpers.py"}


def test_a_changed_trainable_is_refused_until_allowed_and_the_table_says_which_code_ran(lab, tmp_path):
    folder = tmp_path / "changed"
    folder.mkdir()
    (folder / "model.py").write_text(
        (lab / "recipes" / "tiny.py")
        .read_text()
        .replace(
            "    cfg = Config.model_validate(config)\n",
            "    cfg = Config.model_validate(config)\n"
            "    if cfg.lr > 1:\n        raise RuntimeError('learning rate too large for this model')\n",
        )
    )
    (folder / "study.yaml").write_text(
        "name: changed\nstorage: ./runs\ndefaults: {seeds: [1], max_failures: 0}\nstages:\n  mine:\n"
        "    trainable: ./model.py\n    config: {epochs: 2}\n    variants: {small: {lr: 0.05}, large: {lr: 2.0}}\n"
    )
    first = run_cli("run", "study.yaml", cwd=folder)
    assert first.returncode == 1 and "RuntimeError: learning rate too large" in first.stdout, first.stdout
    error = pd.read_parquet(folder / "runs" / "changed" / "results.parquet").set_index("variant").loc["large", "error"]
    assert "model.py" in error and "raise RuntimeError" in error  # the user's own traceback
    (folder / "model.py").write_text((folder / "model.py").read_text().replace("if cfg.lr > 1:", "if cfg.lr > 10:"))
    for command in (["run", "study.yaml", "--retry-errored"], ["resume", "runs/changed", "--retry-errored"]):
        refused = run_cli(*command, cwd=folder)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        (line,) = [x for x in refused.stderr.splitlines() if x.strip()]
        assert "the code of trainable ./model.py changed since this study's trials ran (model.py)" in line, line
    allowed = run_cli("run", "study.yaml", "--retry-errored", "--allow-code-change", cwd=folder)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    table = pd.read_parquet(folder / "runs" / "changed" / "results.parquet").set_index("variant")
    assert set(table["status"]) == {"done"}
    assert table.loc["small", "code"] != table.loc["large", "code"]  # the finished trial kept its code
    study = json.loads((folder / "runs" / "changed" / "study.json").read_text())
    assert study["code"]["./model.py"]["hash"] == table.loc["large", "code"]
    assert study["code_history"][0]["./model.py"]["hash"] == table.loc["small", "code"]
