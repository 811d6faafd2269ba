"""Retrieval metrics against pytrec_eval (trec_eval), SIGReg's behaviour, isotropy, data errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainables.data import retrieval as retrieval_data
from trainables.data.triples import open_triples
from trainables.losses import sigreg
from trainables.metrics import retrieval


def _random_case(seed: int, n_queries: int = 30, n_docs: int = 300):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(n_docs)]
    run, qrels = {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        cand = rng.choice(docs, size=150, replace=False)
        run[qid] = {d: float(s) for d, s in zip(cand, rng.normal(size=len(cand)))}
        judged = rng.choice(docs, size=int(rng.integers(1, 25)), replace=False)
        qrels[qid] = {d: int(rng.integers(0, 3)) for d in judged}  # graded: 0, 1, 2
    return run, qrels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_pytrec_eval(seed):
    import pytrec_eval

    run, qrels = _random_case(seed)
    ours = {q: retrieval.query_metrics(run[q], qrels[q]) for q in qrels}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_100"})
    ref = ev.evaluate(run)
    top10 = {q: dict(sorted(d.items(), key=lambda kv: kv[1], reverse=True)[:10]) for q, d in run.items()}
    ref_mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    for q in ref:
        assert ours[q]["ndcg@10"] == pytest.approx(ref[q]["ndcg_cut_10"], abs=1e-6)
        assert ours[q]["recall@100"] == pytest.approx(ref[q]["recall_100"], abs=1e-6)
        assert ours[q]["mrr@10"] == pytest.approx(ref_mrr[q]["recip_rank"], abs=1e-6)
    mean = retrieval.evaluate_run(run, qrels)
    assert mean["ndcg@10"] == pytest.approx(np.mean([ref[q]["ndcg_cut_10"] for q in ref]), abs=1e-6)


def test_trec_run_file_rescored_by_pytrec_eval_matches(tmp_path):
    import pytrec_eval

    run, qrels = _random_case(5)
    path = tmp_path / "run.trec"
    retrieval.write_trec_run(path, run, "ours")
    parsed: dict = {}
    for line in path.read_text().splitlines():
        qid, q0, doc, rank, score, tag = line.split()
        assert q0 == "Q0" and tag == "ours"
        parsed.setdefault(qid, {})[doc] = float(score)
    assert all(len(d) == 100 for d in parsed.values())
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(parsed)
    assert np.mean([r["ndcg_cut_10"] for r in ref.values()]) == pytest.approx(
        retrieval.evaluate_run(run, qrels)["ndcg@10"], abs=1e-5
    )


def test_sigreg_is_small_for_gaussians_and_large_otherwise():
    torch.manual_seed(0)
    gauss = torch.randn(1024, 64)
    small = float(sigreg.sigreg(gauss, k=256))
    collapsed = float(sigreg.sigreg(torch.ones(1024, 64) * 0.3 + 0.01 * torch.randn(1024, 64), k=256))
    anisotropic = float(sigreg.sigreg(gauss * torch.linspace(0.05, 3, 64), k=256))
    shifted = float(sigreg.sigreg(gauss + 2.0, k=256))
    assert small < 2.0  # O(1): its expectation does not grow with N
    assert collapsed > 50 * small and anisotropic > 10 * small and shifted > 50 * small
    # the same directions for the same step (data-parallel ranks agree), new ones next step
    assert torch.equal(sigreg.directions(64, 8, step=3), sigreg.directions(64, 8, step=3))
    assert not torch.equal(sigreg.directions(64, 8, step=3), sigreg.directions(64, 8, step=4))


def test_sigreg_gradient_is_finite_in_float32_under_autocast():
    z = (torch.randn(256, 32) * 5).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.nn.functional.linear(z, torch.randn(32, 32))  # a bf16 activation
        loss = sigreg.sigreg(h, k=128)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_isotropy_scores():
    torch.manual_seed(0)
    iso = retrieval.isotropy(torch.randn(2000, 16))
    assert iso["isotropy_cosine"] == pytest.approx(1.0, abs=0.01) and iso["isotropy_partition"] > 0.2
    cone = retrieval.isotropy(torch.randn(2000, 16) * 0.1 + 1.0)
    assert cone["isotropy_cosine"] < 0.1 and cone["isotropy_partition"] < 0.1
    u = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    cos = u @ u.T
    expected = 1 - float((cos.sum() - cos.diagonal().sum()) / (50 * 49))
    assert retrieval.isotropy(u)["isotropy_cosine"] == pytest.approx(expected, abs=1e-6)


def test_malformed_inputs_name_file_and_line(tmp_path):
    good = json.dumps({"query": "q", "positive": "p", "negative": "n"})
    (tmp_path / "t.jsonl").write_text(good + "\n" + '{"query": "q", "positive": "p"}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: missing or non-string key\(s\) negative"):
        open_triples(tmp_path / "t.jsonl")
    (tmp_path / "u.jsonl").write_text(good + "\n\n{not json\n")
    with pytest.raises(ValueError, match=r"u.jsonl:3: not valid JSON"):
        open_triples(tmp_path / "u.jsonl")
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "", "text": "x"}) + "\n")
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "y"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tone\n")
    with pytest.raises(ValueError, match=r"test.tsv:2: score 'one' is not an integer"):
        retrieval_data.load_beir(beir)
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq7\td1\t1\n")
    with pytest.raises(ValueError, match=r"test.tsv: no judged query id is in .*queries.jsonl"):
        retrieval_data.load_beir(beir)


def test_beir_blank_qrels_lines_and_titles(tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "title": "T", "text": "x"})
        + "\n"
        + json.dumps({"_id": "d2", "title": None, "text": "z"})
        + "\n"
    )
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "y"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n\nq1\td1\t2\nq9\td2\t1\n\n")
    data = retrieval_data.load_beir(beir)
    assert data.corpus == {"d1": "T x", "d2": "z"}
    assert data.qrels == {"q1": {"d1": 2}}  # q9 has no query text: not evaluated (trec_eval semantics)
