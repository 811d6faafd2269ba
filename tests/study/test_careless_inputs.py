"""Inputs as a careless user gives them, to the commands of the last rounds (retrieval evaluation,
triples, model folders, a damaged study folder): each is one line naming the file and what was
expected, exit code 2, no traceback, nothing started."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_STAGE

BEIR = "beir"


def _beir(folder):
    (folder / BEIR / "qrels").mkdir(parents=True)
    (folder / BEIR / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"}\n')
    (folder / BEIR / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n')
    (folder / BEIR / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")


def _one_line(code, out, err):
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in out + err, out + err
    return lines[0]


def _model_folder(tmp_path, kind: str) -> str:
    import torch

    folder = tmp_path / "model"
    folder.mkdir()
    if kind == "garbage state":
        (folder / "state.pt").write_text("not a checkpoint")
    elif kind == "truncated state":
        torch.save({"model": {"w": torch.zeros(3)}, "config": {}}, folder / "state.pt")
        (folder / "state.pt").write_bytes((folder / "state.pt").read_bytes()[:100])
    elif kind == "other state":
        torch.save({"weights": torch.zeros(3)}, folder / "state.pt")
    elif kind == "a file":
        folder.rmdir()
        folder.write_text("x")
    return str(folder)


@pytest.mark.usefixtures("without_ray")
@pytest.mark.parametrize(
    "kind,message",
    [
        ("missing", "model: {path}: no such model folder"),
        ("empty", "model: {path}: not a model folder: expected a sentence-transformers folder"),
        ("a file", "model: {path}: not a folder"),
        ("garbage state", "model: {path}/state.pt: not a readable checkpoint (not a torch.save archive"),
        ("truncated state", "model: {path}/state.pt: not a readable checkpoint"),
        ("other state", "model: {path}/state.pt: not a contrastive_isotropy checkpoint"),
    ],
)
def test_an_evaluation_model_that_cannot_be_read_is_refused_at_validate(tmp_path, write_study, cli, kind, message):
    _beir(tmp_path)
    path = str(tmp_path / "model") if kind == "missing" else _model_folder(tmp_path, kind)
    study = write_study(
        "name: e\nstages:\n  evaluate:\n    trainable: retrieval_eval\n"
        f"    config: {{beir: [{BEIR}], model: ./model}}\n"
    )
    line = _one_line(*cli("validate", study))
    assert message.format(path=path) in line, line
    import ray

    code, out, err = cli("run", study, "--storage", tmp_path / "runs")
    assert code == 2 and not ray.is_initialized() and not (tmp_path / "runs").exists(), out + err


def test_an_embedding_cache_that_cannot_be_written_is_refused_at_validate(tmp_path, write_study, cli):
    _beir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    study = write_study(
        "name: e\nstages:\n  evaluate:\n    trainable: retrieval_eval\n"
        f"    config: {{beir: [{BEIR}], cache: ./a_file/embeddings}}\n"
    )
    line = _one_line(*cli("validate", study))
    assert "config.cache" in line and "the embedding cache cannot be written here" in line, line


def test_a_hub_model_cannot_be_checked_here_and_validate_says_so(tmp_path, write_study, cli):
    _beir(tmp_path)
    study = write_study(
        "name: e\nstages:\n  evaluate:\n    trainable: retrieval_eval\n"
        f"    config: {{beir: [{BEIR}], model: sentence-transformers/all-mpnet-base-v2}}\n"
    )
    code, out, err = cli("validate", study)
    assert code == 0 and "all-mpnet-base-v2 is a hub name: it is downloaded" in out, out + err


def test_an_empty_base_model_folder_is_refused_at_validate(tmp_path, write_study, cli):
    (tmp_path / "model").mkdir()
    study = write_study(
        "name: c\nstages:\n  train:\n    trainable: contrastive_isotropy\n"
        "    config: {train_data: 'synthetic:triples?n=64', base_model: ./model}\n"
    )
    line = _one_line(*cli("validate", study))
    assert "config.base_model" in line and "not a model folder" in line


@pytest.mark.parametrize("damaged", ["study.json", "_orchestrator/stages/pre.json"])
def test_a_damaged_study_folder_is_one_line_for_every_command(tmp_path, cli, damaged):
    root = tmp_path / "runs" / "s"
    (root / "_orchestrator" / "stages").mkdir(parents=True)
    (root / "study.json").write_text(json.dumps({"name": "s", "stages": {"pre": []}}))
    (root / "study.yaml").write_text("name: s\nstages:\n  pre:\n" + TINY_STAGE)
    (root / "_orchestrator" / "stages" / "pre.json").write_text(json.dumps({"stage": "pre", "trials": {}}))
    (root / damaged).write_text('{"name": "s", "stag')  # cut short
    commands = [["status", root], ["results", root], ["gc", root], ["report", root]]
    commands += [["resume", root]] if damaged == "study.json" else []  # (the record: after the study's hash check)
    for command in commands:
        line = _one_line(*cli(*command))
        assert damaged in line and "not valid JSON" in line and "damaged" in line, (command, line)


def test_resume_of_a_folder_without_its_study_file_is_one_line(tmp_path, cli):
    root = tmp_path / "s"
    root.mkdir()
    (root / "study.json").write_text(json.dumps({"name": "s", "stages": {}}))
    line = _one_line(*cli("resume", root))
    assert "no study.yaml here" in line
