"""`eval-retrieval --model PATH... --beir DIR...`: score sentence-transformers models on BEIR
folders, outside any study: one row per model x dataset (NDCG@10, Recall@100, MRR@10, isotropy)
and the mean per model, written as `retrieval.md` / `retrieval.csv`, plus one TREC run file per
model x dataset (`runs/<model>__<dataset>.trec`, top 100) that any external tool can re-score.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from rich.console import Console

from orchestrator.errors import Problem, UserError

COLUMNS = ("ndcg@10", "recall@100", "mrr@10", "isotropy_cosine", "isotropy_partition", "queries")


def _name(path: str) -> str:
    p = Path(path)
    parts = [x for x in (p.parent.name, p.name) if x]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts[-2:]))


def evaluate(
    models: list[str],
    datasets: list[str],
    out: Path,
    console: Console,
    *,
    split: str = "test",
    similarity: str = "cosine",
    batch_size: int = 64,
    sample: int = 1000,
) -> pd.DataFrame:
    """Score every model on every dataset; writes the tables and run files into `out`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from trainables.configs.beir_names import distinct_names
    from trainables.data.retrieval import load_beir
    from trainables.metrics.retrieval import dataset_name, evaluate_beir, write_trec_run
    from trainables.models.sentence_encoder import load_base

    if similarity not in ("cosine", "euclidean"):
        raise UserError(Problem("--similarity", f"expected cosine or euclidean, got {similarity!r}"))
    clash = distinct_names(datasets)
    if clash:
        raise UserError(Problem("--beir", clash))
    names = [_name(m) for m in models]
    if len(set(names)) < len(names):
        raise UserError(Problem("--model", f"two models would share run files named {names}; give distinct folders"))
    loaded = {}
    for source in datasets:
        try:
            loaded[source] = load_beir(source, split)
        except ValueError as exc:
            raise UserError(Problem("--beir", str(exc))) from None
    (out / "runs").mkdir(parents=True, exist_ok=True)
    rows = []
    for model_path in models:
        try:
            model = load_base(model_path, "cuda" if _cuda() else "cpu")
        except ValueError as exc:
            raise UserError(Problem("--model", str(exc))) from None
        for source, dataset in loaded.items():
            metrics, run = evaluate_beir(model, dataset, similarity, batch_size=batch_size, sample=sample)
            name = f"{_name(model_path)}__{dataset_name(source)}"
            write_trec_run(out / "runs" / f"{name}.trec", run, _name(model_path))
            rows.append({"model": model_path, "dataset": dataset_name(source), **{k: metrics[k] for k in COLUMNS}})
            console.print(
                f"{model_path} on {dataset_name(source)}: NDCG@10 {metrics['ndcg@10']:.4f}, "
                f"Recall@100 {metrics['recall@100']:.4f}, MRR@10 {metrics['mrr@10']:.4f}, "
                f"isotropy {metrics['isotropy_cosine']:.3f}"
            )
    table = pd.DataFrame(rows)
    means = table.groupby("model", sort=False)[list(COLUMNS[:-1])].mean().reset_index().assign(dataset="(mean)")
    table = pd.concat([table, means], ignore_index=True)
    tmp = out / "retrieval.csv.tmp"
    table.to_csv(tmp, index=False)
    tmp.replace(out / "retrieval.csv")
    from orchestrator.analysis.trials_table import to_markdown

    md = to_markdown(table, list(table.columns))
    (out / "retrieval.md").write_text(f"# Retrieval ({similarity}, split {split})\n\n{md}\n")
    console.print(f"tables: {out / 'retrieval.md'} (.csv); run files: {out / 'runs'}")
    return table


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
