"""Notifications of a running study to webhooks (Slack-compatible `{"text": ...}`, or a generic
JSON body), for the events the study file names (`notify:` in `orchestrator/study/schema.py`):
`study_end`, `stage_end`, `gate`, `trial_error`.

Messages go out from a background thread, so a slow or dead webhook never holds up Tune's
event loop; each is tried 3 times (after 1 s and 3 s), then given up with one warning line. A
webhook never fails the study. URLs may be `${env:NAME}` (resolved when the run starts, a
missing variable is an error at `validate`); a resolved URL is a secret (a Slack webhook URL is
its own credential): it is never printed, logged or stored; warnings name only its host.
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from rich.console import Console
from rich.markup import escape

ENV_RE = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")
RETRY_DELAYS_S = (1.0, 3.0)
TIMEOUT_S = 10.0


def resolve_url(text: str) -> str:
    """A webhook URL as given, or the value of `${env:NAME}`; ValueError if that is unset."""
    match = ENV_RE.match(text.strip())
    if not match:
        return text
    value = os.environ.get(match.group(1))
    if not value:
        raise ValueError(f"environment variable {match.group(1)} is not set")
    return value


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or "?"


class Notifier:
    """Sends the study's events to its webhooks in a background thread; `close()` waits for the
    queue (at most `TIMEOUT_S` x attempts per message)."""

    def __init__(self, settings, study: str, storage: str, console: Console):
        self.events = set(settings.events) if settings else set()
        self.format = settings.format if settings else "slack"
        self.study, self.storage, self.console = study, storage, console
        self.urls: list[str] = []
        for url in settings.webhooks if settings else []:
            try:
                self.urls.append(resolve_url(url))
            except ValueError as exc:  # e.g. `resume` in a shell without the variable: run, but say so
                console.print(f"[yellow]warning[/]: notifications to {escape(url)} are off: {escape(str(exc))}")
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.delays = RETRY_DELAYS_S

    def wants(self, event: str) -> bool:
        return bool(self.urls) and event in self.events

    def send(self, event: str, text: str, **fields) -> None:
        """Queue `text` (one short line) for every webhook, if the study asked for `event`."""
        if not self.wants(event):
            return
        body = (
            {"text": f"[{self.study}] {text}"}
            if self.format == "slack"
            else {"event": event, "study": self.study, "storage": self.storage, "text": text, **fields}
        )
        data = json.dumps(body, default=str).encode()
        for url in self.urls:
            self._queue.put((url, data))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            url, data = self._queue.get()
            try:
                self._post(url, data)
            finally:
                self._queue.task_done()

    def _post(self, url: str, data: bytes) -> None:
        error = ""
        for attempt in range(1 + len(self.delays)):
            if attempt:
                time.sleep(self.delays[attempt - 1])
            request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - the user's webhook
                    if response.status < 300:
                        return
                    error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                error = type(exc).__name__ + (f": {exc.reason}" if isinstance(exc, urllib.error.URLError) else "")
        self.console.print(
            f"[yellow]warning[/]: a notification to {escape(_host(url))} failed after "
            f"{1 + len(self.delays)} attempts ({escape(error)}); the study goes on"
        )

    def close(self) -> None:
        """Wait until every queued message was sent or given up."""
        if self._thread is not None:
            self._queue.join()
