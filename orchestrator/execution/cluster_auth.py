"""Joining a Ray cluster that uses token authentication (`run` / `resume` with `--address` or
`RAY_ADDRESS`), with the token this machine has, or one line saying why not.

Why this exists: since Ray 2.59 `ray start --head` turns token authentication on by itself when
its machine has a token (`~/.ray/auth_token`), but a client's `ray.init(address=...)` attaches
its token only when `RAY_AUTH_MODE=token` is in the client's environment (ray-project/ray PR
#64755, "Client cannot use auto-enabled head auth"); without it the client prints twenty
"Unauthenticated" warnings and ends in a `ConnectionError` traceback. Ray 2.61 makes token
authentication the default for every cluster.

So before `ray.init`, a gRPC call to the head's GCS (`GetClusterId`, what `ray.init` asks first)
without a token says whether the cluster answers and whether it wants a token; only if it does,
a second one says whether it takes this machine's (Ray's own sources, in Ray's order:
`RAY_AUTH_TOKEN`, the file at `RAY_AUTH_TOKEN_PATH`, `~/.ray/auth_token`), and token mode is
turned on for this process the way `ray.init` does for a local cluster (the environment variable
and Ray's cached config). A cluster without authentication gets no token: one it does not expect
leaves its trial actors cancelled before they start. Otherwise a `UserError` names the address
and how to get the token. The token itself is never printed, logged or stored: messages name only
where it came from.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.errors import Problem, UserError

PROBE_TIMEOUT_S = 10.0
GET_TOKEN = "run `ray get-auth-token` on the head and put its output in ~/.ray/auth_token here (or in RAY_AUTH_TOKEN)"


def local_token() -> tuple[str | None, str]:
    """(the token this machine would send, where it comes from), in Ray's order of precedence;
    (None, what was looked at) when there is none. A `RAY_AUTH_TOKEN_PATH` that cannot be read is
    an error (Ray itself aborts on it)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    path_var = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path_var:
        try:
            token = Path(path_var).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(
                Problem("RAY_AUTH_TOKEN_PATH", f"cannot read the Ray token file it names ({exc.strerror})")
            ) from None
        if not token:
            raise UserError(Problem("RAY_AUTH_TOKEN_PATH", "the Ray token file it names is empty"))
        return token, "RAY_AUTH_TOKEN_PATH"
    default = Path.home() / ".ray" / "auth_token"
    try:
        token = default.read_text(encoding="utf-8").strip()
    except OSError:
        token = ""
    if token:
        return token, str(default)
    return None, "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"


def probe(address: str, token: str | None) -> tuple[str, str]:
    """("ok" | "unauthenticated" | "unreachable", detail): one `GetClusterId` call to the GCS at
    `address` (host:port), with the token if there is one."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), metadata=metadata, timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return "unauthenticated", ""
            detail = " ".join((exc.details() or code.name).split())[:160]
            return "unreachable", detail
    return "ok", ""


def _probed_address(address: str) -> str | None:
    """The host:port to probe, or None for addresses Ray resolves itself (`auto`, `local`,
    `ray://` clients) and for clusters that speak TLS (`RAY_USE_TLS`: the probe's channel is
    plain gRPC)."""
    tls = os.environ.get("RAY_USE_TLS", "").strip().lower() in ("1", "true")
    if tls or address in ("auto", "local") or "://" in address or ":" not in address:
        return None
    return address


def _enable_token_mode() -> None:
    """Token authentication for this process and the processes it starts, as `ray.init` turns
    it on for a new local cluster (`authentication_token_setup._enable_token_auth`): the
    environment variable, and Ray's cached config, which read it when Ray was imported."""
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")


def prepare(address: str, where: str) -> str:
    """Make `ray.init(address=address)` authenticate when the cluster wants it; what it sent
    (for the "connected" line). `where`: the option or variable the address came from."""
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    token, source = (None, "RAY_AUTH_MODE=disabled") if mode == "disabled" else local_token()
    if mode == "token" and not token:  # Ray itself would stop in ray.init, less clearly
        raise UserError(
            Problem(
                "RAY_AUTH_MODE",
                f"token authentication is asked for here, but this machine has no token ({source}); {GET_TOKEN}",
            )
        )
    target = _probed_address(address)
    if target is None:  # Ray resolves it; send the token if this machine has one
        if token and not mode:
            _enable_token_mode()
        return f"token from {source}" if token else "no token"
    outcome, detail = probe(target, None)
    if outcome == "unreachable":
        raise UserError(
            Problem(
                where,
                f"no Ray cluster answers at {address} ({detail}): start one there (`ray start --head`) or "
                "check the address and that its GCS port is reachable from here",
            )
        )
    if outcome == "ok":  # no authentication there: nothing to send (a token a cluster without
        return "no token needed"  # authentication is not expecting breaks its actors' start)
    if token and probe(target, token)[0] == "ok":
        if mode != "token":
            _enable_token_mode()
        return f"token from {source}"
    if token:
        why = f"refused this machine's token (from {source}): it is not the cluster's"
    elif mode == "disabled":
        why = "uses token authentication, but RAY_AUTH_MODE=disabled here sends none"
    else:
        why = f"uses token authentication and this machine has no token ({source})"
    raise UserError(Problem(where, f"the Ray cluster at {address} {why}; {GET_TOKEN}"))
