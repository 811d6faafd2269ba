"""Retries of storage operations: a storage outage (S3 unreachable, throttling) is waited out
with exponential backoff; an error no wait can fix fails at once. Used by the trials (checkpoint
uploads through Ray, listing their checkpoints) and by the orchestrator's storage layer, which
imports it from here so that trainables never import the orchestrator."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa

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
    r"|HTTP status 40[13]\b",
    re.I,
)


def permanent(exc: BaseException) -> bool:
    """Whether a storage error is one that no retry can fix (credentials, permissions, bucket)."""
    return isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) or bool(
        PERMANENT.search(str(exc))
    )


def with_retries(what: str, fn: Callable[[], T], delays: tuple = RETRY_DELAYS_S) -> T:
    """Call `fn`, retrying transient storage errors (I/O, network) with backoff; a permanent
    one (see `permanent`) is raised at once."""
    for attempt, delay in enumerate((*delays, None)):
        try:
            return fn()
        except (OSError, pa.ArrowException) as exc:
            if delay is None or permanent(exc):
                raise
            log.warning(
                "storage: %s failed (%s); retry %d in %.1fs", what, " ".join(str(exc).split())[:200], attempt + 1, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
