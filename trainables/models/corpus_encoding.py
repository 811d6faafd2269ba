"""A corpus encoded shard by shard into an embedding cache (`trainables/runtime/embedding_cache.py`),
in this process or sharded over the cluster with Ray Data.

- `ShardEncoder`: loads the model once and encodes shards (`SentenceTransformer.encode`, which
  sorts each shard's texts by length so that batches carry little padding); bf16 on CUDA by
  default (`precision: auto`).
- `encode_missing`: the shards the cache lacks, either in this process (`workers: 0`) or as a
  Ray Dataset of shard descriptors mapped by a pool of `workers` `ShardEncoder` actors
  (`map_batches`), each with its share of a GPU or its CPUs: on an 8-GPU node eight actors
  encode eight shards at a time. Actors read their shard from the corpus file by byte range
  (`trainables/data/corpus_shards.py`) and write it to the cache themselves: nothing but shard
  numbers travels through the object store.

Why a dataset of shard descriptors rather than of texts: the shard is the unit of the cache and
of resumption; an actor that reads its own byte range keeps the driver free of the corpus, and
a shard's embeddings go straight to storage.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from trainables.data import corpus_shards
from trainables.data.corpus_shards import CorpusPlan, Shard
from trainables.models.sentence_encoder import load_encoder
from trainables.runtime.embedding_cache import EmbeddingCache


def cache_key(model_digest: str, corpus_digest: str, settings: dict) -> str:
    """The cache folder's name, from the model's content hash (`model_hash`), the corpus's
    (`CorpusPlan.digest`) and the encoding settings."""
    digest = hashlib.sha256()
    for part in (model_digest, corpus_digest, repr(sorted(settings.items()))):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:24]


class ShardEncoder:
    """Encodes shards of a corpus into a cache; constructed once per Ray Data actor (or once in
    this process), called with batches of shard descriptors."""

    def __init__(self, model: str, corpus: str, cache_root: str, cache_key: str, settings: dict, loaded=None):
        from trainables.runtime.reproducibility import pick_device

        self.corpus, self.settings = corpus, settings
        if loaded is None:
            device = pick_device(settings.get("device", "auto"))
            loaded = load_encoder(model, device, settings["precision"], settings.get("max_seq_length"))
        self.model = loaded
        self.cache = EmbeddingCache(cache_root, cache_key)

    def encode(self, shard: Shard) -> int:
        ids, texts = corpus_shards.read(self.corpus, shard)
        with torch.inference_mode():
            embeddings = self.model.encode(
                texts, batch_size=self.settings["batch_size"], convert_to_tensor=True, show_progress_bar=False
            )
        self.cache.write(shard.index, ids, embeddings)
        return len(ids)

    def __call__(self, batch: dict) -> dict:
        counts = [
            self.encode(Shard(int(i), int(s), int(e), int(c)))
            for i, s, e, c in zip(batch["index"], batch["start"], batch["end"], batch["count"])
        ]
        return {"index": np.asarray(batch["index"]), "count": np.asarray(counts)}


def encode_missing(
    model: str,
    plan: CorpusPlan,
    cache: EmbeddingCache,
    settings: dict,
    *,
    todo: list[Shard],
    workers: int = 0,
    worker_resources: dict | None = None,
    on_shard=None,
    loaded=None,
) -> int:
    """Encode the shards `todo` of `plan` (those `cache.missing` found) into `cache`; returns how
    many were encoded. `workers: 0` encodes in this process (with `loaded`, the model already
    loaded here, if given); N > 0 runs N Ray Data actors with `worker_resources` ({"cpu": c,
    "gpu": g} each). `on_shard(index, documents)` is called as each one lands."""
    if not todo:
        return 0
    if workers <= 0:
        encoder = ShardEncoder(model, str(plan.path), cache.root, cache.key, settings, loaded)
        for shard in todo:
            count = encoder.encode(shard)
            if on_shard:
                on_shard(shard.index, count)
        return len(todo)
    import ray

    resources = worker_resources or {}
    items = [{"index": s.index, "start": s.start, "end": s.end, "count": s.count} for s in todo]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardEncoder,
        fn_constructor_args=(model, str(plan.path), cache.root, cache.key, settings),
        batch_size=1,
        concurrency=min(workers, len(items)),
        num_cpus=resources.get("cpu", 1),
        num_gpus=resources.get("gpu", 0),
    )
    for row in dataset.iter_rows():
        if on_shard:
            on_shard(int(row["index"]), int(row["count"]))
    return len(todo)
