"""Retrieval evaluation of one sentence-transformers model on BEIR folders, at any corpus size:
the evaluation stage of a study (`${train.all.checkpoint}` gives one trial per trained model).

For each dataset: the corpus is planned into shards of `shard_size` documents
(`trainables/data/corpus_shards.py`); the shards missing from the embedding cache are encoded,
in this process or by `encode_workers` Ray Data actors over the cluster
(`trainables/models/corpus_encoding.py`); the queries are encoded here; the exact top-`depth`
documents of every query are found by streaming the cached shards through a running top-k
(`trainables/metrics/topk.py`: memory bounded by one shard, ties broken as trec_eval does);
then NDCG@10, Recall@100, MRR@10 (`trainables/metrics/retrieval.py`), the isotropy of a
seeded sample of corpus embeddings, and a TREC run file (`runs/<dataset>.trec`, re-scorable by
any tool).

Metrics, in one report per dataset (each with every dataset so far): `final/<dataset>/<metric>`,
and in the last report their means over all datasets, `final/<metric>` (the shape of
`contrastive_isotropy`'s own evaluation, so `results` and `report` tables compare them). The
means are in the last report only: a mean over the first datasets is another number, and a
stage that selects on `final/ndcg@10` must not pick it as a trial's best. A checkpoint after
each dataset holds the scores so far: a retried trial skips the datasets it has and, inside the
interrupted one, re-encodes only the shards the cache lacks.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from trainables.configs.retrieval_eval import Config
from trainables.data import corpus_shards
from trainables.data.retrieval import load_queries_and_qrels
from trainables.metrics import topk
from trainables.metrics.retrieval import METRICS, dataset_name, evaluate_run, isotropy, write_trec_run
from trainables.models.corpus_encoding import cache_key, encode_missing
from trainables.models.sentence_encoder import load_encoder, model_hash, resolve_precision
from trainables.runtime import checkpoints
from trainables.runtime.embedding_cache import EmbeddingCache
from trainables.runtime.reproducibility import start_trial
from trainables.runtime.session import Session, write_json

SUMMARY = (*METRICS, "isotropy_cosine", "isotropy_partition")


def train(config: dict, session: Session | None = None) -> dict:
    """Evaluate the model on every dataset; returns the last report's metrics."""
    cfg = Config.model_validate(config)
    session, device = start_trial(cfg, session)
    state = session.restore_state() or {"done": {}}
    done: dict[str, dict] = state["done"]
    (session.artifact_dir / "runs").mkdir(exist_ok=True)
    model = None
    datasets = len(cfg.beir)  # distinct names (Config)
    metrics: dict = _summary(done, datasets)
    for number, source in enumerate(cfg.beir, 1):
        name = dataset_name(source)
        if name in done:
            continue
        if model is None:  # the query encoder, loaded once (the corpus may be encoded elsewhere)
            model = load_encoder(cfg.model, device, cfg.precision, cfg.max_seq_length)
            model_digest = model_hash(cfg.model)  # once: hashing a model folder reads all its weights
        done[name] = evaluate(model, model_digest, source, cfg, (session.artifact_dir, device))
        metrics = {"dataset": number, **_summary(done, datasets)}
        with tempfile.TemporaryDirectory() as tmp:
            checkpoints.save({"done": done, "config": cfg.model_dump()}, Path(tmp) / checkpoints.STATE_FILE)
            session.report(metrics, checkpoint_dir=tmp)
    write_json(
        {**session.context, "trainable": "retrieval_eval", "config": cfg.model_dump(), "datasets": done},
        session.artifact_dir / "metadata.json",
    )
    return metrics


