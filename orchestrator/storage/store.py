"""Study storage on local disk or S3, through pyarrow's filesystem layer (the one Ray uses).

Credentials are never handled here: pyarrow / boto3 read them from the environment, the AWS
profile or the instance role. Only the endpoint may be overridden (`AWS_ENDPOINT_URL`), for
MinIO-style stores and tests. Transient errors are retried (`trainables.runtime.retries`, shared
with the trials, which upload their checkpoints through Ray).
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from trainables.runtime.retries import RETRY_DELAYS_S, with_retries


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _s3_filesystem() -> pafs.S3FileSystem:
    kwargs = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Map a storage URI or local path to (filesystem, path without scheme)."""
    if uri.startswith("s3://"):
        return _s3_filesystem(), uri[len("s3://") :].rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if is_remote(uri):
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


@dataclass
class Store:
    """A folder in storage: the root of one study (or of all studies)."""

    uri: str

    def __post_init__(self) -> None:
        self.fs, self.root = resolve(self.uri)
        if not is_remote(self.uri):
            self.uri = self.root

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def _delays(self) -> tuple:
        # A local disk error (permissions, full disk) does not go away by waiting.
        return () if self.local else RETRY_DELAYS_S

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def child_uri(self, *parts: str) -> str:
        base = self.uri.rstrip("/")
        return "/".join([base, *parts]) if parts else base

    def child(self, *parts: str) -> Store:
        return Store(self.child_uri(*parts))

    def exists(self, *parts: str) -> bool:
        info = with_retries(
            f"checking {self.child_uri(*parts)}", lambda: self.fs.get_file_info(self.path(*parts)), self._delays
        )
        return info.type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path(*parts)) as f:
                return f.read()

        return with_retries(f"reading {self.child_uri(*parts)}", read, self._delays)

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode("utf-8")

    def write_bytes(self, data: bytes, *parts: str, retry: bool = True) -> None:
        """Write atomically: a reader sees the old content or the new one, never a truncated file.

        Locally through a temporary file and rename; on S3 a PUT is atomic already. Transient
        errors are retried (see `with_retries`) unless `retry=False` (advisory files, such as
        the live status, that the next write replaces anyway).
        """
        delays = self._delays if retry else ()
        with_retries(f"writing {self.child_uri(*parts)}", lambda: self._write(data, parts), delays)

    def _write(self, data: bytes, parts: tuple) -> None:
        target = self.path(*parts)
        if self.local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            return
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        with self.fs.open_output_stream(target) as f:
            f.write(data)

    def write_text(self, text: str, *parts: str, retry: bool = True) -> None:
        self.write_bytes(text.encode("utf-8"), *parts, retry=retry)

    def list_dirs(self, *parts: str) -> list[str]:
        """Names of the sub-folders of a folder (empty if it does not exist)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True, recursive=False)
        return sorted(
            posixpath.basename(info.path)
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory
        )

    def ray_storage(self) -> tuple[str, pafs.FileSystem | None]:
        """(storage_path, storage_filesystem) for `ray.tune.RunConfig`."""
        if self.local:
            return self.root, None
        return self.root, self.fs
