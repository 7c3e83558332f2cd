"""Moving running work on a real API server, with the real kube-controller-manager recreating
what is moved: defragmentation (two pods of a ReplicaSet restart elsewhere so that a gang fits)
and migration off a degraded GPU (a training gang restarts after its checkpoint, the replicas of
a Deployment surge one at a time), with nothing lost and no budget exceeded on the way."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import pytest
import yaml
from controlplane import Proc
from kube import H100, QUICK, Cluster, bound, lease_holder, scrape, wait_until
from kubernetes import client, watch
from nothing_lost import problems
from served import free_port

from operators.kube.apply import Applier
from operators.kube.source import read_once
from operators.kube.target import Seen
from operators.timestamps import rfc3339
from scheduler.model import Binding
from scheduler.power import budgets, domain_power

pytestmark = pytest.mark.slow

CONTROLLERS = "replicaset,deployment,statefulset"
REQUESTED, DONE = "wattpack.io/checkpoint-requested", "wattpack.io/checkpointed"


def _template(kind: str, labels: dict[str, str], annotations: dict[str, str], gpus: int = 0):
    res: dict[str, Any] = {"requests": {"cpu": "4", "memory": "16Gi"}}
    if gpus:
        res["requests"]["nvidia.com/gpu"] = str(gpus)
        res["limits"] = {"nvidia.com/gpu": str(gpus)}
    return {
        "metadata": {"labels": {"wattpack.io/kind": kind, **labels}, "annotations": annotations},
        "spec": {
            "schedulerName": "wattpack",
            "containers": [{"name": "main", "image": "example.invalid/work:1", "resources": res}],
        },
    }


def _serving(apps: client.AppsV1Api, replicas: int, annotations: dict | None = None) -> None:
    """The Deployment svc: replicas of an inference app taking a quarter GPU each."""
    template = _template(
        "inference", {"app": "svc", "wattpack.io/app": "svc"}, {"wattpack.io/gpu-milli": "250"}
    )
    apps.create_namespaced_deployment(
        "ml",
        {
            "metadata": {"name": "svc", "annotations": annotations or {}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "svc"}},
                "template": template,
            },
        },
    )


def _bind(cluster: Cluster, where: dict[str, tuple[str, list[int]]]) -> None:
    """The test places pods itself (before the operator runs), so each case starts from the
    state it names."""
    seen = Seen.of(cluster.pods("ml"))
    group = [Binding(pod=f"ml/{p}", node=n, gpu_indices=g) for p, (n, g) in where.items()]
    assert Applier(cluster.api, dry_run=False).bind_group(group, seen.uids).bound


def _owned_by(cluster: Cluster, prefix: str) -> list[dict[str, Any]]:
    return sorted(
        (p for p in cluster.pods("ml") if p["metadata"]["name"].startswith(prefix)),
        key=lambda p: p["metadata"]["name"],
    )


def _once_told(cluster: Cluster, reason: str, count: int) -> list[dict[str, Any]]:
    """The Events once `count` of `reason` are written: they go out in the background, after
    the bindings they tell of."""

    def told() -> list[dict[str, Any]] | None:
        events = cluster.events("ml")
        return events if len([e for e in events if e["reason"] == reason]) >= count else None

    return wait_until(told, 30, f"{count} {reason} Events")


def _live(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _where(p: dict[str, Any]) -> tuple[str, list[int]]:
    ann = p["metadata"].get("annotations") or {}
    return p["spec"]["nodeName"], [int(i) for i in ann["wattpack.io/gpu-indices"].split(",")]


def _two_moves_for_a_gang(cluster: Cluster) -> tuple[str, str]:
    """Three 4-GPU nodes: the ReplicaSet small's two 1-GPU pods on a and b (their names
    returned), fixed-0 and fixed-1 (no controller) on c, and a pending gang big of two 4-GPU
    members, which fits only once both replicas move to c."""
    cluster.cp.start_controller_manager(CONTROLLERS)
    cluster.set_config(QUICK, [H100])
    cluster.power_domain("facility", None, None)
    for n in ("a", "b", "c"):
        cluster.gpu_node(n, "facility", gpus=4)
    cluster.nodes_ready(3)
    cluster.namespace("ml")
    apps = client.AppsV1Api(cluster.api)
    apps.create_namespaced_replica_set(
        "ml",
        {
            "metadata": {"name": "small"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "small"}},
                "template": _template("training", {"app": "small"}, {}, gpus=1),
            },
        },
    )
    small = wait_until(
        lambda: (lambda ps: ps if len(ps) == 2 else None)(_owned_by(cluster, "small-")),
        60,
        "the ReplicaSet's two pods",
    )
    cluster.pod("fixed-0", gpus=1)
    cluster.pod("fixed-1", gpus=1)
    first, second = (p["metadata"]["name"] for p in small)
    _bind(cluster, {first: ("a", [0])})
    _bind(cluster, {second: ("b", [1])})
    _bind(cluster, {"fixed-0": ("c", [0])})
    _bind(cluster, {"fixed-1": ("c", [1])})
    for i in range(2):
        cluster.pod(f"big-{i}", gpus=4, gang="big", gang_size=2)
    return first, second


def _gang_and_moved_bound(cluster: Cluster) -> dict[str, dict[str, Any]]:
    def gang_bound():
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        gang = all(pods.get(f"big-{i}", {}).get("spec", {}).get("nodeName") for i in range(2))
        small = [p for n, p in pods.items() if n.startswith("small-")]
        if gang and len(bound(_live(small))) == 2 and len(small) == 2:
            return pods
        return None

    pods: dict[str, dict[str, Any]] = wait_until(gang_bound, 90, "the gang and moved pods bound")
    return pods


def test_a_gang_that_fits_only_after_two_moves_is_bound_after_exactly_those_two(
    cluster: Cluster,
) -> None:
    """Three 4-GPU nodes; a ReplicaSet's two 1-GPU pods run one on a and one on b, two pods
    that nothing would recreate run on c. A gang of two 4-GPU members fits only once the two
    replicas move to c: they are evicted, their ReplicaSet makes them again, and the new pods
    are bound on c; the gang is nominated to a and b while it waits, then bound there."""
    first, second = _two_moves_for_a_gang(cluster)
    port = free_port()
    cluster.start_operator("--interval=1", f"--metrics-port={port}")
    pods = _gang_and_moved_bound(cluster)
    assert {pods[f"big-{i}"]["spec"]["nodeName"] for i in range(2)} == {"a", "b"}
    for i in range(2):  # nominated while it waited for the moved pods to go
        big = pods[f"big-{i}"]
        assert big["status"].get("nominatedNodeName") == big["spec"]["nodeName"]
    # Exactly the two replicas moved: gone from a and b, their replacements bound on c.
    assert first not in pods and second not in pods
    replacements = _live(_owned_by(cluster, "small-"))
    assert len(replacements) == 2
    assert sorted(_where(p) for p in replacements) == [("c", [2]), ("c", [3])]
    assert pods["fixed-0"]["spec"]["nodeName"] == "c" and pods["fixed-1"]["spec"]["nodeName"] == "c"
    events = _once_told(cluster, "Moved", 2)
    moving = sorted(e["involvedObject"]["name"] for e in events if e["reason"] == "Moving")
    assert moving == sorted([first, second])
    moved = [e for e in events if e["reason"] == "Moved"]
    assert len(moved) == 2 and all("defragmentation" in e["message"] for e in moved)
    assert not [e for e in events if e["reason"] == "Preempted"]
    log = cluster.operators[0].tail(400)
    assert "reservation_expired" not in log and "group_not_bound" not in log, log[-3000:]
    m = wait_until(
        lambda: (x := scrape(port)).get("wattpack_moves_in_flight") == 0 and x, 10, "metrics"
    )
    assert m['wattpack_moves_total{reason="defragmentation"}'] == 2
    assert m['wattpack_plan_steps_total{kind="stop"}'] == 2
    assert m['wattpack_plan_steps_total{kind="start"}'] == 2
    assert m['wattpack_plan_steps_total{kind="bind"}'] == 2  # the gang (replacements: Moved)


def test_the_leader_killed_mid_move_loses_nothing(cluster: Cluster) -> None:
    """The defragmentation above, with two operator replicas: the leader is killed (SIGKILL)
    once it has begun the moves (a replica is being evicted) and before their replacements are
    bound. The replica that takes over places the gang, the replacements its ReplicaSet made
    and the pods on c, with no GPU given twice and nothing lost."""
    first, second = _two_moves_for_a_gang(cluster)
    args = ("--leader-elect", "--lease-seconds=6", "--interval=1")
    procs = {i: cluster.start_operator(*args, f"--identity={i}", name=i) for i in ("op-a", "op-b")}
    leader = wait_until(lambda: lease_holder(cluster), 60, "a leader")
    w = watch.Watch()
    for ev in w.stream(cluster.core.list_namespaced_pod, "ml", timeout_seconds=90):
        pod = ev["object"]
        if pod.metadata.name in (first, second) and (
            ev["type"] == "DELETED" or pod.metadata.deletion_timestamp
        ):
            procs[leader].stop(signal.SIGKILL)
            break
    w.stop()
    assert not procs[leader].alive(), "no move was seen begin"
    log = procs[leader].log.read_text()
    assert '"move_begun"' in log and '"move_placed"' not in log, "not killed mid-move"
    wait_until(lambda: lease_holder(cluster) not in (None, leader), 60, "the standby leads")
    pods = _gang_and_moved_bound(cluster)
    assert first not in pods and second not in pods
    names = [n for n in pods if not n.startswith("small-")]
    assert sorted(names) == ["big-0", "big-1", "fixed-0", "fixed-1"]
    assert problems(cluster, bound_names=names) == []
    assert [_where(pods[f"fixed-{i}"]) for i in range(2)] == [("c", [0]), ("c", [1])]


def test_a_degraded_gpu_is_emptied_with_a_checkpoint_and_replicas_one_at_a_time(
    cluster: Cluster,
) -> None:
    """GPU 3 of a1 runs half a GPU of a training gang (a StatefulSet of two members taking part
    in the checkpoint handshake; the other member runs on a2) and a quarter GPU each of two
    replicas of a Deployment. The agent (fake NVML) sees an NVLink error (XID 74) on it: the GPU is
    degraded. The gang is asked to checkpoint, evicted once the test acknowledges, made again
    by its StatefulSet and bound whole away from the GPU; the replicas surge one at a time, each new
    replica running before its old copy goes. Sampled all along: no budget is exceeded, no GPU
    is overfull, the Deployment never serves with fewer than two replicas nor runs more than
    three, and the degraded GPU takes no new work."""
    cluster.cp.start_controller_manager(CONTROLLERS)
    cluster.set_config({**QUICK, "checkpointTimeoutSeconds": 60}, [H100])
    cluster.power_domain("facility", None, None)
    cluster.power_domain("rack", "facility", 4000)
    for n in ("a1", "a2"):
        cluster.gpu_node(n, "rack", gpus=4)
    cluster.nodes_ready(2)
    cluster.namespace("ml")
    apps = client.AppsV1Api(cluster.api)
    gang_meta = {"wattpack.io/gang": "g"}
    gang_ann = {
        "wattpack.io/gang-size": "2",
        "wattpack.io/gpu-milli": "500",
        "wattpack.io/checkpoints": "true",
    }
    # A StatefulSet, not a Job: KWOK completes a Job's pods as soon as they run.
    apps.create_namespaced_stateful_set(
        "ml",
        {
            "metadata": {"name": "g"},
            "spec": {
                "replicas": 2,
                "serviceName": "g",
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": gang_meta},
                "template": _template("training", gang_meta, gang_ann),
            },
        },
    )
    _serving(apps, replicas=2)
    gang = wait_until(
        lambda: (lambda ps: ps if len(ps) == 2 else None)(_owned_by(cluster, "g-")),
        60,
        "the StatefulSet's two pods",
    )
    replicas = wait_until(
        lambda: (lambda ps: ps if len(ps) == 2 else None)(_owned_by(cluster, "svc-")),
        60,
        "the Deployment's two pods",
    )
    g0, g1 = (p["metadata"]["name"] for p in gang)
    r0, r1 = (p["metadata"]["name"] for p in replicas)
    _bind(cluster, {g0: ("a1", [3]), g1: ("a2", [0])})
    _bind(cluster, {r0: ("a1", [3])})
    _bind(cluster, {r1: ("a1", [3])})
    wait_until(
        lambda: all(p["status"].get("phase") == "Running" for p in cluster.pods("ml")),
        60,
        "the four pods running",
        describe=lambda: [(p["metadata"]["name"], p["status"]) for p in cluster.pods("ml")],
    )
    originals = {p["metadata"]["uid"] for p in cluster.pods("ml")}
    cluster.start_operator("--interval=1")
    time.sleep(3)  # healthy: the operator moves nothing
    assert not [e for e in cluster.events("ml") if e["reason"] == "Moving"]

    scenario = cluster.cp.root / "scenario.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "gpus": [{"uuid": f"GPU-a1-{i}"} for i in range(4)],
                "events": [{"at": 0.5, "gpu": 3, "xid": 74}],
            }
        )
    )
    agent = [
        sys.executable, "-m", "operators.cli", "--log-format", "json", "agent",
        "--backend", "fake", "--scenario", str(scenario), "--interval", "0.5",
        "--metrics-port", "0", "--pod-resources-socket", "", "--publish",
        "--kubeconfig", str(cluster.cp.kubeconfig), "--node", "a1",
    ]  # fmt: skip
    cluster.operators.append(Proc("agent", agent, cluster.cp.root / "agent.log").start())

    acked: set[str] = set()
    problems: list[str] = []
    most_replicas, fewest_serving = 0, 99

    def sample() -> None:
        nonlocal most_replicas, fewest_serving
        pods = cluster.pods("ml")
        svc_pods = [p for p in pods if p["metadata"]["name"].startswith("svc-")]
        live = _live(svc_pods)
        most_replicas = max(most_replicas, len(live))
        serving = [p for p in live if p["status"].get("phase") == "Running"]
        fewest_serving = min(fewest_serving, len(serving))
        for p in pods:
            md = p["metadata"]
            if (
                md["uid"] not in originals
                and p["spec"].get("nodeName") == "a1"
                and 3 in _where(p)[1]
            ):
                problems.append(f"{md['name']} given the degraded GPU")
            asked = (md.get("annotations") or {}).get(REQUESTED)
            if asked and md["name"] not in acked:
                # The workload saves its work, then says so; it was not evicted before.
                if md.get("deletionTimestamp"):
                    problems.append(f"{md['name']} evicted before it checkpointed")
                cluster.core.patch_namespaced_pod(
                    md["name"], "ml", {"metadata": {"annotations": {DONE: rfc3339()}}}
                )
                acked.add(md["name"])
        conv, policy = read_once(cluster.api)
        snap = conv.snapshot
        running = [(p, p.node) for p in snap.pods if p.node is not None]
        draw = domain_power(snap, running, policy)
        for d, budget in budgets(snap).items():
            if draw[d] > budget:
                problems.append(f"{d} draws {draw[d]} W over its {budget} W")
        milli: dict[tuple[str, int], int] = {}
        for p in snap.pods:
            for i in p.gpu_indices if p.node else []:
                key = (p.node, i)
                milli[key] = milli.get(key, 0) + (p.gpu_milli if p.fractional else 1000)
        problems.extend(f"GPU {k} holds {m} milli" for k, m in milli.items() if m > 1000)

    def settled() -> bool:
        sample()
        pods = cluster.pods("ml")
        live = [p for p in _live(pods) if p["spec"].get("nodeName")]
        moved_off = all(_where(p) != ("a1", [3]) for p in live)
        new = [p for p in live if p["metadata"]["uid"] not in originals]
        return (
            moved_off
            and len(new) == 4
            and all(p["status"].get("phase") == "Running" for p in new)
            and len(_live(pods)) == 4
        )

    wait_until(settled, 180, "the gang and both replicas moved off the degraded GPU", every=0.3)
    for _ in range(10):  # a few more cycles: nothing else moves, nothing comes back to GPU 3
        sample()
        time.sleep(0.3)
    assert problems == [], problems[:10]
    assert acked >= {g0, g1}  # both members were asked, and waited for their checkpoint
    assert most_replicas <= 3 and fewest_serving >= 2, (most_replicas, fewest_serving)
    pods = _live(cluster.pods("ml"))
    gang_now = [p for p in pods if p["metadata"]["name"].startswith("g-")]
    assert len(gang_now) == 2 and all(p["spec"].get("nodeName") for p in gang_now)
    events = _once_told(cluster, "Moved", 4)
    moving = sorted(e["involvedObject"]["name"] for e in events if e["reason"] == "Moving")
    assert moving == sorted([g0, g1, r0, r1])
    assert len([e for e in events if e["reason"] == "Moved"]) == 4
    # One at a time: the second replica's move began after the first's old copy was evicted
    # (the operator's log, in microseconds; Events keep whole seconds).
    lines = cluster.operators[0].tail(5000).splitlines()
    log = [json.loads(x) for x in lines if x.startswith("{")]
    when = {(e["event"], e.get("pod")): e["timestamp"] for e in log if "pod" in e}
    first, second = sorted((r0, r1), key=lambda n: when[("move_begun", f"ml/{n}")])
    assert when[("evicted", f"ml/{first}")] < when[("move_begun", f"ml/{second}")]
    deployment = apps.read_namespaced_deployment("svc", "ml")
    assert deployment.spec.replicas == 2
    text = cluster.operators[0].tail(600)
    assert "reservation_expired" not in text and "surge_abandoned" not in text, text[-3000:]
    assert len(bound(pods)) == 4


def test_a_surge_a_dead_leader_left_is_taken_back(cluster: Cluster) -> None:
    """A Deployment scaled up for a surge by a leader that died before it finished
    (wattpack.io/surge: "1", one replica over): the next leader, following no such move,
    scales it back."""
    cluster.cp.start_controller_manager(CONTROLLERS)
    cluster.set_config(QUICK, [H100])
    cluster.power_domain("facility", None, None)
    cluster.gpu_node("a1", "facility", gpus=4)
    cluster.nodes_ready(1)
    cluster.namespace("ml")
    apps = client.AppsV1Api(cluster.api)
    # As a leader that died mid-surge leaves it: one replica over, counted as a surge's.
    _serving(apps, replicas=3, annotations={"wattpack.io/surge": "1"})
    cluster.start_operator("--interval=1")

    def back() -> bool:
        d = apps.read_namespaced_deployment("svc", "ml")
        return d.spec.replicas == 2 and d.metadata.annotations.get("wattpack.io/surge") == "0"

    wait_until(back, 60, "the orphaned surge taken back")
    time.sleep(3)  # and no more than that
    assert back()
    assert "surge_orphaned" in cluster.operators[0].tail(400)
