"""The API-server target of the plan-execution contract, on a real API server: a hand-made plan
(one the planner would not make, since it reads PodDisruptionBudgets) carried out by
operators.kube.target. One refused eviction holds back its beneficiary and its other victims,
and nothing else."""

from __future__ import annotations

import time

import pytest
from builders import plan_of
from kube import (
    Cluster,
    bound,
    full_of_low_pods,
    gpus_in_use,
    once_bound,
    one_node,
    wait_until,
)
from kubernetes import client

from operators.kube.apply import Applier
from operators.kube.convert import GPU_INDICES as GPUS
from operators.kube.source import read_once
from operators.kube.target import Seen, carry_out
from scheduler.model import Binding, Eviction, Plan

pytestmark = pytest.mark.slow


def _plan(bindings: list[tuple[str, str, list[int]]], evictions: list[tuple[str, str]]) -> Plan:
    return plan_of(
        [Binding(pod=f"ml/{p}", node=n, gpu_indices=g) for p, n, g in bindings],
        [Eviction(pod=f"ml/{p}", node=n, reason="test") for p, n in evictions],
    )


def test_a_refused_eviction_holds_back_its_beneficiary_and_its_other_victims_only(
    cluster: Cluster,
) -> None:
    one_node(cluster)
    for i in range(4):
        cluster.pod(f"low-{i}", gpus=2, labels={"app": "keep" if i == 0 else "free"})
    proc = cluster.start_operator("--interval=1")
    wait_until(lambda: len(bound(cluster.pods("ml"))) == 4, 60, "four low pods bound")
    proc.stop()
    cluster.gpu_node("gpu-a2", "facility", gpus=2)
    cluster.nodes_ready(2)
    client.PolicyV1Api(cluster.api).create_namespaced_pod_disruption_budget(
        "ml",
        {
            "metadata": {"name": "keep"},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "keep"}}},
        },
    )
    cluster.pod("urgent", gpus=4)
    cluster.pod("other", gpus=1)
    cluster.pod("later", gpus=4)
    conv, policy = read_once(cluster.api)
    where = {p.name: (p.node, p.gpu_indices) for p in conv.snapshot.pods if p.node is not None}
    a1 = [n for n, (node, _) in where.items() if node == "gpu-a1"]
    assert len(a1) == 4
    applier = Applier(cluster.api, dry_run=False)

    # urgent would take low-0's and low-1's GPUs; the budget refuses low-0's eviction.
    urgent_gpus = sorted(where["low-0"][1] + where["low-1"][1])
    plan = _plan(
        [("urgent", "gpu-a1", urgent_gpus), ("other", "gpu-a2", [0])],
        [("low-0", "gpu-a1"), ("low-1", "gpu-a1")],
    )
    carried = carry_out(plan, conv.snapshot, policy, applier, Seen.of(cluster.pods("ml")))
    assert set(carried.refused) == {"ml/low-0"} and "429" in carried.refused["ml/low-0"]
    assert carried.held_back == {"ml/urgent": "ml/low-0"}
    assert carried.evicted == []  # low-1 would have been evicted for nothing
    assert carried.bound == ["ml/other"]  # the unrelated binding is made in the same cycle
    pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
    assert pods["other"]["spec"].get("nodeName") == "gpu-a2"
    assert not pods["urgent"]["spec"].get("nodeName")
    assert not any(pods[f"low-{i}"]["metadata"].get("deletionTimestamp") for i in range(4))

    # Victims the server lets go: evicted, and the binding waits for them to be gone.
    later_gpus = sorted(where["low-2"][1] + where["low-3"][1])
    conv, policy = read_once(cluster.api)
    plan = _plan([("later", "gpu-a1", later_gpus)], [("low-2", "gpu-a1"), ("low-3", "gpu-a1")])
    carried = carry_out(plan, conv.snapshot, policy, applier, Seen.of(cluster.pods("ml")))
    assert sorted(carried.evicted) == ["ml/low-2", "ml/low-3"] and carried.refused == {}
    assert carried.waiting == ["ml/later"] and carried.bound == []
    pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
    assert not pods["later"]["spec"].get("nodeName")


