"""The HTTP endpoints both processes serve, on a real server: /metrics from the registry, the
probes from their checks (200 "ok" or 503 with the reason), 404 elsewhere; and the heartbeat
/healthz reads: a step that overruns and a loop that stopped reporting both fail it."""

from __future__ import annotations

from prometheus_client import Gauge
from served import fetch, free_port
from waiting import wait_until

from operators.endpoints import Heartbeat, runtime_registry, serve


def test_paths_probes_and_metrics_on_a_real_server() -> None:
    registry = runtime_registry()
    Gauge("wattpack_test_value", "A value.", registry=registry).set(3)
    ready: list[str | None] = ["caches not synced yet: pods"]
    port = serve(registry, free_port(), lambda: None, lambda: ready[0])
    status, text = fetch(port, "/metrics")
    assert status == 200 and "wattpack_test_value 3.0" in text and "process_open_fds" in text
    assert fetch(port, "/healthz") == (200, "ok\n")
    assert fetch(port, "/readyz") == (503, "caches not synced yet: pods\n")
    ready[0] = None
    assert fetch(port, "/readyz") == (200, "ok\n")
    for path in ("/", "/metrics/", "/health", "/favicon.ico"):
        assert fetch(port, path)[0] == 404, path


def test_a_heartbeat_fails_when_a_step_overruns_or_the_loop_stops_reporting() -> None:
    assert Heartbeat(0.01).problem() is None  # no loop yet: a standby replica
    idle = Heartbeat(3600)
    idle.beat(0.0)
    assert idle.problem() is None  # a step well inside its limit
    busy = Heartbeat(0.05)
    busy.beat()  # a step begins and never ends
    reason = wait_until(busy.problem, 30, "the overrun noticed", every=0.01)
    assert "no progress" in reason and "--stuck-after 0.05" in reason
    dead = Heartbeat(0.05)
    dead.beat(0.1)  # idle until 0.1 s from now, and nothing after: the loop died
    wait_until(dead.problem, 30, "the silence noticed", every=0.01)
    dead.beat(3600)  # it reported again
    assert dead.problem() is None
