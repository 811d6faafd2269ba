"""Notifications (`notify:`): a local HTTP server receives the study's events; a webhook that
answers 500 is retried, then given up with one warning line naming only its host, and the
study goes on; a URL from the environment is never written to storage or printed."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest
from rich.console import Console

from orchestrator.execution.notify import Notifier
from tests.conftest import TINY_STAGE, run_cli


class Hook:
    """A webhook on 127.0.0.1 that records JSON bodies and answers `status`."""

    def __init__(self, status: int = 200):
        received, self.status = [], status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.received = received
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/SECRETTOKEN"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def _settings(url, events=("study_end", "trial_error"), fmt="slack"):
    return SimpleNamespace(webhooks=[url], events=list(events), format=fmt)


def test_events_in_both_formats_and_only_the_chosen_ones(hook):
    console = Console(record=True, width=200)
    slack = Notifier(_settings(hook.url), "demo", "/runs/demo", console)
    slack.send("trial_error", "trial a failed")
    slack.send("stage_end", "not asked for")
    slack.close()
    generic = Notifier(_settings(hook.url, ("gate",), "json"), "demo", "/runs/demo", console)
    generic.send("gate", "gate passed", stage="pre")
    generic.close()
    assert hook.received == [
        {"text": "[demo] trial a failed"},
        {"event": "gate", "study": "demo", "storage": "/runs/demo", "text": "gate passed", "stage": "pre"},
    ]


def test_a_failing_webhook_is_retried_then_given_up_naming_only_its_host():
    failing = Hook(status=500)
    console = Console(record=True, width=200)
    notifier = Notifier(_settings(failing.url), "demo", "/runs", console)
    notifier.delays = (0.0, 0.0)
    notifier.send("study_end", "done")
    notifier.close()
    failing.close()
    assert len(failing.received) == 3
    out = console.export_text()
    assert "a notification to 127.0.0.1 failed after 3 attempts (HTTP 500)" in out and "SECRETTOKEN" not in out


def test_a_study_notifies_its_stage_gate_and_end_and_keeps_the_url_secret(hook, tmp_path):
    (tmp_path / "study.yaml").write_text(
        "# notified\nname: notified\ndefaults: {seeds: [1]}\n"
        "notify: {webhooks: ['${env:STUDY_HOOK}'], events: [study_end, stage_end, gate, trial_error]}\n"
        "stages:\n  pre:\n" + TINY_STAGE + "    select: {metric: val/loss, mode: min}\n"
        "    gate: {metric: val/loss, op: '<=', value: 1000.0, over: best}\n"
    )
    done = run_cli("run", "study.yaml", "--storage", str(tmp_path / "runs"), cwd=tmp_path, env={"STUDY_HOOK": hook.url})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    texts = [m["text"] for m in hook.received]
    assert texts[0].startswith("[notified] stage pre complete: 1 trials, 1 done, 0 failed; best val/loss=")
    assert texts[1].startswith("[notified] gate of stage pre passed: val/loss <= 1000")
    assert texts[2].startswith("[notified] study notified ended: pre complete: 1 trials") and str(tmp_path) in texts[2]
    assert len(texts) == 3
    stored = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and b"SECRETTOKEN" in p.read_bytes()]
    assert stored == [] and "SECRETTOKEN" not in done.stdout + done.stderr


def test_a_missing_environment_variable_is_an_error_at_validate(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_HOOK", raising=False)
    (tmp_path / "study.yaml").write_text(
        "# x\nname: x\nnotify: {webhooks: ['${env:NO_SUCH_HOOK}']}\nstages:\n  pre:\n" + TINY_STAGE
    )
    done = run_cli("validate", "study.yaml", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert "notify.webhooks" in line and "environment variable NO_SUCH_HOOK is not set" in line


def test_an_unset_variable_at_run_time_turns_that_webhook_off_with_a_warning(monkeypatch):
    monkeypatch.delenv("GONE_HOOK", raising=False)
    console = Console(record=True, width=200)
    notifier = Notifier(_settings("${env:GONE_HOOK}"), "demo", "/runs", console)
    notifier.send("study_end", "done")
    notifier.close()
    assert notifier.urls == [] and "environment variable GONE_HOOK is not set" in console.export_text()
