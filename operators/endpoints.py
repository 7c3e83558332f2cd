"""The HTTP endpoints of both long-running processes: /metrics, /healthz (liveness) and
/readyz (readiness); any other path is 404. Probes answer 200 "ok", or 503 with the reason.

A Heartbeat is what /healthz reads: the loop says when it will report next (at once when a
step begins, after the wait when it goes idle), and the process is stuck once it is later than
that by more than its limit. A step that hangs, or a loop thread that died, both fail it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

from scheduler.errors import UserError

log = structlog.get_logger(__name__)

# A probe: None when all is well, else why not (the 503's body).
Check = Callable[[], str | None]


class Heartbeat:
    def __init__(self, limit: float, flag: str = "--stuck-after") -> None:
        self.limit = limit
        self.flag = flag  # named in the 503, so that the reader knows what to raise
        self._due: float | None = None  # None: no loop yet (a standby replica)

    def beat(self, next_within: float = 0.0) -> None:
        """Progress: the loop reports again within `next_within` seconds (0 as a step
        begins: the step itself may take up to the limit)."""
        self._due = time.monotonic() + next_within

    def problem(self) -> str | None:
        if self._due is None:
            return None
        late = time.monotonic() - self._due
        if late <= self.limit:
            return None
        return f"the loop has made no progress for {late:.0f} s ({self.flag} {self.limit:g})"


def runtime_registry() -> CollectorRegistry:
    """A registry with the process_* and python_* collectors, as the default one has."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Probes come every few seconds: no access log."""


def app(registry: CollectorRegistry, live: Check, ready: Check):  # type: ignore[no-untyped-def]
    metrics = make_wsgi_app(registry)
    probes = {"/healthz": live, "/readyz": ready}

    def route(environ, start_response) -> Iterable[bytes]:  # type: ignore[no-untyped-def]
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        check = probes.get(path)
        if check is None:
            status, body = "404 Not Found", f"no {path}: /metrics, /healthz or /readyz"
        else:
            problem = check()
            status, body = ("200 OK", "ok") if problem is None else ("503 Unavailable", problem)
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body.encode() + b"\n"]

    return route


def serve(registry: CollectorRegistry, port: int, live: Check, ready: Check) -> int:
    """Serve in a background thread; the port it listens on (`port` 0: any free one). A port in
    use is the user's to change (exit 2)."""
    try:
        httpd = make_server(
            "0.0.0.0", port, app(registry, live, ready), ThreadingWSGIServer, handler_class=_Quiet
        )
    except OSError as e:
        reason = f"--metrics-port {port}: {e.strerror}"
        raise UserError(reason, "pick a free port, or 0 (off)") from None
    threading.Thread(target=httpd.serve_forever, name="http-endpoints", daemon=True).start()
    log.info("serving", port=httpd.server_port, paths=["/metrics", "/healthz", "/readyz"])
    return int(httpd.server_port)
