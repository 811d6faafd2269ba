"""A BEIR corpus (`corpus.jsonl`) cut into shards of consecutive documents, read one shard at a
time, and the content hashes that key an embedding cache.

`plan` reads the corpus once, without keeping any text: each document's id (the search needs
every id: trec_eval breaks ties by id), the byte offset where every shard starts, and the
file's content hash (the embedding cache's key). A shard is
then read by seeking to its offset (`read`), so an encoder holds one shard's texts, never the
corpus (MS MARCO's 8.8M passages are ~3 GB of text). Malformed lines are one-line errors naming
the file and line.

With the model's (`trainables.models.sentence_encoder.model_hash`), the corpus's content hash
keys the embedding cache: a cached embedding is reused exactly when the same model weights meet
the same corpus, whatever the paths.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from trainables.data.retrieval import json_row

DOC_KEYS = ("_id", "text")


@dataclass(frozen=True)
class Shard:
    index: int
    start: int  # byte offset of its first line
    end: int  # byte offset after its last line
    count: int  # documents


@dataclass
class CorpusPlan:
    path: Path
    ids: list[str]  # every document id, in file order
    shards: list[Shard]
    digest: str  # sha256 of the file's bytes, read in the same pass


def _text(row: dict) -> str:
    """A BEIR document as one text: "title text" (text alone without a title), as `load_beir`."""
    return f"{row['title']} {row['text']}" if row.get("title") else row["text"]


def plan(corpus: str | Path, shard_size: int) -> CorpusPlan:
    """Every document id and the shards of `shard_size` consecutive documents."""
    path = Path(corpus)
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    ids: list[str] = []
    shards: list[Shard] = []
    start = offset = 0
    count = 0
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            digest.update(line)
            if line.strip():
                ids.append(json_row(line, f"{path}:{number}", DOC_KEYS)["_id"])
                count += 1
            offset += len(line)
            if count == shard_size:
                shards.append(Shard(len(shards), start, offset, count))
                start, count = offset, 0
    if count:
        shards.append(Shard(len(shards), start, offset, count))
    if not ids:
        raise ValueError(f"{path}: no documents")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: document ids repeat ({len(ids) - len(set(ids))} duplicates)")
    return CorpusPlan(path, ids, shards, digest.hexdigest())


def read(corpus: str | Path, shard: Shard) -> tuple[list[str], list[str]]:
    """(ids, texts) of one shard."""
    path = Path(corpus)
    with open(path, "rb") as f:
        f.seek(shard.start)
        block = f.read(shard.end - shard.start)
    rows = [json_row(line, f"{path} (shard {shard.index})", DOC_KEYS) for line in block.splitlines() if line.strip()]
    return [r["_id"] for r in rows], [_text(r) for r in rows]
