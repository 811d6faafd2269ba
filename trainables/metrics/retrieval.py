"""Retrieval evaluation with trec_eval semantics, BEIR folders, TREC run files, isotropy scores.

- Ranking of a query's documents: score descending, ties by document id descending (what
  trec_eval does), so our numbers and `pytrec_eval`'s agree on the same run.
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

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where tensors are searched: `validate` reads data files without it
    import torch

METRICS = ("ndcg@10", "recall@100", "mrr@10")


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
    return {"ndcg@10": dcg / idcg if idcg > 0 else 0.0,
            "recall@100": len(relevant & set(ranked[:100])) / len(relevant) if relevant else 0.0,
            "mrr@10": 1.0 / (first + 1) if first is not None else 0.0}


def evaluate_run(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean of each metric over the queries judged in `qrels` that the run has."""
    per_query = [query_metrics(run[q], qrels[q]) for q in qrels if q in run and qrels[q]]
    if not per_query:
        return {m: float("nan") for m in METRICS} | {"queries": 0}
    return {m: float(np.mean([p[m] for p in per_query])) for m in METRICS} | {"queries": len(per_query)}


# --- data ---------------------------------------------------------------------------------

@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, str]        # doc id -> "title text"
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if not isinstance(row.get(k), str)]
            if missing:
                raise ValueError(f"{path}:{i}: missing or non-string key(s) {', '.join(missing)}; "
                                 f"expected {', '.join(required)}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def load_triples(path: str | Path) -> list[tuple[str, str, str]]:
    """JSONL of {"query", "positive", "negative"} (or `synthetic:triples?...`); errors name the
    file and line."""
    if str(path).startswith("synthetic:"):
        from trainables.data.synthetic_text import triples_from_uri

        return triples_from_uri(str(path))
    return [(r["query"], r["positive"], r["negative"]) for r in _jsonl(Path(path), ("query", "positive", "negative"))]


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """A BEIR folder (or `synthetic:beir?...`); errors name the file and line."""
    if str(folder).startswith("synthetic:"):
        from trainables.data.synthetic_text import beir_folder

        name = str(folder)
        data = load_beir(beir_folder(name), split)
        return BeirDataset(name, data.corpus, data.queries, data.qrels)
    folder = Path(folder)
    corpus = {r["_id"]: (f"{r['title']} {r['text']}" if r.get("title") else r["text"])
              for r in _jsonl(folder / "corpus.jsonl", ("_id", "text"))}
    queries = {r["_id"]: r["text"] for r in _jsonl(folder / "queries.jsonl", ("_id", "text"))}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise ValueError(f"{qrels_path}: file not found (BEIR layout: qrels/<split>.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    with open(qrels_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ValueError(f"{qrels_path}:1: expected the header query-id, corpus-id, score")
        for i, row in enumerate(reader, 2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < 3:
                raise ValueError(f"{qrels_path}:{i}: expected 3 tab-separated columns")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except ValueError:
                raise ValueError(f"{qrels_path}:{i}: score {row[2]!r} is not an integer") from None
    # trec_eval semantics: a judged query without a text cannot be run and is not evaluated.
    qrels = {q: d for q, d in qrels.items() if q in queries}
    if not qrels:
        raise ValueError(f"{qrels_path}: no judged query id is in {folder / 'queries.jsonl'}")
    return BeirDataset(folder.name, corpus, queries, qrels)


# --- search and files ---------------------------------------------------------------------

def search(queries: torch.Tensor, docs: torch.Tensor, k: int, similarity: str = "cosine",
           chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k: (scores, indices), each (Q, k). cosine: dot of L2-normalised vectors;
    euclidean: negative L2 distance."""
    import torch

    k = min(k, len(docs))
    if similarity == "cosine":
        queries = torch.nn.functional.normalize(queries, dim=-1)
        docs = torch.nn.functional.normalize(docs, dim=-1)
    out_s, out_i = [], []
    for i in range(0, len(queries), chunk):
        q = queries[i:i + chunk]
        s = q @ docs.T if similarity == "cosine" else -torch.cdist(q, docs)
        top = s.topk(k, dim=-1)
        out_s.append(top.values)
        out_i.append(top.indices)
    return torch.cat(out_s), torch.cat(out_i)


def write_trec_run(path: Path, run: dict[str, dict[str, float]], tag: str, depth: int = 100) -> None:
    """`qid Q0 docid rank score tag`, top `depth` per query (the standard TREC run format)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        for qid in sorted(run):
            for rank, doc in enumerate(_ranked(run[qid])[:depth], 1):
                f.write(f"{qid} Q0 {doc} {rank} {run[qid][doc]:.6f} {tag}\n")
    tmp.replace(path)


def isotropy(emb: torch.Tensor) -> dict[str, float]:
    """1 - mean pairwise cosine (distinct pairs) and the partition-function ratio."""
    import torch

    w = emb.double()
    u = torch.nn.functional.normalize(w, dim=-1)
    n = len(u)
    total = u.sum(0)
    mean_cos = float((total @ total - (u * u).sum()) / (n * (n - 1))) if n > 1 else float("nan")
    _, vecs = torch.linalg.eigh(w.T @ w)
    z = torch.logsumexp(w @ vecs, dim=0)          # log Z(c) for each eigenvector c
    return {"isotropy_cosine": 1.0 - mean_cos, "isotropy_partition": float(torch.exp(z.min() - z.max()))}