def test_room_freed_by_evictions_is_held_for_its_pod_and_nominated(cluster: Cluster) -> None:
    """urgent's victims are evicted; until they are gone it is nominated to their node and
    kept out of planning; then it is bound there, and a pod of lower priority that arrived
    meanwhile does not take the room."""
    full_of_low_pods(cluster)
    cluster.pod("urgent", gpus=4, priority_class="high")

    def nominated():
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        u = pods.get("urgent", {})
        return u if u.get("status", {}).get("nominatedNodeName") else None

    u = wait_until(nominated, 60, "urgent nominated while its victims go")
    assert u["status"]["nominatedNodeName"] == "gpu-a1"
    # Fits exactly the room being freed, and may evict no one.
    cluster.pod("sneaky", gpus=4, priority_class="low")

    pods = wait_until(once_bound(cluster, "urgent"), 90, "urgent bound once its victims are gone")
    assert pods["urgent"]["spec"]["nodeName"] == "gpu-a1"
    time.sleep(3)
    pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
    assert not pods["sneaky"]["spec"].get("nodeName")
    held = gpus_in_use(list(pods.values()))
    assert sorted(held) == list(range(8))  # no GPU given twice
    preempted = [e for e in cluster.events("ml") if e["reason"] == "Preempted"]
    assert len(preempted) == 2  # its victims, and no more while they were going
    log = cluster.operators[0].tail(400)
    assert "group_not_bound" not in log and "reservation_expired" not in log


def test_the_binder_checks_gpus_on_the_server_and_a_fenced_replica_writes_nothing(
    cluster: Cluster,
) -> None:
    one_node(cluster)
    for name in ("first", "second", "third"):
        cluster.pod(name, gpus=2)
    conv, _ = read_once(cluster.api)
    uids = conv.uids
    applier = Applier(cluster.api, dry_run=False)
    b = _plan([("first", "gpu-a1", [0, 1])], []).bindings
    assert applier.bind_group(b, uids).bound == ["ml/first"]
    # A cache that lags would show GPU 1 free: the server's pods say it is not.
    clash = _plan([("second", "gpu-a1", [1, 2])], []).bindings
    out = applier.bind_group(clash, uids)
    assert out.bound == [] and "GPU 1 of gpu-a1 is already taken" in out.failed["ml/second"]
    # A replica that lost its lease writes nothing, however far its cycle got.
    fenced = Applier(cluster.api, dry_run=False, may_write=lambda: False)
    free = _plan([("third", "gpu-a1", [4, 5])], [("first", "gpu-a1")])
    assert fenced.bind_group(free.bindings, uids).bound == []
    assert fenced.evict(free.evictions[0], uids["ml/first"]) is False
    fenced.nominate("ml/third", "gpu-a1")
    pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
    assert pods["first"]["spec"]["nodeName"] == "gpu-a1"
    assert not pods["first"]["metadata"].get("deletionTimestamp")
    assert not pods["second"]["spec"].get("nodeName") and not pods["third"]["spec"].get("nodeName")
    assert "nominatedNodeName" not in pods["third"].get("status", {})


