"""Serving a Prometheus registry on /metrics, for both long-running processes."""

from __future__ import annotations

import structlog
from prometheus_client import CollectorRegistry, start_http_server

from scheduler.errors import UserError

log = structlog.get_logger(__name__)


def serve(registry: CollectorRegistry, port: int) -> None:
    """Start serving in a background thread; a port in use is the user's to change (exit 2)."""
    try:
        start_http_server(port, registry=registry)
    except OSError as e:
        raise UserError(f"--metrics-port {port}: {e.strerror}", "pick a free port, or 0") from None
    log.info("metrics_serving", port=port)
