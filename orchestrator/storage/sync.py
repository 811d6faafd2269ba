"""`sync SRC DST`: copy a study folder between storages (S3 <-> local), verified by checksum.

Every file is read from SRC, written to DST (atomically, with retries), read back from DST and
compared by size and SHA-256. Files already at DST with the same checksum are skipped, so an
interrupted sync can simply be run again.
"""

from __future__ import annotations

import hashlib
import posixpath

import pyarrow.fs as pafs
from rich.console import Console

from orchestrator.errors import Problem, UserError
from orchestrator.storage.store import Store
from trainables.runtime.retries import with_retries


def _files(store: Store) -> list[tuple[str, int]]:
    selector = pafs.FileSelector(store.root, allow_not_found=True, recursive=True)
    infos = with_retries(f"listing {store.uri}", lambda: store.fs.get_file_info(selector))
    return sorted((posixpath.relpath(i.path, store.root), i.size) for i in infos if i.type == pafs.FileType.File)


def sync(src_uri: str, dst_uri: str, console: Console) -> tuple[int, int, int]:
    """Copy; returns (files copied, files already in place, bytes copied)."""
    src, dst = Store(src_uri), Store(dst_uri)
    if not src.exists():
        raise UserError(Problem(src_uri, "nothing here to sync"))
    if src.fs.type_name == dst.fs.type_name and (dst.root + "/").startswith(src.root.rstrip("/") + "/"):
        raise UserError(Problem(dst_uri, f"destination is inside the source {src_uri}"))
    existing = dict(_files(dst)) if dst.exists() else {}
    copied = skipped = nbytes = 0
    for rel, size in _files(src):
        data = src.read_bytes(rel)
        digest = hashlib.sha256(data).hexdigest()
        if existing.get(rel) == size and hashlib.sha256(dst.read_bytes(rel)).hexdigest() == digest:
            skipped += 1
            continue
        dst.write_bytes(data, rel)
        back = dst.read_bytes(rel)
        if len(back) != len(data) or hashlib.sha256(back).hexdigest() != digest:
            raise UserError(
                Problem(
                    dst.child_uri(rel),
                    f"checksum mismatch after copy (storage returned {len(back)} bytes, expected {len(data)})",
                )
            )
        copied += 1
        nbytes += len(data)
    console.print(
        f"synced {src.uri} -> {dst.uri}: {copied} file(s) copied ({nbytes / 1e6:.1f} MB), "
        f"{skipped} already in place, all verified by SHA-256"
    )
    return copied, skipped, nbytes
