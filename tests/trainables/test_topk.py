"""Exact top-k with trec_eval's order (`trainables/metrics/topk.py`): the streamed search over
shards of any size equals the search of the whole corpus in memory and a brute-force sort by
(score desc, doc id desc), on random embeddings with many exact ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.metrics import topk


def _corpus(n: int = 300, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n // 3, dim, generator=g)
    docs = base[torch.randint(0, len(base), (n,), generator=g)]  # every vector about three times: exact ties
    rng = np.random.default_rng(seed)
    ids = [f"doc{v}" for v in rng.permutation(n * 7)[:n]]  # string order unrelated to position
    queries = torch.randn(25, dim, generator=g)
    return queries, docs, ids


def _brute_force(queries, docs, ids, k, similarity):
    q = torch.nn.functional.normalize(queries, dim=-1) if similarity == "cosine" else queries
    d = torch.nn.functional.normalize(docs, dim=-1) if similarity == "cosine" else docs
    s = topk.scores(q, d, similarity)
    out = []
    for row in s.tolist():
        out.append(sorted(range(len(ids)), key=lambda j: (row[j], ids[j]), reverse=True)[:k])
    return out


@pytest.mark.parametrize("similarity", ["cosine", "euclidean"])
@pytest.mark.parametrize("shard_size", [1, 7, 64, 299, 300, 1000])
def test_streamed_search_equals_the_whole_corpus_and_trec_eval_order(similarity, shard_size):
    queries, docs, ids = _corpus()
    keys = topk.doc_keys(ids)
    k = 20
    whole_s, whole_i = topk.search(queries, [docs], keys, k, similarity)
    shard_s, shard_i = topk.search(queries, docs.split(shard_size), keys, k, similarity, query_chunk=7, doc_block=50)
    assert torch.equal(whole_i, shard_i) and torch.equal(whole_s, shard_s)
    assert whole_i.tolist() == _brute_force(queries, docs, ids, k, similarity)


def test_ties_at_the_cut_keep_the_largest_ids():
    docs = torch.ones(10, 4)  # every document scores the same for every query
    ids = [f"d{i}" for i in range(10)]  # string order: d0 < d1 < ... < d9
    keys = topk.doc_keys(ids)
    for shard_size in (1, 3, 10):
        _, idx = topk.search(torch.ones(2, 4), docs.split(shard_size), keys, 4)
        assert [ids[j] for j in idx[0].tolist()] == ["d9", "d8", "d7", "d6"]


def test_k_larger_than_the_corpus_and_shard_count_checked():
    queries, docs, ids = _corpus(n=30)
    keys = topk.doc_keys(ids)
    s, i = topk.search(queries, docs.split(4), keys, 100)
    assert s.shape == (25, 30) and sorted(i[0].tolist()) == list(range(30))
    with pytest.raises(ValueError, match="the shards hold 20 documents, the corpus 30"):
        topk.search(queries, [docs[:20]], keys, 5)