def evaluate(model, model_digest: str, source: str, cfg: Config, where: tuple[Path, torch.device]) -> dict:
    """One BEIR dataset: encode (cached), search, score; writes `runs/<dataset>.trec` in the trial
    folder. `where`: (trial folder, this process's device)."""
    folder, device = where
    t0 = time.perf_counter()
    path, queries, qrels = load_queries_and_qrels(source, cfg.split)
    plan = corpus_shards.plan(path / "corpus.jsonl", cfg.shard_size)
    settings = _encoding_settings(cfg, device)
    key = cache_key(model_digest, plan.digest, {k: settings[k] for k in ("precision", "max_seq_length", "shard_size")})
    cache = EmbeddingCache(cfg.cache or str(folder / "embeddings"), key)
    name = dataset_name(source)
    todo = cache.missing(plan.shards)  # one listing of the cache: said here, encoded below
    print(f"{name}: {len(plan.ids):,} documents in {len(plan.shards)} shards, {len(todo)} to encode", flush=True)
    encoded = encode_missing(
        cfg.model,
        plan,
        cache,
        settings,
        todo=todo,
        workers=cfg.encode_workers,
        worker_resources={"cpu": cfg.worker_cpus, "gpu": cfg.worker_gpus},
        on_shard=lambda i, n: print(f"{name}: shard {i} encoded ({n:,} documents)", flush=True),
        loaded=model,
    )
    encode_s = time.perf_counter() - t0
    qids = [q for q in queries if q in qrels]
    with torch.inference_mode():
        q_emb = model.encode(
            [queries[q] for q in qids], batch_size=cfg.batch_size, convert_to_tensor=True, show_progress_bar=False
        ).float()
    gen = torch.Generator().manual_seed(cfg.seed)
    pick = torch.randperm(len(plan.ids), generator=gen)[: cfg.isotropy_sample].sort().values
    sampled: list[torch.Tensor] = []
    scores, index = topk.search(
        q_emb.to(device),
        _shards(cache, plan, pick, sampled),
        topk.doc_keys(plan.ids),
        cfg.depth,
        cfg.similarity,
        query_chunk=cfg.query_chunk,
    )
    run = {
        q: {plan.ids[j]: s for s, j in zip(srow.tolist(), irow.tolist())}
        for q, srow, irow in zip(qids, scores.cpu(), index.cpu())
    }
    out = evaluate_run(run, qrels)
    out.update(isotropy(torch.cat(sampled)))
    write_trec_run(folder / "runs" / f"{name}.trec", run, "retrieval_eval", cfg.depth)
    out.update(
        {
            "documents": len(plan.ids),
            "shards": len(plan.shards),
            "shards_encoded": encoded,
            "encode_s": encode_s,
            "total_s": time.perf_counter() - t0,
        }
    )
    return out


def _shards(cache: EmbeddingCache, plan, pick: torch.Tensor, sampled: list):
    """The cached shards in corpus order, one at a time (checking that each holds the documents
    the plan expects); the rows of `pick` (global indices) are kept in `sampled` on the way."""
    start = 0
    for shard in plan.shards:
        ids, embeddings = cache.read(shard.index)
        if ids != plan.ids[start : start + shard.count]:
            raise ValueError(f"{cache.path(shard.index)}: holds other documents than the corpus's shard {shard.index}")
        local = pick[(pick >= start) & (pick < start + shard.count)] - start
        sampled.append(embeddings[local].float().cpu())
        yield embeddings
        start += shard.count


def _encoding_settings(cfg: Config, device: torch.device) -> dict:
    """How the corpus is encoded. Precision, truncation and the shard layout are part of the
    cache key (the batch size is not: it changes the embeddings by rounding only). `auto`
    precision is resolved for where the encoding runs: actors with GPUs, or this process."""
    on_gpu = cfg.worker_gpus > 0 if cfg.encode_workers > 0 else device.type == "cuda"
    return {
        "precision": resolve_precision(cfg.precision, torch.device("cuda" if on_gpu else "cpu")),
        "max_seq_length": cfg.max_seq_length,
        "shard_size": cfg.shard_size,
        "batch_size": cfg.batch_size,
    }


def _summary(done: dict[str, dict], datasets: int) -> dict:
    """Every finished dataset's scores; the means over datasets once all `datasets` are done."""
    out: dict = {}
    for name, m in done.items():
        out.update({f"final/{name}/{k}": v for k, v in m.items() if k in SUMMARY or k in ("documents", "encode_s")})
    if done and len(done) == datasets:
        out.update({f"final/{k}": sum(m[k] for m in done.values()) / len(done) for k in SUMMARY})
    return out
