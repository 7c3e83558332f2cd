"""The operator survives what production does to it: its leader killed mid-run, and the API
server restarted under its watches."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
from kube import Cluster, bound, lease_holder, wait_until

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


def test_leader_failover_binds_nothing_twice(cluster: Cluster) -> None:
    _setup(cluster, 4)
    args = ("--leader-elect", f"--lease-seconds={LEASE_SECONDS}", "--interval=2")
    a = cluster.start_operator(*args, "--identity=op-a", name="op-a")
    b = cluster.start_operator(*args, "--identity=op-b", name="op-b")
    leader = wait_until(lambda: lease_holder(cluster), 60, "a leader")
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
        lambda: (h := lease_holder(cluster)) not in (None, leader) and h, 60, "the standby to lead"
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


def test_leader_killed_mid_gang_leaves_no_partial_gang_and_no_gpu_twice(cluster: Cluster) -> None:
    """The leader is killed (SIGKILL) while it binds a gang of 16 one-GPU members, after the
    first members are bound and before the last: the standby takes over, and the gang ends
    whole, with no GPU given twice. The kill is timed by a watch on the gang's pods; a gang
    bound too fast to catch is tried again with a fresh one (at most three)."""
    from kubernetes import client, watch

    _setup(cluster, 2)
    args = ("--leader-elect", f"--lease-seconds={LEASE_SECONDS}", "--interval=2")
    procs = {
        "op-a": cluster.start_operator(*args, "--identity=op-a", name="op-a"),
        "op-b": cluster.start_operator(*args, "--identity=op-b", name="op-b"),
    }
    caught = None
    for attempt in range(3):
        leader = wait_until(lambda: lease_holder(cluster), 60, "a leader")
        gang = f"g{attempt}"
        for i in range(16):
            cluster.pod(f"{gang}-{i}", gpus=1, gang=gang, gang_size=16)
        bound_now: set[str] = set()
        w = watch.Watch()
        for ev in w.stream(
            client.CoreV1Api(cluster.api).list_namespaced_pod,
            "ml",
            label_selector=f"wattpack.io/gang={gang}",
            timeout_seconds=60,
        ):
            pod = ev["object"]
            if pod.spec.node_name:
                bound_now.add(pod.metadata.name)
            if 0 < len(bound_now) < 16:
                procs[leader].stop(signal.SIGKILL)
                caught = (gang, len(bound_now))
                break
            if len(bound_now) == 16:
                break
        w.stop()
        if caught:
            break
        # Too fast to catch: make room for the next gang.
        for i in range(16):
            cluster.core.delete_namespaced_pod(f"{gang}-{i}", "ml", grace_period_seconds=0)
        wait_until(lambda: not cluster.pods("ml"), 60, "the gang gone")
    assert caught, "no gang was caught half bound in three tries"
    gang, seen_bound = caught
    print(f"leader {leader} killed with {seen_bound} of 16 members bound")

    def whole():
        members = [p for p in cluster.pods("ml") if p["metadata"]["name"].startswith(f"{gang}-")]
        done = [p for p in members if p["spec"].get("nodeName")]
        return members if len(done) == 16 else None

    members = wait_until(whole, 90, "the gang bound whole by the new leader")
    gpus = Counter(
        (p["spec"]["nodeName"], i)
        for p in members
        for i in p["metadata"]["annotations"]["wattpack.io/gpu-indices"].split(",")
    )
    assert max(gpus.values()) == 1 and len(gpus) == 16
    assert lease_holder(cluster) not in (None, leader)


def test_api_server_down_past_the_lease_leaves_one_working_election(cluster: Cluster) -> None:
    """The API server is down for twice the lease with two replicas electing. The Kubernetes
    client's elector let a refused connection end its thread: a leader then renewed no more
    while it went on binding, and a standby never took over while its probes said healthy.
    Now the leader, unable to renew, stops and exits (restarted here as Kubernetes would), the
    standby keeps electing through the outage; afterwards pods bind, a killed leader's standby
    takes over, and nothing is bound twice."""
    _setup(cluster, 4)
    args = ("--leader-elect", f"--lease-seconds={LEASE_SECONDS}", "--interval=2")
    procs = {
        ident: cluster.start_operator(*args, f"--identity={ident}", name=ident)
        for ident in ("op-a", "op-b")
    }
    exits: list[tuple[str, int | None]] = []

    def restart_exited() -> None:
        # restartPolicy: Always, as the Deployment has it.
        for ident, proc in procs.items():
            if not proc.alive():
                exits.append((ident, proc.popen.returncode if proc.popen else None))
                procs[ident] = cluster.start_operator(*args, f"--identity={ident}", name=ident)

    first = wait_until(lambda: lease_holder(cluster), 60, "a leader")
    for i in range(4):
        cluster.pod(f"before-{i}", gpus=1)
    wait_until(lambda: len(bound(cluster.pods("ml"))) == 4, 60, "pods bound before the outage")

    cluster.cp.restart_apiserver(down_seconds=2 * LEASE_SECONDS)
    for i in range(4):
        cluster.pod(f"after-{i}", gpus=2)

    def after_bound() -> bool:
        restart_exited()
        return len(bound(cluster.pods("ml"))) == 8

    wait_until(after_bound, 90, "pods bound after the outage")
    # Both replicas must still be electing: the leader's standby takes over when it dies.
    leader = wait_until(lambda: lease_holder(cluster), 30, "a leader after the outage")
    time.sleep(LEASE_SECONDS)  # let a replica whose election just ended exit first
    restart_exited()
    procs[leader].stop(signal.SIGKILL)
    other = "op-b" if leader == "op-a" else "op-a"
    wait_until(lambda: lease_holder(cluster) == other, LEASE_SECONDS + 20, f"{other} to lead")
    for i in range(4):
        cluster.pod(f"last-{i}", gpus=1)
    wait_until(lambda: len(bound(cluster.pods("ml"))) == 12, 60, "pods bound by the new leader")

    lines = [
        line
        for ident in ("op-a", "op-b")
        for line in _bound_lines((cluster.cp.root / f"{ident}.log").read_text())
    ]
    twice = [p for p, n in Counter(lines).items() if n > 1]
    assert not twice, f"bound twice: {twice}"
    gpus = Counter(
        (p["spec"]["nodeName"], i)
        for p in cluster.pods("ml")
        for i in p["metadata"]["annotations"]["wattpack.io/gpu-indices"].split(",")
    )
    assert max(gpus.values()) == 1
    # Only the leader left, on purpose (it could not renew), never with a traceback.
    assert exits in ([], [(first, 1)]), exits
    for ident in ("op-a", "op-b"):
        assert "Traceback" not in (cluster.cp.root / f"{ident}.log").read_text()
    print(f"replicas restarted after the outage: {exits}")
