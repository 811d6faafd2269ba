"""Live state of a running study, for `status` and the dashboard: trials by state per stage,
written (throttled) to `_orchestrator/status.json`, and the study's Prometheus gauges."""

from __future__ import annotations

import json
import time

from pyarrow import ArrowException
from rich.console import Console

from orchestrator.execution.gauges import study_metrics
from orchestrator.storage.records import STATE_DIR, status_counts
from orchestrator.storage.store import Store


class StudyStatus:
    """Live state of the whole study, written (throttled) to `_orchestrator/status.json`."""

    def __init__(self, store: Store, study: str, console: Console, min_interval_s: float = 2.0):
        self.store, self.study, self.console = store, study, console
        self.stages: dict[str, dict] = {}
        self.min_interval_s = min_interval_s
        self._last_write = 0.0
        self.metrics = study_metrics(study)  # ray.util.metrics gauges (dashboard / Prometheus)

    def stage(
        self, name: str, state: str, trials: dict | None = None, total: int | None = None, select: dict | None = None
    ) -> None:
        entry = self.stages.setdefault(name, {"state": state, "trials": {}, "total": total, "select": select})
        entry["state"] = state
        if trials is not None:
            entry["trials"] = trials
        if total is not None:
            entry["total"] = total
        if select is not None:
            entry["select"] = select
        self.write(force=True)

    def write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval_s:
            return
        self._last_write = now
        summary = {"study": self.study, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {}}
        for name, entry in self.stages.items():
            trials = entry["trials"]
            counts = status_counts(trials)
            if self.metrics is not None:
                self.metrics.update(name, trials, entry["total"], entry.get("select"))
            summary["stages"][name] = {
                "state": entry["state"],
                "total": entry["total"],
                "counts": counts,
                "trials": {
                    k: {f: t.get(f) for f in ("name", "status", "iterations", "best")} for k, t in trials.items()
                },
            }
        try:
            # Live status is advisory: a storage outage must not stop the study (records and
            # tables are written with retries at the end of each stage).
            self.store.write_text(json.dumps(summary, indent=1, default=str), STATE_DIR, "status.json", retry=False)
        except (OSError, ArrowException) as exc:
            self.console.print(f"[yellow]warning[/]: live status not written ({' '.join(str(exc).split())[:120]})")
