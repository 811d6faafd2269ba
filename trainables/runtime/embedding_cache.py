"""A cache of corpus embeddings, one file per shard of the corpus, in one folder per (model
weights, corpus, encoding settings): on local disk or any pyarrow filesystem URI (`s3://...`).

A shard file (`shard_00012.pt`: the shard's document ids and float32 embeddings) is written
whole (to a temporary name, then renamed; an S3 PUT is atomic), so what the cache holds is
complete, and an interrupted evaluation re-encodes only the shards that are missing. Loaded
with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import io
import os
import re

import pyarrow.fs as pafs
import torch

from trainables.data.corpus_shards import Shard
from trainables.runtime.retries import with_retries

# `shard_00012.pt`; from shard 100,000 on the number has six digits and more
SHARD_FILE = re.compile(r"^shard_(\d+)\.pt$")


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), os.path.abspath(root)


class EmbeddingCache:
    """Shards of one corpus encoded by one model with one setting, under `root/key`."""

    def __init__(self, root: str, key: str):
        self.root, self.key = root, key
        self.fs, base = _filesystem(root)
        self.folder = f"{base.rstrip('/')}/{key}"
        with_retries("creating the embedding cache", lambda: self.fs.create_dir(self.folder, recursive=True))

    def path(self, index: int) -> str:
        return f"{self.folder}/shard_{index:05d}.pt"

    def present(self) -> set[int]:
        selector = pafs.FileSelector(self.folder, allow_not_found=True)
        infos = with_retries("listing the embedding cache", lambda: self.fs.get_file_info(selector))
        matches = (SHARD_FILE.match(i.base_name) for i in infos if i.type == pafs.FileType.File)
        return {int(m.group(1)) for m in matches if m}

    def missing(self, shards: list[Shard]) -> list[Shard]:
        present = self.present()
        return [s for s in shards if s.index not in present]

    def write(self, index: int, ids: list[str], embeddings: torch.Tensor) -> None:
        buffer = io.BytesIO()
        torch.save({"ids": ids, "embeddings": embeddings.detach().float().cpu().contiguous()}, buffer)
        data = buffer.getvalue()
        target = self.path(index)
        temporary = f"{self.folder}/.tmp-{os.getpid()}-{index:05d}.pt"

        def put() -> None:
            if isinstance(self.fs, pafs.LocalFileSystem):
                with self.fs.open_output_stream(temporary) as out:
                    out.write(data)
                self.fs.move(temporary, target)
            else:  # object stores: a PUT is atomic
                with self.fs.open_output_stream(target) as out:
                    out.write(data)

        with_retries(f"writing {target}", put)

    def read(self, index: int) -> tuple[list[str], torch.Tensor]:
        def get() -> bytes:
            with self.fs.open_input_stream(self.path(index)) as f:
                return f.read()

        saved = torch.load(io.BytesIO(with_retries(f"reading {self.path(index)}", get)), weights_only=True)
        return saved["ids"], saved["embeddings"]
