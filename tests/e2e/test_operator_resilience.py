"""The operator survives what production does to it: its leader killed mid-run, and the API
server restarted under its watches."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
from kube import NS, Cluster, bound, wait_until

pytestmark = pytest.mark.slow

MODELS = [{"name": "H100-SXM", "tdpWatts": 700, "idleWatts": 75, "memoryMiB": 81920}]
POLICY = {"solver": {"timeLimitSeconds": 5, "workers": 1}}
LEASE_SECONDS = 6


def _setup(c: Cluster, nodes: int) -> None:
    c.set_config(POLICY, MODELS)
    c.power_domain("facility", None, None)
    for i in range(nodes):
        c.gpu_node(f"gpu-{i}", "facility")
    c.nodes_ready(nodes)
    c.namespace("ml")


def _bound_lines(log_text: str) -> list[str]:
    out = []
    for line in log_text.splitlines():
        if line.startswith("{") and '"event": "bound"' in line:
            out.append(json.loads(line)["pod"])
    return out


def _holder(c: Cluster) -> str | None:
    from kubernetes import client

    try:
        lease = client.CoordinationV1Api(c.api).read_namespaced_lease("wattpack-operator", NS)
    except client.ApiException:
        return None
    return lease.spec.holder_identity


def test_leader_failover_binds_nothing_twice(cluster: Cluster) -> None:
    _setup(cluster, 4)
    args = ("--leader-elect", f"--lease-seconds={LEASE_SECONDS}", "--interval=2")
    a = cluster.start_operator(*args, "--identity=op-a", name="op-a")
    b = cluster.start_operator(*args, "--identity=op-b", name="op-b")
    leader = wait_until(lambda: _holder(cluster), 60, "a leader")
    for i in range(8):
        cluster.pod(f"first-{i}", gpus=1)
    wait_until(lambda: len(bound(cluster.pods("ml"))) == 8, 60, "the first pods bound")

    active, standby = (a, b) if leader == "op-a" else (b, a)
    # The standby really stands by: it has bound nothing.
    assert _bound_lines(standby.log.read_text()) == []
    active.stop(signal.SIGKILL)  # no goodbye: the lease must run out
    killed = time.monotonic()
    for i in range(8):
        cluster.pod(f"second-{i}", gpus=2)
    new = wait_until(
        lambda: (h := _holder(cluster)) not in (None, leader) and h, 60, "the standby to lead"
    )
    took = time.monotonic() - killed
    wait_until(lambda: len(bound(cluster.pods("ml"))) == 16, 60, "the second pods bound")
    print(f"failover: {leader} -> {new} after {took:.1f} s (lease {LEASE_SECONDS} s)")
    # The lease is the only clock: allow its retry period and a poll or two, no more.
    assert took < LEASE_SECONDS + 6

    def logged() -> list[str]:
        return _bound_lines(a.log.read_text()) + _bound_lines(b.log.read_text())

    # A binding shows in the API a moment before its operator's log line is written.
    wait_until(lambda: len(logged()) >= 16, 10, "every binding logged")
    lines = logged()
    twice = [p for p, n in Counter(lines).items() if n > 1]
    assert not twice, f"bound twice: {twice}"
    assert sorted(lines) == sorted(f"ml/{p['metadata']['name']}" for p in cluster.pods("ml"))
    gpus = Counter(
        (p["spec"]["nodeName"], i)
        for p in cluster.pods("ml")
        for i in p["metadata"]["annotations"]["wattpack.io/gpu-indices"].split(",")
    )
    assert max(gpus.values()) == 1


def test_api_server_restart_watches_resume(cluster: Cluster) -> None:
    _setup(cluster, 2)
    op = cluster.start_operator("--interval=2")
    for i in range(4):
        cluster.pod(f"before-{i}", gpus=1)
    wait_until(lambda: len(bound(cluster.pods("ml"))) == 4, 60, "pods bound before the restart")

    cluster.cp.restart_apiserver(down_seconds=3)
    assert op.alive(), "the operator died with the API server"
    for i in range(4):
        cluster.pod(f"after-{i}", gpus=2)
    wait_until(lambda: len(bound(cluster.pods("ml"))) == 8, 90, "pods bound after the restart")
    log = op.log.read_text()
    # It noticed, and carried on from where it was rather than starting over.
    assert '"watch_broken"' in log or '"watch_failed"' in log
    assert op.alive()
