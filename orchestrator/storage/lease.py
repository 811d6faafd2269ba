"""Who is running a study now: a lease in its folder (`_orchestrator/lease.json`: host, pid, when
it was renewed) that the driver holds while it runs and renews every 30 s from a thread of its
own, whatever its trials do (`orchestrator/execution/lease.py`).

Why a lease and not the live status: `status.json` is written on trial events only, so a stage
whose trials report rarely (long epochs, one evaluation report per dataset) looks idle while it
runs, and `gc` would delete checkpoints under it. A lease is held if it was renewed within
`TTL_S` and its holder is not known to be dead: on the same host, its pid must still exist (a
driver killed with SIGKILL leaves its lease behind; `resume` right after must not wait for it
to expire; and it must be the same process, by its start time, not one that reused the pid);
from another host, only the renewal time can tell.
"""

from __future__ import annotations

import json
import os
import socket
import time

from orchestrator.storage.records import STATE_DIR
from orchestrator.storage.store import Store

LEASE_FILE = "lease.json"
RENEW_S = 30.0
TTL_S = 120.0


def read_lease(store: Store) -> dict | None:
    if not store.exists(STATE_DIR, LEASE_FILE):
        return None
    try:
        return json.loads(store.read_text(STATE_DIR, LEASE_FILE))
    except ValueError:  # a lease cut short by a crash mid-write: held by no one
        return None


def _process_started_at(pid: int) -> float | None:
    """When process `pid` of this host started, or None if there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # exists, owned by someone else
        return -1.0


def _alive(pid: int, started_at: float | None) -> bool:
    """Whether the lease's driver process still runs: its pid exists and, when the lease says
    when that process started, it is the same process (not a new one that reused the pid)."""
    now_started = _process_started_at(pid)
    if now_started is None:
        return False
    return started_at is None or now_started < 0 or abs(now_started - started_at) < 2.0


def holder(store: Store) -> str | None:
    """`pid 123 on host h (renewed 12 s ago)` when a driver other than this process holds the
    study's lease now, else None."""
    lease = read_lease(store)
    if not lease:
        return None
    age = time.time() - float(lease.get("renewed_at", 0))
    host, pid = lease.get("host"), int(lease.get("pid", -1))
    if age >= TTL_S:
        return None
    if host == socket.gethostname() and (pid == os.getpid() or not _alive(pid, lease.get("process_started_at"))):
        return None
    return f"pid {pid} on host {host} (lease renewed {max(age, 0):.0f} s ago)"


def write_lease(store: Store, token: str, started_at: float) -> None:
    data = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_started_at": _process_started_at(os.getpid()),
        "token": token,
        "started_at": started_at,
        "renewed_at": time.time(),
    }
    store.write_text(json.dumps(data, indent=1), STATE_DIR, LEASE_FILE, retry=False)
