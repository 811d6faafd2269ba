"""Notifications (`notify:`, delivered by Apprise): a local HTTP server receives the study's events
in both webhook bodies and as an Apprise URL; a webhook that answers 500, garbage or nothing, or
a malformed URL from the environment, is retried, then given up with one warning line naming
only its host, within a bound, and the study goes on; a URL from the environment is never written
to storage or printed; URLs that cannot be sent to are refused at `validate`."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from rich.console import Console

from orchestrator.execution.notify import Notifier
from orchestrator.study.schema import Notify
from tests.conftest import TINY_STAGE, run_here


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
    return Notify(webhooks=[url], events=list(events), format=fmt)


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
    """Through the CLI, with two more webhooks that fail (one answers garbage, one is not there):
    the study ends normally, in time, with one warning per failed message naming only the host."""
    garbage = Misbehaving("garbage")
    (tmp_path / "study.yaml").write_text(
        "# notified\nname: notified\ndefaults: {seeds: [1]}\n"
        "notify: {webhooks: ['${env:STUDY_HOOK}', '${env:GARBAGE_HOOK}', '${env:CLOSED_HOOK}'],"
        " events: [study_end, stage_end, gate, trial_error]}\n"
        "stages:\n  pre:\n" + TINY_STAGE + "    select: {metric: val/loss, mode: min}\n"
        "    gate: {metric: val/loss, op: '<=', value: 1000.0, over: best}\n"
    )
    env = {"STUDY_HOOK": hook.url, "GARBAGE_HOOK": garbage.url, "CLOSED_HOOK": _closed_port_url()}
    try:
        done = run_here("run", "study.yaml", "--storage", str(tmp_path / "runs"), cwd=tmp_path, env=env)
    finally:
        garbage.close()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    texts = [m["text"] for m in hook.received]
    assert texts[0].startswith("[notified] stage pre complete: 1 trials, 1 done, 0 failed; best val/loss=")
    assert texts[1].startswith("[notified] gate of stage pre passed: val/loss <= 1000")
    assert texts[2].startswith("[notified] study notified ended: pre complete: 1 trials") and str(tmp_path) in texts[2]
    assert len(texts) == 3
    output = done.stdout + done.stderr
    # 3 events x 2 failing webhooks: a warning each, naming the host only
    assert output.count("a notification to 127.0.0.1 failed after 3 attempts") == 6, output[-3000:]
    stored = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and b"SECRETTOKEN" in p.read_bytes()]
    assert stored == [] and "SECRETTOKEN" not in output and "Traceback" not in output


def test_a_missing_environment_variable_is_an_error_at_validate(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_HOOK", raising=False)
    (tmp_path / "study.yaml").write_text(
        "# x\nname: x\nnotify: {webhooks: ['${env:NO_SUCH_HOOK}']}\nstages:\n  pre:\n" + TINY_STAGE
    )
    done = run_here("validate", "study.yaml", cwd=tmp_path)
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


class Misbehaving:
    """A TCP endpoint on 127.0.0.1 that answers garbage (`garbage`) or never answers (`hang`)."""

    def __init__(self, mode: str):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.mode, self.open = mode, []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/services/T000/SECRETTOKEN"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            if self.mode == "garbage":
                conn.recv(65536)
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                conn.close()

    def close(self):
        self.sock.close()
        for conn in self.open:
            conn.close()


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/services/T000/SECRETTOKEN"


@pytest.mark.parametrize(
    "value",
    [
        "hooks.example.com/services/T000/SECRETTOKEN",  # no scheme
        "http://127.0.0.1:8/services/T000/SECRET TOKEN",  # a space
        "http://127.0.0.1:99999/services/T000/SECRETTOKEN",  # a bad port
        "http://[::1/services/T000/SECRETTOKEN",  # a broken IPv6 host
        "slack://SECRETTOKEN",  # not a complete Slack URL
    ],
)
def test_a_malformed_url_from_the_environment_is_one_warning_and_never_printed(monkeypatch, value):
    """`resume` does not validate the environment (a study stopped by its cap resumes from any
    shell), so a URL the sender cannot use reaches it: one warning, no traceback, no secret."""
    monkeypatch.setenv("BAD_HOOK", value)
    for key in ("webhooks", "urls"):
        console = Console(record=True, width=300)
        notifier = Notifier(Notify(**{key: ["${env:BAD_HOOK}"]}, events=["study_end"]), "demo", "/runs", console)
        notifier.delays = (0.0, 0.0)
        started = time.monotonic()
        notifier.send("study_end", "done")
        notifier.close()
        out = console.export_text()
        assert time.monotonic() - started < 10, out
        assert "warning" in out and "failed after 3 attempts" in out and "SECRET" not in out, out
        assert "Traceback" not in out


@pytest.mark.parametrize("mode", ["garbage", "hang", "closed"])
def test_a_misbehaving_endpoint_never_holds_the_end_of_a_study(mode, capfd):
    server = Misbehaving(mode) if mode != "closed" else None
    url = server.url if server else _closed_port_url()
    console = Console(record=True, width=300)
    notifier = Notifier(Notify(webhooks=[url], events=["study_end"]), "demo", "/runs", console)
    notifier.delays, notifier.timeout_s = (0.0, 0.0), 1.0
    started = time.monotonic()
    notifier.send("study_end", "done")
    notifier.close()
    elapsed = time.monotonic() - started
    if server:
        server.close()
    out = console.export_text() + "".join(capfd.readouterr())
    assert elapsed < 3 * 2 * 1.0 + 2, out  # three tries, each bounded by the timeouts
    assert "a notification to 127.0.0.1 failed after 3 attempts" in out and "SECRETTOKEN" not in out, out


def test_the_end_waits_for_notifications_at_most_its_bound():
    server = Misbehaving("hang")
    console = Console(record=True, width=300)
    notifier = Notifier(Notify(webhooks=[server.url], events=["study_end"]), "demo", "/runs", console)
    notifier.close_wait_s = 1.0  # 30 s in a study
    started = time.monotonic()
    notifier.send("study_end", "done")
    notifier.close()
    elapsed = time.monotonic() - started
    server.close()
    assert 0.9 < elapsed < 3, elapsed
    assert "1 notification(s) not sent within 1 s of the study's end; given up" in console.export_text()


def test_apprise_urls_reach_any_service(hook):
    """`urls:` are Apprise URLs: here its generic JSON POST (json://) to the local hook."""
    console = Console(record=True, width=200)
    url = hook.url.replace("http://", "json://")
    notifier = Notifier(Notify(urls=[url], events=["gate"]), "demo", "/runs/demo", console)
    notifier.send("gate", "gate passed", stage="pre")
    notifier.close()
    (body,) = hook.received
    assert body["title"] == "demo: gate" and body["message"] == "gate passed", body


@pytest.mark.parametrize(
    "notify,message",
    [
        ("{webhooks: ['http://a b/x']}", "notify.webhooks[0]: this URL is not a valid URL"),
        ("{webhooks: ['ftp://host/x']}", "notify.webhooks[0]: this URL is not an http(s) URL"),
        ("{urls: ['nosuchservice://token']}", "notify.urls[0]: this URL is not an Apprise URL"),
        ("{urls: ['${env:BAD_APPRISE}']}", "notify.urls[0]: the URL in ${env:BAD_APPRISE} is not an Apprise URL"),
        ("{urls: []}", "notify: give urls (Apprise URLs) or webhooks (http(s) URLs), or both"),
    ],
)
def test_urls_that_cannot_be_sent_to_are_refused_at_validate(tmp_path, notify, message):
    (tmp_path / "study.yaml").write_text(f"name: x\nnotify: {notify}\nstages:\n  pre:\n" + TINY_STAGE)
    done = run_here("validate", "study.yaml", cwd=tmp_path, env={"BAD_APPRISE": "nosuch://SECRETTOKEN"})
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert message in line and "SECRETTOKEN" not in line, line
