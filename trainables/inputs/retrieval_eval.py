"""The inputs of `retrieval_eval` before a run: every BEIR folder's queries, qrels and corpus
lines (ids and JSON only; a malformed line is a one-line error naming file and line);
`preflight` shrinks the run."""

from __future__ import annotations

import os
from pathlib import Path

from trainables.configs.contrastive_isotropy import OFFLINE_MINILM
from trainables.configs.retrieval_eval import Config
from trainables.data import corpus_shards
from trainables.data.retrieval import load_queries_and_qrels
from trainables.inputs.model_folders import check_source

CHECK_FIELDS = ("split", "shard_size")


def preflight(config: dict, workdir) -> dict:
    """Overrides for `orchestrator preflight`: small synthetic stand-ins for BEIR folders that are
    not on this machine, the offline MiniLM for a hub model, no Ray Data actors."""
    model = config.get("model", OFFLINE_MINILM)
    local = model == OFFLINE_MINILM or Path(str(model)).exists()
    return {
        "beir": [  # one small synthetic folder of its own for each folder not on this machine
            f"synthetic:beir?docs=30&queries=5&seed={i}"
            if str(b).startswith("synthetic:") or not Path(b).exists()
            else b
            for i, b in enumerate(config.get("beir", []))
        ],
        "model": model if local else OFFLINE_MINILM,
        "encode_workers": 0,
        "isotropy_sample": 20,
        "cache": str(Path(workdir) / "embeddings"),
    }


def check(cfg: Config) -> str | None:
    """The model (`model_folders.check_source`), every BEIR folder's queries, qrels and corpus
    lines (ValueError naming the file and line); a note when the model cannot be checked here."""
    note = check_source(cfg.model, "model")
    if cfg.cache and "://" not in cfg.cache:
        _check_writable(Path(cfg.cache))
    for source in cfg.beir:
        try:
            folder, _, _ = load_queries_and_qrels(source, cfg.split)
            corpus_shards.plan(folder / "corpus.jsonl", cfg.shard_size)
        except ValueError as exc:
            exc.field = "beir"  # type: ignore[attr-defined]
            raise
    return note


def _check_writable(folder: Path) -> None:
    """The embedding cache's folder can be created and written here (its nearest existing
    ancestor is a writable folder): else every trial would fail after Ray started."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        error = ValueError(
            f"{folder}: the embedding cache cannot be written here ({existing} is not a writable folder)"
        )
        error.field = "cache"  # type: ignore[attr-defined]
        raise error
