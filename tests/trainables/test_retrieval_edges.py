"""Edges of retrieval evaluation that would mislabel or lose results: run files that keep near-ties
apart, dataset names that must be distinct, Recall@100 never computed over fewer documents, an
embedding cache past 100,000 shards, and remote model copies that do not outlive their process."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, run_here
from trainables.metrics import retrieval
from trainables.runtime.embedding_cache import EmbeddingCache


def test_trec_run_keeps_near_ties_in_their_order(tmp_path):
    """Scores 3e-7 apart: written with 6 decimals they tie, and trec_eval (ties by document id,
    descending) would put `z` first; the file must reproduce the ranking."""
    import pytrec_eval

    run = {"q1": {"a": 0.12345674, "z": 0.12345641, "m": 0.1}}
    path = tmp_path / "run.trec"
    retrieval.write_trec_run(path, run, "ours")
    parsed: dict = {}
    for line in path.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        parsed.setdefault(qid, {})[doc] = float(score)
    assert parsed == run  # every score read back exactly
    rr = pytrec_eval.RelevanceEvaluator({"q1": {"a": 1}}, {"recip_rank"}).evaluate(parsed)
    assert rr["q1"]["recip_rank"] == 1.0


@pytest.mark.parametrize(
    "config,message",
    [
        ("{beir: [one/test, two/test]}", r"config.beir: \S+/one/test and \S+/two/test are both named 'test'"),
        ("{beir: [one/test, one/test]}", r"config.beir: \S+/one/test is listed twice"),
        ("{beir: [one/test], depth: 50}", r"config.depth: Input should be greater than or equal to 100"),
    ],
)
def test_evaluation_settings_that_would_mislabel_results_are_refused(tmp_path, config, message):
    for folder in ("one/test", "two/test"):
        (tmp_path / folder / "qrels").mkdir(parents=True)
        (tmp_path / folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n')
        (tmp_path / folder / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n')
        (tmp_path / folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "study.yaml").write_text(
        f"name: e\nstages:\n  evaluate:\n    trainable: retrieval_eval\n    config: {config}\n"
    )
    done = run_here("validate", "study.yaml", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert re.search(message, line) and "Traceback" not in done.stderr


def test_cache_lists_shards_past_100000(tmp_path):
    cache = EmbeddingCache(str(tmp_path), "key")
    for index in (7, 99_999, 100_000, 123_456):
        cache.write(index, [f"d{index}"], torch.zeros(1, 2))
    assert cache.present() == {7, 99_999, 100_000, 123_456}
    assert cache.read(123_456)[0] == ["d123456"]


def test_a_remote_model_copy_is_removed_when_its_process_ends(tmp_path):
    """`s3://` model folders are copied to this machine once per process (here a `file://` URI
    takes the same path) and removed at the process's exit."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"x" * 1000)
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from trainables.models.sentence_encoder import _local_model_path, model_hash\n"
        f"uri = 'file://{tmp_path / 'model'}'\n"
        "path = _local_model_path(uri); model_hash(uri)\n"
        "import os; assert os.path.exists(os.path.join(path, 'weights.bin'))\n"
        "print(path)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    copy = done.stdout.strip().splitlines()[-1]
    assert copy and not __import__("os").path.exists(copy)
