"""What the operator plans with is deleted while it carries the plan out: a node after the cycle
read it, and a gang member while the gang is being bound. Nothing is bound to what is gone, no
gang is left half bound, and the operator places the work again by itself."""

from __future__ import annotations

import pytest
from kube import H100, QUICK, Cluster, wait_until
from kubernetes import client, watch
from nothing_lost import all_bound, problems

from operators.kube.cache import wait_synced
from operators.operator.loop import Operator, Settings
from operators.operator.metrics import OperatorMetrics

pytestmark = pytest.mark.slow


def _nodes(cluster: Cluster, *names: str) -> None:
    cluster.set_config(QUICK, [H100])
    cluster.power_domain("facility", None, None)
    for n in names:
        cluster.gpu_node(n, "facility")
    cluster.nodes_ready(len(names))
    cluster.namespace("ml")


def test_a_node_deleted_after_the_cycle_read_it_is_given_no_pod(cluster: Cluster) -> None:
    """A gang of two 8-GPU members needs both nodes; n1 is deleted once the cycle's view is
    taken (the operator runs in this process, its node watch stopped: the view stays as it was
    read), so the plan puts a member on n1. The binder finds n1 gone and binds neither member;
    when a node comes, a real operator binds the gang there and on n2."""
    _nodes(cluster, "n1", "n2")
    for i in range(2):
        cluster.pod(f"big-{i}", gpus=8, gang="big", gang_size=2)
    settings = Settings("wattpack-system", "wattpack-config")
    op = Operator(cluster.api, settings, OperatorMetrics(), "in-test")
    for informer in op.informers.values():
        informer.start()
    try:
        assert wait_synced(list(op.informers.values()), 30)
        wait_until(lambda: len(op.informers["pods"].items()) == 2, 30, "both members cached")
        op.informers["nodes"].stop()
        cluster.core.delete_node("n1")
        wait_until(
            lambda: [n.metadata.name for n in cluster.core.list_node().items] == ["n2"],
            30,
            "n1 gone from the server",
        )
        plan = op.cycle()
        assert plan is not None
        assert sorted(b.node for b in plan.bindings) == ["n1", "n2"]  # planned on the old view
    finally:
        op.stop()
    assert [p["spec"].get("nodeName") for p in cluster.pods("ml")] == [None, None]
    assert problems(cluster) == []

    cluster.gpu_node("n3", "facility")
    cluster.nodes_ready(2)
    cluster.start_operator("--interval=1")
    names = ["big-0", "big-1"]
    wait_until(lambda: all_bound(cluster, names), 60, "the gang bound on the nodes there are")
    assert sorted(p["spec"]["nodeName"] for p in cluster.pods("ml")) == ["n2", "n3"]
    assert problems(cluster, bound_names=names) == []


def test_a_member_deleted_while_its_gang_is_bound_leaves_no_half_gang(cluster: Cluster) -> None:
    """A StatefulSet's gang of eight 2-GPU members (the real kube-controller-manager makes a
    deleted member again). Once the operator has bound some members and not others, one not yet
    bound is deleted: the members bound are taken back (their controller makes them again) and
    the gang, whole again, is bound together. A gang bound too fast to catch is made again (at
    most three tries)."""
    cluster.cp.start_controller_manager("statefulset")
    _nodes(cluster, "n1", "n2")
    size = 8
    labels = {"wattpack.io/gang": "g", "wattpack.io/kind": "training"}
    res = {"requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}}
    res["limits"] = {"nvidia.com/gpu": "2"}
    client.AppsV1Api(cluster.api).create_namespaced_stateful_set(
        "ml",
        {
            "metadata": {"name": "g"},
            "spec": {
                "replicas": size,
                "serviceName": "g",
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {"wattpack.io/gang-size": str(size)},
                    },
                    "spec": {
                        "schedulerName": "wattpack",
                        "containers": [
                            {"name": "main", "image": "example.invalid/work:1", "resources": res}
                        ],
                    },
                },
            },
        },
    )
    cluster.start_operator("--interval=1")
    caught = None
    for _ in range(3):
        on: set[str] = set()
        uids: dict[str, str] = {}
        w = watch.Watch()
        for ev in w.stream(
            client.CoreV1Api(cluster.api).list_namespaced_pod, "ml", timeout_seconds=120
        ):
            pod = ev["object"]
            if ev["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                on.discard(pod.metadata.name)
                continue
            uids[pod.metadata.name] = pod.metadata.uid
            if pod.spec.node_name:
                on.add(pod.metadata.name)
            if 0 < len(on) < size:
                victim = sorted(set(uids) - on)[-1]  # bound last, if the binder goes by name
                cluster.core.delete_namespaced_pod(victim, "ml", grace_period_seconds=0)
                caught = (victim, uids[victim], len(on))
                break
            if len(on) == size:
                break
        w.stop()
        if caught:
            break
        for name in on:  # bound whole before it could be caught: again, with new members
            cluster.core.delete_namespaced_pod(name, "ml", grace_period_seconds=0)
    assert caught, "no gang was caught half bound in three tries"
    victim, old_uid, seen = caught
    print(f"{victim} deleted with {seen} of {size} members bound")

    def whole() -> list[dict] | None:
        pods = [p for p in cluster.pods("ml") if not p["metadata"].get("deletionTimestamp")]
        done = [p for p in pods if p["spec"].get("nodeName")]
        return pods if len(pods) == size and len(done) == size else None

    members = wait_until(
        whole, 120, "the gang bound whole again", describe=lambda: problems(cluster)
    )
    assert old_uid not in {p["metadata"]["uid"] for p in members}
    assert problems(cluster, bound_names=[p["metadata"]["name"] for p in members]) == []
    log = cluster.operators[0].log.read_text()
    # It saw the member go, and did not leave the others holding GPUs for a gang that could
    # not run: taken back, or never bound.
    assert "gang_member_taken_back" in log or '"group_not_bound"' in log