def test_groups_bound_at_once_share_no_gpu_and_a_stale_cache_binds_nothing(
    cluster: Cluster,
) -> None:
    """Lone pods are checked against the cache, not read again: what the cache no longer
    knows, the Binding's own checks on the server catch (the UID, already bound)."""
    one_node(cluster)
    for name in ("p", "q", "r", "s", "t"):
        cluster.pod(name, gpus=2)
    seen = Seen.of(cluster.pods("ml"))  # the cache as it stays for this test
    applier = Applier(cluster.api, dry_run=False)
    groups = [
        _plan([("p", "gpu-a1", [0, 1])], []).bindings,
        _plan([("q", "gpu-a1", [1, 2])], []).bindings,  # GPU 1 is p's too
        _plan([("r", "gpu-gone", [0, 1])], []).bindings,  # a node the cache still shows
        _plan([("s", "gpu-a1", [6, 7])], []).bindings,
    ]
    outs = applier.bind_groups(groups, seen.uids, seen.raw)
    assert [o.bound for o in outs] == [["ml/p"], [], [], ["ml/s"]]
    assert "GPU 1 of gpu-a1 is already taken" in outs[1].failed["ml/q"]
    assert "node gpu-gone is gone" in outs[2].failed["ml/r"]

    # p is bound on the server, pending in the cache; t is deleted and made again.
    cluster.core.delete_namespaced_pod("t", "ml", grace_period_seconds=0)
    wait_until(lambda: "t" not in {p["metadata"]["name"] for p in cluster.pods("ml")}, 30, "t gone")
    cluster.pod("t", gpus=2)
    again = [
        _plan([("p", "gpu-a1", [4, 5])], []).bindings,
        _plan([("t", "gpu-a1", [2, 3])], []).bindings,
    ]
    outs = applier.bind_groups(again, seen.uids, seen.raw)
    assert [o.bound for o in outs] == [[], []]
    assert "already assigned" in outs[0].failed["ml/p"], outs[0].failed
    assert "UID" in outs[1].failed["ml/t"], outs[1].failed

    pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
    where = {n: (p["spec"].get("nodeName"), p["metadata"].get("annotations", {}).get(GPUS))
             for n, p in pods.items()}  # fmt: skip
    assert where == {
        "p": ("gpu-a1", "0,1"),  # the annotation came with the Binding, and stays
        "q": (None, None),
        "r": (None, None),
        "s": ("gpu-a1", "6,7"),
        "t": (None, None),
    }


def test_a_member_deleted_before_its_bind_leaves_no_member_of_its_gang_bound(
    cluster: Cluster,
) -> None:
    one_node(cluster)
    for i in range(2):
        cluster.pod(f"big-{i}", gpus=2, gang="big", gang_size=2)
    conv, _ = read_once(cluster.api)

    class DeletedMeanwhile(Applier):
        """The cluster as it may be: member big-1 is deleted after the group's checks passed
        and before its own bind (a real deletion on the server, at that moment)."""

        def _bind(self, b, uid):  # type: ignore[no-untyped-def]
            if b.pod == "ml/big-1":
                self.core.delete_namespaced_pod("big-1", "ml", grace_period_seconds=0)
            super()._bind(b, uid)

    group = _plan([("big-0", "gpu-a1", [0, 1]), ("big-1", "gpu-a1", [2, 3])], []).bindings
    applier = DeletedMeanwhile(cluster.api, dry_run=False)
    out = applier.bind_group(group, conv.uids)
    assert out.bound == [] and set(out.failed) == {"ml/big-0", "ml/big-1"}
    applier.events.wait()  # Events go out in the background

    def no_member_bound():
        pods = cluster.pods("ml")
        return all(not p["spec"].get("nodeName") or p["metadata"].get("deletionTimestamp")
                   for p in pods) or None  # fmt: skip

    wait_until(no_member_bound, 30, "big-0 taken back")
    scheduled = [e for e in cluster.events("ml") if e["reason"] == "Scheduled"]
    assert [e["involvedObject"]["name"] for e in scheduled] == ["big-0"]
    assert scheduled[0]["message"] == "Successfully assigned ml/big-0 to gpu-a1 (GPUs 0,1)"


def test_after_a_leader_died_mid_gang_the_next_one_completes_it_and_gives_no_gpu_twice(
    cluster: Cluster,
) -> None:
    """The state a leader killed between two members' binds leaves (big-0 bound, big-1 not),
    made on the server directly; the operator that takes over binds big-1 beside it."""
    one_node(cluster)
    for i in range(2):
        cluster.pod(f"big-{i}", gpus=4, gang="big", gang_size=2)
    cluster.pod("lone", gpus=2)
    conv, _ = read_once(cluster.api)
    half = _plan([("big-0", "gpu-a1", [2, 3, 4, 5])], []).bindings
    assert Applier(cluster.api, dry_run=False).bind_group(half, conv.uids).bound == ["ml/big-0"]
    cluster.start_operator("--interval=1")

    def gang_whole():
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        ok = all(pods.get(f"big-{i}", {}).get("spec", {}).get("nodeName") for i in range(2))
        return pods if ok else None

    pods = wait_until(gang_whole, 60, "the half-bound gang completed")
    held = gpus_in_use(list(pods.values()))
    assert len(held) == len(set(held)) == 8  # big-1 got 0,1,6,7; lone waits; none twice
    assert not pods["lone"]["spec"].get("nodeName")
