"""Mistakes in a researcher's trainable are theirs, said clearly: `validate` exits 2 with one line
at the user's file and line (or the study file's, for a config its `Config` rejects), no
traceback of the orchestrator's, no Ray started. And `new-trainable`'s output is valid as written."""

from __future__ import annotations

import pytest

STUDY = "name: mine\nstages:\n  train:\n    trainable: ./recipes/model.py\n    config: {epochs: 2}\n"

GOOD = """from pydantic import BaseModel, ConfigDict


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = 1
    seed: int = 0


def train(config, session):
    return {}
"""


@pytest.mark.usefixtures("without_ray")
@pytest.mark.parametrize(
    "source,line,message",
    [
        ("def train(config, session):\n    return {\n", 2, "SyntaxError: '{' was never closed"),
        (
            "import numpy\nimport no_such_package_here\n\ndef train(config, session):\n    pass\n",
            2,
            "ModuleNotFoundError: No module named 'no_such_package_here'",
        ),
        ("X = 1\nraise RuntimeError('broken at import')\n", 2, "RuntimeError: broken at import"),
        ("def fit(config, session):\n    pass\n", None, "no `train(config, session)` function"),
        ("Config = dict\n\ndef train(config, session):\n    pass\n", None, "`Config` must be a pydantic BaseModel"),
    ],
)
def test_a_broken_trainable_is_one_line_at_its_file_and_line(tmp_path, write_study, cli, source, line, message):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "model.py").write_text(source)
    code, out, err = cli("validate", write_study(STUDY))
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in out + err, out + err
    where = f"{tmp_path / 'recipes' / 'model.py'}" + (f":{line}:" if line else ":")
    assert lines[0].startswith(where) and message in lines[0], lines[0]
    assert "stages.train.trainable" in lines[0] and "study.yaml:4" in lines[0]
    import ray

    assert not ray.is_initialized()


def test_a_config_the_trainables_config_rejects_is_one_line_at_the_study_file(tmp_path, write_study, cli):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "model.py").write_text(GOOD)
    code, out, err = cli("validate", write_study(STUDY.replace("{epochs: 2}", "{epochs: 2, lr: 0.1}")))
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and "study.yaml:5: stages.train.config" in line and "unknown key 'lr'" in line, err
    code, out, err = cli("validate", write_study(STUDY))
    assert code == 0, out + err


@pytest.mark.parametrize(
    "trainable,message",
    [
        ("./recipes/nothere.py", "no such file"),
        ("./recipes/model.txt", "a trainable file is a Python file"),
        ("nosuchpackage.recipes.x", "unknown trainable 'nosuchpackage.recipes.x'"),
        ("./recipes/json.py", "a module named 'json' is already imported"),
    ],
)
def test_a_trainable_that_cannot_be_found_is_one_line(tmp_path, write_study, cli, trainable, message):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "model.txt").write_text(GOOD)
    (tmp_path / "recipes" / "json.py").write_text(GOOD)
    code, out, err = cli("validate", write_study(STUDY.replace("./recipes/model.py", trainable)))
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and message in line and "Traceback" not in out + err, line


def test_the_scaffold_passes_validate_and_preflight_and_is_never_overwritten(tmp_path, write_study, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("new-trainable", "recipes/model.py")
    assert code == 0 and (tmp_path / "recipes" / "model.py").exists(), out + err
    study = write_study(STUDY.replace("{epochs: 2}", "{epochs: 3}") + "    select: {metric: val/loss, mode: min}\n")
    code, out, err = cli("validate", study)
    assert code == 0, out + err
    code, out, err = cli("preflight", study)
    assert code == 0 and "pre-flight passed" in out, out + err
    before = (tmp_path / "recipes" / "model.py").read_text()
    code, out, err = cli("new-trainable", "recipes/model.py")
    assert code == 2 and "exists already; nothing was written" in err
    assert (tmp_path / "recipes" / "model.py").read_text() == before
