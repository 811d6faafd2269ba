"""Study storage on local disk or S3, through pyarrow's filesystem layer (the one Ray uses).

Credentials are never handled here: pyarrow / boto3 read them from the environment, the AWS
profile or the instance role. Only the endpoint may be overridden (`AWS_ENDPOINT_URL`), for
MinIO-style stores and tests.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

log = logging.getLogger(__name__)
T = TypeVar("T")
# A storage outage (S3 unreachable, throttling) is waited out with exponential backoff for
# about two minutes before an operation gives up: long enough for a restarted endpoint or a
# network blip, short enough that a dead bucket is reported while someone is watching.
RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 15, 30, 30, 30)


# Errors that waiting does not fix (pyarrow's S3 messages name the AWS error, by name or by its
# aws-sdk-cpp code: 3 invalid client token, 8 missing token, 15 access denied, 17 unrecognised
# client, 21/22 bad signature, 23 invalid access key; and buckets that do not exist): retrying
# them for two minutes only delays the one-line error the user needs.
PERMANENT = re.compile(
    r"ACCESS_DENIED|AccessDenied|NO_SUCH_BUCKET|NoSuchBucket|Bucket '[^']*' not found|bucket does not exist"
    r"|INVALID_ACCESS_KEY_ID|InvalidAccessKeyId|SIGNATURE_DOES_NOT_MATCH|SignatureDoesNotMatch"
    r"|INVALID_CLIENT_TOKEN_ID|UNRECOGNIZED_CLIENT|MISSING_AUTHENTICATION_TOKEN|\[code (3|8|15|17|21|22|23)\]"
    r"|HTTP status 40[13]\b", re.I)


def permanent(exc: BaseException) -> bool:
    """Whether a storage error is one that no retry can fix (credentials, permissions, bucket)."""
    return isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) or \
        bool(PERMANENT.search(str(exc)))


def with_retries(what: str, fn: Callable[[], T], delays: tuple = RETRY_DELAYS_S) -> T:
    """Call `fn`, retrying transient storage errors (I/O, network) with backoff; a permanent
    one (see `permanent`) is raised at once."""
    for attempt, delay in enumerate((*delays, None)):
        try:
            return fn()
        except (OSError, pa.ArrowException) as exc:
            if delay is None or permanent(exc):
                raise
            log.warning("storage: %s failed (%s); retry %d in %.1fs", what, " ".join(str(exc).split())[:200],
                        attempt + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


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
        return _s3_filesystem(), uri[len("s3://"):].rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
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

    def child(self, *parts: str) -> "Store":
        return Store(self.child_uri(*parts))

    def exists(self, *parts: str) -> bool:
        info = with_retries(f"checking {self.child_uri(*parts)}", lambda: self.fs.get_file_info(self.path(*parts)),
                            self._delays)
        return info.type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path(*parts)) as f:
                return f.read()

        return with_retries(f"reading {self.child_uri(*parts)}", read, self._delays)

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode("utf-8")

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write atomically: a reader sees the old content or the new one, never a truncated file.

        Locally through a temporary file and rename; on S3 a PUT is atomic already. Transient
        errors are retried (see `with_retries`).
        """
        with_retries(f"writing {self.child_uri(*parts)}", lambda: self._write(data, parts), self._delays)

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

    def write_text(self, text: str, *parts: str) -> None:
        self.write_bytes(text.encode("utf-8"), *parts)

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
