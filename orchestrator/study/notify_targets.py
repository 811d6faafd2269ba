"""Where a study's notifications go (`notify:` in the study file), as Apprise URLs.

Delivery is Apprise's (PyPI `apprise`: Slack, Discord, Teams, e-mail, Telegram, ntfy and some
hundred more services, one URL each: `slack://...`, `discord://...`, `mailtos://...`, `ntfys://topic`,
`json://host/path` for a generic JSON POST). What is ours:
- `urls:` are Apprise URLs as they are; `webhooks:` (the older key) are plain `http(s)://` URLs that
  receive a JSON POST in one of two bodies (`format: slack`, `{"text": ...}`; `format: json`, the
  event, study, storage, text and the event's fields), built here as Apprise `json://` URLs whose
  payload mapping gives exactly those bodies, so study files written for the hand-written sender
  before it keep working unchanged;
- `${env:NAME}` reads a URL from the environment when the run starts; a resolved URL is a secret
  (a Slack webhook URL is its own credential, an e-mail URL holds a password): it is never
  printed, logged or stored, and errors name only the host (a plain webhook) or the service;
- the checks `validate` and `run` make (`problems`): every URL is one Apprise can send to, every
  variable is set. `resume` does not make them (a study stopped by its cap must be resumable from
  a shell that lacks the secret): the notifier then turns that URL off with a warning.
"""

from __future__ import annotations

import os
import re
import urllib.parse

from orchestrator.errors import Problem, join_path
from orchestrator.study.yaml_doc import YamlDoc

ENV_URL = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")
# Apprise's JSON body keys: renamed or dropped (empty) by `:key=value` in a json:// URL
_DROP = {"version": "", "attachments": "", "type": ""}


def resolve(text: str) -> str:
    """A URL as written, or the value of `${env:NAME}`; ValueError (naming only the variable) if
    that is unset."""
    match = ENV_URL.match(text.strip())
    if not match:
        return text.strip()
    value = os.environ.get(match.group(1), "").strip()
    if not value:
        raise ValueError(f"environment variable {match.group(1)} is not set")
    return value


def _split(url: str) -> urllib.parse.SplitResult:
    """The parts of a URL; ValueError for one Python cannot split (e.g. a bad IPv6 host)."""
    return urllib.parse.urlsplit(url)


def where(url: str) -> str:
    """What may be printed of a URL: the host of a plain webhook, else the service's scheme (an
    Apprise URL's host is often a token: `slack://TokenA/...`)."""
    try:
        parts = _split(url)
    except ValueError:
        return "?"
    if parts.scheme in ("http", "https", "json", "jsons"):
        return parts.hostname or "?"
    return f"{parts.scheme or '?'}://"


def webhook_url(url: str, fmt: str, body: dict[str, str]) -> str:
    """The Apprise `json://` URL that POSTs `body` to a plain webhook (see the module doc):
    Apprise's own keys dropped, its `message` renamed `text` and, with `format: json`, its
    `title` renamed `event`; the other fields as payload extras; the webhook's own query
    parameters kept (as Apprise GET parameters)."""
    parts = _split(url)
    scheme = {"https": "jsons", "http": "json"}[parts.scheme]
    query = [(f"-{k}", v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    mapping = dict(_DROP, message="text", title="event" if fmt == "json" else "")
    query += [(f":{k}", v) for k, v in mapping.items()]
    query += [(f":{k}", str(v)) for k, v in body.items() if k not in ("text", "event")]
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path or "/", urllib.parse.urlencode(query), ""))


def instantiate(url: str):
    """The Apprise plugin for a URL, or None when Apprise cannot send to it (unknown service,
    a host with a space, a bad port, ...)."""
    import apprise

    try:
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)
    except Exception:  # noqa: BLE001 - a plugin that raises on a malformed URL: not one we can send to
        return None


def target_problem(text: str, webhook: bool) -> str | None:
    """Why a URL (`${env:NAME}` resolved) cannot be sent to, without the URL itself; or None."""
    value = resolve(text)
    named = f"the URL in {text.strip()}" if ENV_URL.match(text.strip()) else "this URL"
    if any(c.isspace() for c in value):
        return f"{named} is not a valid URL (it contains a space)"
    try:
        if webhook:
            parts = _split(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return f"{named} is not an http(s) URL (use `urls:` for other services)"
            parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
            value = webhook_url(value, "slack", {})
    except ValueError:
        return f"{named} is not a valid URL"
    if instantiate(value) is None:
        kind = "a webhook URL" if webhook else "an Apprise URL (https://github.com/caronc/apprise/wiki)"
        return f"{named} is not {kind} that can be sent to"
    return None


def problems(notify, doc: YamlDoc) -> list[Problem]:
    """One problem per URL of `notify:` that cannot be sent to now (variable unset, not a URL a
    sender accepts); none when `notify` is None."""
    if notify is None:
        return []
    found = []
    for key, urls in (("webhooks", notify.webhooks), ("urls", notify.urls)):
        for i, text in enumerate(urls):
            try:
                reason = target_problem(text, webhook=key == "webhooks")
            except ValueError as exc:
                reason = f"{exc} (for {text.strip()})"
            if reason:
                path = ("notify", key, i)
                found.append(Problem(doc.file, reason, join_path(*path), doc.line_of(path)))
    return found
