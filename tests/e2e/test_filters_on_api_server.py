"""kube-scheduler's node filters on a real API server: a GPU node pool tainted as managed pools
taint it, node selectors and required node affinity, and scheduling gates."""

from __future__ import annotations

import time

import pytest
from kube import (
    H100,
    QUICK,
    Cluster,
    not_in,
    once_bound,
    required_affinity,
    scheduled_condition,
    wait_until,
)

pytestmark = pytest.mark.slow

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def test_taints_selectors_affinity_and_gates(cluster: Cluster) -> None:
    cluster.set_config(QUICK, [H100])
    cluster.power_domain("facility", None, None)
    cluster.gpu_node("pool-a", "facility", gpus=8, labels={"pool": "a"}, taints=[GPU_TAINT])
    cluster.gpu_node("pool-b", "facility", gpus=8, labels={"pool": "b"}, taints=[GPU_TAINT])
    cluster.nodes_ready(2)
    cluster.namespace("ml")
    cluster.pod("tolerant", gpus=2)  # the helper's pods tolerate the GPU taint, as GPU pods do
    cluster.pod("intolerant", gpus=1, tolerations=[])
    cluster.pod("to-b", gpus=2, nodeSelector={"pool": "b"})
    cluster.pod(
        "not-a",
        gpus=2,
        affinity=required_affinity(not_in("pool", "a")),
    )
    cluster.pod("nowhere", gpus=1, nodeSelector={"pool": "c"})
    cluster.pod("gated", gpus=1, schedulingGates=[{"name": "example.com/quota"}])
    cluster.start_operator("--interval=1")

    def settled():
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        explained = all(scheduled_condition(pods[n]) for n in ("intolerant", "nowhere"))
        placed = all(pods[n]["spec"].get("nodeName") for n in ("tolerant", "to-b", "not-a"))
        return pods if explained and placed else None

    pods = wait_until(settled, 60, "the tolerant pods bound, the others explained")
    assert pods["to-b"]["spec"]["nodeName"] == "pool-b"
    assert pods["not-a"]["spec"]["nodeName"] == "pool-b"
    intolerant = scheduled_condition(pods["intolerant"])
    assert intolerant is not None and intolerant["message"] == (
        "0/2 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: present}."
    )
    nowhere = scheduled_condition(pods["nowhere"])
    assert nowhere is not None and nowhere["message"] == (
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    )
    time.sleep(2)  # more cycles: the gated pod is left alone, not bound, not written to
    gated = {p["metadata"]["name"]: p for p in cluster.pods("ml")}["gated"]
    # The API server marks it gated itself; wattpack writes nothing on it.
    condition = scheduled_condition(gated)
    assert not gated["spec"].get("nodeName")
    assert condition is None or condition["reason"] == "SchedulingGated", condition
    assert not [e for e in cluster.events("ml") if e["involvedObject"]["name"] == "gated"]
    # A JSON patch: a strategic merge of an empty list would keep the gates.
    cluster.core.patch_namespaced_pod(
        "gated", "ml", [{"op": "remove", "path": "/spec/schedulingGates"}]
    )
    wait_until(once_bound(cluster, "gated"), 60, "the pod bound once its gates are removed")


def test_pod_affinity_anti_affinity_and_spread_through_the_operator(cluster: Cluster) -> None:
    """Replicas one per node (the fourth waits, saying why), a pod that follows them into their
    zone, and a running pod's anti-affinity that keeps a noisy pod off its node."""
    cluster.set_config(QUICK, [H100])
    cluster.power_domain("facility", None, None)
    for i, zone in enumerate(["z1", "z1", "z2"]):
        cluster.gpu_node(f"n{i}", "facility", gpus=8, labels={"zone": zone}, taints=[GPU_TAINT])
    cluster.nodes_ready(3)
    cluster.namespace("ml")
    required = "requiredDuringSchedulingIgnoredDuringExecution"
    host = "kubernetes.io/hostname"
    guard = {"labelSelector": {"matchLabels": {"app": "noisy"}}, "topologyKey": host}
    cluster.pod(
        "guard", gpus=1, labels={"app": "guard"}, nodeName="n2",
        affinity={"podAntiAffinity": {required: [guard]}},
    )  # fmt: skip
    web = {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": host}
    for i in range(4):
        cluster.pod(
            f"web-{i}", gpus=1, kind="inference", labels={"app": "web"},
            affinity={"podAntiAffinity": {required: [web]}},
        )  # fmt: skip
    cluster.pod("noisy", gpus=1, labels={"app": "noisy"}, nodeSelector={"zone": "z2"})
    cluster.start_operator("--interval=1")

    def settled():
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        webs = [pods[f"web-{i}"]["spec"].get("nodeName") for i in range(4)]
        left = [pods[f"web-{i}"] for i in range(4) if webs[i] is None]
        explained = len(left) == 1 and scheduled_condition(left[0])
        return pods if explained and scheduled_condition(pods["noisy"]) else None

    pods = wait_until(settled, 60, "three replicas bound, the fourth and the noisy pod explained")
    webs = {pods[f"web-{i}"]["spec"].get("nodeName") for i in range(4)} - {None}
    assert webs == {"n0", "n1", "n2"}
    (left,) = [pods[f"web-{i}"] for i in range(4) if not pods[f"web-{i}"]["spec"].get("nodeName")]
    assert scheduled_condition(left)["message"] == (
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    )
    assert not pods["noisy"]["spec"].get("nodeName")
    assert scheduled_condition(pods["noisy"])["message"] == (
        "0/3 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) didn't satisfy existing pods anti-affinity rules."
    )
