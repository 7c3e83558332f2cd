"""The operator's /healthz and /readyz against a real API server, by stopping its etcd
(SIGSTOP): the API server then still answers discovery and serves its watches, but every read
and write that reaches etcd hangs, as behind a wedged storage backend. So the operator's
caches cannot sync (not ready, but alive), and a cycle's binding hangs (not alive). Also:
promtool on what the operator really serves, and a leader with its standby both ready."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kube import Cluster, one_node, wait_until
from kubernetes import watch
from promtool import metrics_problems
from served import fetch, free_port

pytestmark = pytest.mark.slow


@contextmanager
def etcd_stopped(cluster: Cluster) -> Iterator[None]:
    popen = cluster.cp.procs["etcd"].popen
    assert popen is not None
    os.kill(popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(popen.pid, signal.SIGCONT)


def _status(port: int, path: str) -> int:
    return fetch(port, path)[0]


def test_probes_follow_the_operator_loop_through_a_wedged_etcd(cluster: Cluster) -> None:
    one_node(cluster)
    port = free_port()
    # A cycle begins 10 s after the last change: the pod below is in the operator's cache
    # well before the cycle that binds it.
    args = ("--interval=1", "--debounce=10", "--stuck-after=3", f"--metrics-port={port}")
    with etcd_stopped(cluster):
        op = cluster.start_operator(*args)
        wait_until(lambda: _status(port, "/readyz") == 503, 60, "the operator serving")
        assert fetch(port, "/readyz")[1].startswith("caches not synced yet: ")
        assert fetch(port, "/healthz") == (200, "ok\n")  # waiting for its caches is no fault
    wait_until(lambda: _status(port, "/readyz") == 200, 120, "the caches synced")

    rv = cluster.core.list_namespaced_pod("ml").metadata.resource_version
    cluster.pod("p", gpus=1)
    # The API server's watch cache has the pod once a watch from before it shows it: the
    # operator's pod watch is served from the same cache.
    w = watch.Watch()
    for event in w.stream(
        cluster.core.list_namespaced_pod, "ml", resource_version=rv, timeout_seconds=60
    ):
        if event["object"].metadata.name == "p":
            w.stop()
    with etcd_stopped(cluster):
        # The cycle's binding waits on etcd: the loop makes no progress.
        _, body = wait_until(
            lambda: (x := fetch(port, "/healthz"))[0] == 503 and x, 120, "/healthz to fail"
        )
        assert "no progress" in body and "--stuck-after 3" in body
        assert fetch(port, "/readyz") == (200, "ok\n")  # its caches are still synced
        assert _status(port, "/metrics") == 200 and _status(port, "/nope") == 404
    wait_until(lambda: _status(port, "/healthz") == 200, 120, "/healthz to recover")
    wait_until(lambda: any(p["spec"].get("nodeName") for p in cluster.pods("ml")), 120, "p bound")
    assert op.alive()
    text = fetch(port, "/metrics")[1]
    assert "wattpack_cycle_seconds_count" in text and "process_cpu_seconds_total" in text
    assert metrics_problems(text) == []


def _leader(port: int) -> float | None:
    status, text = fetch(port, "/metrics")
    for line in text.splitlines() if status == 200 else []:
        if line.startswith("wattpack_leader "):
            return float(line.split()[1])
    return None


def test_a_leader_and_its_standby_are_both_ready(cluster: Cluster) -> None:
    one_node(cluster)
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        cluster.start_operator(
            "--leader-elect", f"--identity=op-{i}", f"--metrics-port={port}", name=f"op-{i}"
        )
    wait_until(lambda: sorted(_leader(p) or 0 for p in ports) == [0, 1], 60, "one replica leading")
    for port in ports:
        wait_until(lambda: _status(port, "/readyz") == 200, 60, "both replicas ready")  # noqa: B023
        assert fetch(port, "/healthz") == (200, "ok\n")
