"""Retrieval evaluation with trec_eval semantics: exact search, metrics, TREC run files, isotropy
scores, and a sentence-transformers model scored on a BEIR dataset (`evaluate_beir`).

- Ranking of a query's documents: score descending, ties by document id descending (what
  trec_eval does), so our numbers and `pytrec_eval`'s agree on the same run; the top-k cut
  follows the same order (`topk.py`), so which of the documents tied at the 100th score make
  the run file does not depend on the kernel or on how the corpus was split.
- NDCG@k: DCG = sum_{i<=k} g_i / log2(i + 1) with the *graded* gain g = the qrels relevance
  (trec_eval's linear gain), over the ideal DCG of the query's judged documents sorted by
  relevance. Recall@k: relevant (relevance > 0) documents in the top k / all relevant ones.
  MRR@k: 1 / rank of the first relevant document in the top k (0 if none).
- Averages are over the queries that have a run and at least one judged document (as
  pytrec_eval / trec_eval report them).
- Isotropy: `1 - mean pairwise cosine` over distinct pairs of a sample of embeddings, and the
  partition-function ratio I = min_c Z(c) / max_c Z(c), Z(c) = sum_i exp(c . w_i), over the
  eigenvectors c of W^T W (Mu & Viswanath 2018); both 1 for perfectly isotropic embeddings.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from trainables.configs.beir_names import dataset_name
from trainables.data.retrieval import BeirDataset
from trainables.metrics import topk

METRICS = ("ndcg@10", "recall@100", "mrr@10")
__all__ = ["METRICS", "dataset_name", "evaluate_beir", "evaluate_run", "isotropy", "write_trec_run"]


def _ranked(scores: dict[str, float]) -> list[str]:
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def query_metrics(run: dict[str, float], qrels: dict[str, int]) -> dict[str, float]:
    ranked = _ranked(run)
    relevant = {d for d, r in qrels.items() if r > 0}
    gains = [qrels.get(d, 0) for d in ranked[:10]]
    dcg = sum(max(g, 0) / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted((r for r in qrels.values() if r > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    first = next((i for i, d in enumerate(ranked[:10]) if d in relevant), None)
    return {
        "ndcg@10": dcg / idcg if idcg > 0 else 0.0,
        "recall@100": len(relevant & set(ranked[:100])) / len(relevant) if relevant else 0.0,
        "mrr@10": 1.0 / (first + 1) if first is not None else 0.0,
    }


def evaluate_run(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean of each metric over the queries judged in `qrels` that the run has."""
    per_query = [query_metrics(run[q], qrels[q]) for q in qrels if q in run and qrels[q]]
    if not per_query:
        return {m: float("nan") for m in METRICS} | {"queries": 0}
    return {m: float(np.mean([p[m] for p in per_query])) for m in METRICS} | {"queries": len(per_query)}


def write_trec_run(path: Path, run: dict[str, dict[str, float]], tag: str, depth: int = 100) -> None:
    """`qid Q0 docid rank score tag`, top `depth` per query (the standard TREC run format).

    Scores are written with 17 significant digits (`repr` of the float: exact for float64, and so
    for the float32 scores of `topk`): trec_eval re-sorts a run by its scores, so scores rounded
    to 6 decimals would turn near-ties into ties and let it reorder them by document id."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        for qid in sorted(run):
            for rank, doc in enumerate(_ranked(run[qid])[:depth], 1):
                f.write(f"{qid} Q0 {doc} {rank} {float(run[qid][doc])!r} {tag}\n")
    tmp.replace(path)


def isotropy(emb: torch.Tensor) -> dict[str, float]:
    """1 - mean pairwise cosine (distinct pairs) and the partition-function ratio."""
    w = emb.double()
    u = torch.nn.functional.normalize(w, dim=-1)
    n = len(u)
    total = u.sum(0)
    mean_cos = float((total @ total - (u * u).sum()) / (n * (n - 1))) if n > 1 else float("nan")
    _, vecs = torch.linalg.eigh(w.T @ w)
    z = torch.logsumexp(w @ vecs, dim=0)  # log Z(c) for each eigenvector c
    return {"isotropy_cosine": 1.0 - mean_cos, "isotropy_partition": float(torch.exp(z.min() - z.max()))}


def evaluate_beir(
    model, dataset: BeirDataset, similarity_kind: str, *, batch_size: int, sample: int, seed: int = 0, depth: int = 100
) -> tuple[dict, dict]:
    """Encode corpus and queries (SentenceTransformer.encode), exact top-`depth` search, metrics
    and isotropy of a seeded sample of corpus embeddings. Returns (metrics, run)."""
    doc_ids, qids = list(dataset.corpus), [q for q in dataset.queries if q in dataset.qrels]
    docs = model.encode(
        [dataset.corpus[d] for d in doc_ids], batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
    )
    queries = model.encode(
        [dataset.queries[q] for q in qids], batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
    )
    scores, idx = topk.search(queries, [docs], topk.doc_keys(doc_ids), depth, similarity_kind)
    run = {
        q: {doc_ids[j]: float(s) for s, j in zip(srow.tolist(), irow.tolist())}
        for q, srow, irow in zip(qids, scores, idx)
    }
    metrics = evaluate_run(run, dataset.qrels)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(docs), generator=gen)[:sample]
    metrics.update(isotropy(docs[pick.to(docs.device)].float().cpu()))
    return metrics, run
