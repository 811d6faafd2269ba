"""Exact top-k retrieval with trec_eval's order, over a corpus held in memory or streamed in shards.

trec_eval ranks a query's documents by score, descending, and breaks ties by document id,
descending (string order). A plain `topk` keeps an arbitrary subset of the documents tied at
the k-th score, so the documents that make the cut, and with them Recall@100, would depend on
the kernel and on how the corpus was split. Here the cut follows trec_eval's order exactly:
each document carries its *key*, its position among the corpus's ids in string order, and a
selection keeps every document scoring above the k-th score plus, of those tied with it, the
ones with the largest keys.

`RunningTopK` keeps the best k per query while shards of the corpus arrive (memory: the
queries, k results per query and one shard's scores, whatever the corpus size); merging a
shard's best k into the running k with the same rule gives exactly the in-memory selection.
Scores are computed in float64 and rounded to float32, so a document's score does not depend on
the shape of the matrix product it was computed in (which shard, which chunk of queries): the
same document and query give the same number in every split of the corpus.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def doc_keys(doc_ids: list[str]) -> torch.Tensor:
    """(N,) int64: each document's position among `doc_ids` sorted as strings (trec_eval's tie order)."""
    order = sorted(range(len(doc_ids)), key=doc_ids.__getitem__)
    keys = torch.empty(len(doc_ids), dtype=torch.int64)
    keys[torch.as_tensor(order, dtype=torch.int64)] = torch.arange(len(doc_ids), dtype=torch.int64)
    return keys


def scores(queries: torch.Tensor, docs: torch.Tensor, similarity: str) -> torch.Tensor:
    """(Q, N) similarity, float32 rounded from float64: cosine (of the vectors as given: normalise
    first) or negative Euclidean distance."""
    q, d = queries.double(), docs.to(queries.device).double()
    if similarity == "cosine":
        return (q @ d.T).float()
    squared = (q * q).sum(1, keepdim=True) + (d * d).sum(1) - 2 * (q @ d.T)
    return (-squared.clamp_min(0).sqrt()).float()


def best(values: torch.Tensor, keys: torch.Tensor, k: int) -> torch.Tensor:
    """Positions (Q, k) of the k best entries of each row by (value desc, key desc), in no
    particular order. `keys` (Q, M) are distinct non-negative integers within a row."""
    k = min(k, values.shape[1])
    if k == 0:
        return torch.empty(values.shape[0], 0, dtype=torch.int64, device=values.device)
    kth = values.topk(k, dim=1).values[:, -1:]
    above = values > kth
    tied = values == kth
    # Every entry above the k-th value is kept (there are fewer than k); the tied ones compete on their key.
    rank = torch.where(above, keys.max() + 1, torch.where(tied, keys, torch.full_like(keys, -1)))
    return rank.topk(k, dim=1).indices


class RunningTopK:
    """The best `k` documents per query so far: (scores, keys, global indices), each (Q, <=k)."""

    def __init__(self, n_queries: int, k: int, device: torch.device | str = "cpu"):
        self.k = k
        self.scores = torch.empty(n_queries, 0, device=device)
        self.keys = torch.empty(n_queries, 0, dtype=torch.int64, device=device)
        self.index = torch.empty(n_queries, 0, dtype=torch.int64, device=device)

    def add(self, shard_scores: torch.Tensor, shard_keys: torch.Tensor, shard_index: torch.Tensor) -> None:
        """Merge a shard: its (Q, n) scores, and its documents' (n,) keys and global indices."""
        n_queries = shard_scores.shape[0]
        keys = shard_keys.to(shard_scores.device).expand(n_queries, -1)
        index = shard_index.to(shard_scores.device).expand(n_queries, -1)
        pick = best(shard_scores, keys, self.k)
        values = torch.cat([self.scores, shard_scores.gather(1, pick)], dim=1)
        keys = torch.cat([self.keys, keys.gather(1, pick)], dim=1)
        index = torch.cat([self.index, index.gather(1, pick)], dim=1)
        pick = best(values, keys, self.k)
        self.scores, self.keys, self.index = values.gather(1, pick), keys.gather(1, pick), index.gather(1, pick)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, global indices), each (Q, k), every row in trec_eval's order."""
        by_key = self.keys.argsort(dim=1, descending=True)
        values, index = self.scores.gather(1, by_key), self.index.gather(1, by_key)
        by_value = values.argsort(dim=1, descending=True, stable=True)  # stable: ties stay by key, descending
        return values.gather(1, by_value), index.gather(1, by_value)


def search(
    queries: torch.Tensor,
    shards: Iterable[torch.Tensor],
    keys: torch.Tensor,
    k: int,
    similarity: str = "cosine",
    *,
    query_chunk: int = 1024,
    doc_block: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-`k` of every query over the corpus given as consecutive shards of embeddings
    (a list, or a generator that loads them one at a time); `keys`: `doc_keys` of the whole
    corpus. Cosine normalises both sides. Scores are computed for `query_chunk` queries and
    `doc_block` documents at a time (float64: 128 MiB at the defaults), so memory is bounded by
    that and one shard. Returns (scores, global document indices), (Q, k)."""
    if similarity == "cosine":
        queries = torch.nn.functional.normalize(queries.float(), dim=-1)
    chunks = [RunningTopK(len(c), k, queries.device) for c in queries.split(query_chunk)]
    start = 0
    for shard in shards:
        shard = shard.to(queries.device).float()
        if similarity == "cosine":
            shard = torch.nn.functional.normalize(shard, dim=-1)
        for block in shard.split(doc_block):
            index = torch.arange(start, start + len(block), device=queries.device)
            block_keys = keys[start : start + len(block)]
            for running, q in zip(chunks, queries.split(query_chunk)):
                running.add(scores(q, block, similarity), block_keys, index)
            start += len(block)
    if start != len(keys):
        raise ValueError(f"the shards hold {start} documents, the corpus {len(keys)}")
    results = [r.result() for r in chunks]
    return torch.cat([s for s, _ in results]), torch.cat([i for _, i in results])
