"""The driver's lease on its study folder while it runs (what it is, and who reads it:
`orchestrator/storage/lease.py`): taken at the start of `run`/`resume` (refused in one line when
another live driver holds it: two drivers would write the same trials and records), renewed
every 30 s by a daemon thread, dropped at the end, whatever the end."""

from __future__ import annotations

import threading
import time
import uuid

from pyarrow import ArrowException
from rich.console import Console

from orchestrator.errors import Problem, UserError
from orchestrator.storage.lease import LEASE_FILE, RENEW_S, holder, read_lease, write_lease
from orchestrator.storage.records import STATE_DIR
from orchestrator.storage.store import Store


def refuse_if_held(store: Store) -> None:
    """A one-line error when another driver is running this study now."""
    other = holder(store)
    if other:
        raise UserError(
            Problem(store.uri, f"this study is being run by another driver, {other}; wait for it to end or stop it")
        )


class DriverLease:
    """Held from `acquire()` to `release()`; renewed every `renew_s` in between."""

    def __init__(self, store: Store, console: Console, renew_s: float = RENEW_S):
        self.store, self.console, self.renew_s = store, console, renew_s
        self.token = uuid.uuid4().hex
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def acquire(self) -> None:
        refuse_if_held(self.store)
        self._renew()
        self._thread = threading.Thread(target=self._run, name="study-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        try:
            write_lease(self.store, self.token, self.started_at)
        except (OSError, ArrowException) as exc:  # an outage: the next renewal tries again
            if not self._warned:
                self._warned = True
                self.console.print(
                    f"[yellow]warning[/]: the study's lease was not renewed ({' '.join(str(exc).split())[:120]})"
                )

    def _run(self) -> None:
        while not self._stop.wait(self.renew_s):
            self._renew()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            lease = read_lease(self.store)
            if lease and lease.get("token") == self.token:
                self.store.fs.delete_file(self.store.path(STATE_DIR, LEASE_FILE))
        except (OSError, ArrowException) as exc:  # left behind: it expires, and its pid is gone
            self.console.print(f"[yellow]warning[/]: the study's lease was not removed ({exc})")
