"""Notifications of a running study, for the events the study file names (`notify:`):
`study_end`, `stage_end`, `gate`, `trial_error`, `budget`. Delivery is Apprise's; where they go
and how plain webhooks are addressed is `orchestrator/study/notify_targets.py`.

What is ours, and why:
- **Never in the way.** Messages go out from background threads, one per URL, so a slow or dead
  endpoint never holds up Tune's event loop, nor the messages to the other URLs. Each is tried 3
  times (after 1 s and 3 s, each try bounded by Apprise's connect and read timeouts of 5 s), then
  given up with one warning line. At the end `close()` waits at most `CLOSE_WAIT_S` (30 s) in
  all, then gives up what is left with one warning: a notification problem never stops a study,
  nor delays its end by more than that.
- **Never a leak.** Any failure (an unreachable host, a malformed URL from the environment, an
  endpoint that answers garbage, an exception inside a plugin) is caught around the whole
  attempt and reported as one warning that names only the host of a webhook or the service of an
  Apprise URL, never the URL (its path or user part is the credential). Apprise's own log lines
  are captured, not printed: only an `HTTP nnn` status is taken from them.
- `${env:NAME}` is resolved when the run starts; a variable missing then (e.g. `resume` from
  another shell) turns that URL off with a warning, and the study runs.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time

from rich.console import Console
from rich.markup import escape

from orchestrator.study import notify_targets

RETRY_DELAYS_S = (1.0, 3.0)
TIMEOUT_S = 5.0  # Apprise's connect and read timeouts, each
CLOSE_WAIT_S = 30.0  # the most the end of a study waits for notifications still queued
_HTTP_STATUS = re.compile(r"error=(\d{3})\b")


class _Captured(logging.Handler):
    """Apprise's log records of one attempt: kept for their HTTP status, never printed."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Notifier:
    """Sends the study's events from one background thread per URL; `close()` waits at most
    `CLOSE_WAIT_S` for all of them."""

    def __init__(self, settings, study: str, storage: str, console: Console):
        self.events = set(settings.events) if settings else set()
        self.format = settings.format if settings else "slack"
        self.study, self.storage, self.console = study, storage, console
        # (resolved URL, is a plain webhook)
        self.targets: list[tuple[str, bool]] = []
        written = (("urls", settings.urls), ("webhooks", settings.webhooks)) if settings else ()
        for key, urls in written:
            for text in urls:
                try:
                    self.targets.append((notify_targets.resolve(text), key == "webhooks"))
                except ValueError as exc:  # e.g. `resume` in a shell without the variable: run, but say so
                    console.print(f"[yellow]warning[/]: notifications to {escape(text)} are off: {escape(str(exc))}")
        self.delays, self.timeout_s, self.close_wait_s = RETRY_DELAYS_S, TIMEOUT_S, CLOSE_WAIT_S
        self._queues: list[queue.Queue] = []  # one per target, each with its sender thread
        self._pending = 0
        self._idle = threading.Condition()

    @property
    def urls(self) -> list[str]:
        return [url for url, _ in self.targets]

    def wants(self, event: str) -> bool:
        return bool(self.targets) and event in self.events

    def send(self, event: str, text: str, **fields) -> None:
        """Queue `text` (one short line) for every URL, if the study asked for `event`."""
        if not self.wants(event):
            return
        if not self._queues:
            for i in range(len(self.targets)):
                self._queues.append(queue.Queue())
                threading.Thread(target=self._run, args=(self._queues[i],), name=f"notify-{i}", daemon=True).start()
        for (url, webhook), messages in zip(self.targets, self._queues):
            with self._idle:
                self._pending += 1
            messages.put((url, webhook, event, text, fields))

    def _run(self, messages: queue.Queue) -> None:
        while True:
            url, webhook, event, text, fields = messages.get()
            try:
                self._deliver(url, webhook, event, text, fields)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _deliver(self, url: str, webhook: bool, event: str, text: str, fields: dict) -> None:
        """Try one message up to 3 times; one warning naming only the host or service if it fails."""
        error = "not delivered"
        for attempt in range(1 + len(self.delays)):
            if attempt:
                time.sleep(self.delays[attempt - 1])
            try:
                sent, error = self._attempt(url, webhook, event, text, fields)
            except Exception as exc:  # noqa: BLE001 - anything a plugin raises: one warning, never the URL
                sent, error = False, type(exc).__name__
            if sent:
                return
        self.console.print(
            f"[yellow]warning[/]: a notification to {escape(notify_targets.where(url))} failed after "
            f"{1 + len(self.delays)} attempts ({escape(error)}); the study goes on"
        )

    def _attempt(self, url: str, webhook: bool, event: str, text: str, fields: dict) -> tuple[bool, str]:
        """One try: (sent, why not)."""
        if webhook:
            body = (
                {"text": f"[{self.study}] {text}"}
                if self.format == "slack"
                else {"event": event, "study": self.study, "storage": self.storage, "text": text, **fields}
            )
            url = notify_targets.webhook_url(url, self.format, body)
            title, message = (event if self.format == "json" else ""), body["text"]
        else:
            title, message = f"{self.study}: {event}", text
        plugin = notify_targets.instantiate(url)
        if plugin is None:
            return False, "not a URL that can be sent to"
        plugin.socket_connect_timeout = plugin.socket_read_timeout = self.timeout_s
        captured = _Captured()
        log = logging.getLogger("apprise")
        log.addHandler(captured)
        try:
            sent = plugin.notify(body=message, title=title)
        finally:
            log.removeHandler(captured)
        status = next((m.group(1) for line in captured.messages for m in [_HTTP_STATUS.search(line)] if m), None)
        return bool(sent), f"HTTP {status}" if status else "not delivered"

    def close(self) -> None:
        """Wait until every queued message was sent or given up, at most `close_wait_s`; what is
        left then is given up with one warning (the threads are daemons: they end with the run)."""
        if not self._queues:
            return
        deadline = time.monotonic() + self.close_wait_s
        with self._idle:
            while self._pending and time.monotonic() < deadline:
                self._idle.wait(timeout=max(deadline - time.monotonic(), 0.0))
            left = self._pending
        if left:
            self.console.print(
                f"[yellow]warning[/]: {left} notification(s) not sent within {self.close_wait_s:g} s of the "
                "study's end; given up"
            )


# Apprise logs each failure as a warning; the notifier reports them itself (see the module doc).
logging.getLogger("apprise").propagate = False
logging.getLogger("apprise").addHandler(logging.NullHandler())
