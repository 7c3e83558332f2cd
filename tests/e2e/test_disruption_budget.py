"""A PodDisruptionBudget on a real API server: the pods it covers are never evicted, and the
rest of the cluster keeps being bound in the same cycles."""

from __future__ import annotations

import time

import pytest
from kube import Cluster, bound, full_of_low_pods, once_bound, wait_until
from kubernetes import client

pytestmark = pytest.mark.slow


def test_a_budget_allowing_no_disruption_is_never_broken_and_others_still_bind(
    cluster: Cluster,
) -> None:
    full_of_low_pods(cluster, labels={"app": "keep"})
    # No disruption controller runs here, so the budget's status stays unobserved: the Eviction
    # API refuses every eviction it covers (429), as it does with disruptionsAllowed 0.
    client.PolicyV1Api(cluster.api).create_namespaced_pod_disruption_budget(
        "ml",
        {
            "metadata": {"name": "keep"},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "keep"}}},
        },
    )

    # Evicting two low pods would make room for it; the budget forbids it.
    cluster.pod("urgent", gpus=4, priority_class="high")
    time.sleep(3)
    # A small node arrives with room for other work (not for the urgent pod's 4 GPUs).
    cluster.gpu_node("gpu-a2", "facility", gpus=2)
    cluster.nodes_ready(2)
    for i in range(2):
        cluster.pod(f"other-{i}", gpus=1, priority_class="low")
    wait_until(
        lambda: (
            {p["metadata"]["name"] for p in bound(cluster.pods("ml"))} >= {"other-0", "other-1"}
        ),
        60,
        "the other pods bound while the urgent one waits",
    )
    time.sleep(3)  # a few more cycles
    pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
    assert all(pods[f"low-{i}"]["spec"].get("nodeName") == "gpu-a1" for i in range(4))
    assert not any(p["metadata"].get("deletionTimestamp") for p in pods.values())
    assert not pods["urgent"]["spec"].get("nodeName")
    assert not [e for e in cluster.events("ml") if e["reason"] == "Preempted"]
    log = cluster.operators[0].tail(400)
    # No eviction was tried and refused (a resourceVersion in the log may hold "429").
    assert "evict_failed" not in log and "eviction_refused" not in log, log[-2000:]


def test_a_budget_the_disruption_controller_keeps_allows_what_it_says_and_no_more(
    cluster: Cluster,
) -> None:
    """With the real disruption controller keeping the budget's status: minAvailable 3 of four
    running pods allows one eviction; once it is made, the budget allows none until a pod is
    back, so the second urgent pod waits and the other pods stay."""
    cluster.cp.start_controller_manager("disruption")
    full_of_low_pods(cluster, labels={"app": "keep"})
    policy_api = client.PolicyV1Api(cluster.api)
    policy_api.create_namespaced_pod_disruption_budget(
        "ml",
        {
            "metadata": {"name": "keep"},
            "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "keep"}}},
        },
    )

    def allows(n: int) -> bool:
        status = policy_api.read_namespaced_pod_disruption_budget("keep", "ml").status
        return status is not None and status.disruptions_allowed == n

    wait_until(lambda: allows(1), 60, "the disruption controller allowing one disruption")
    cluster.pod("urgent", gpus=2, priority_class="high")

    wait_until(once_bound(cluster, "urgent"), 90, "urgent bound after one eviction")
    cluster.pod("urgent-2", gpus=2, priority_class="high")
    time.sleep(5)  # cycles in which the budget allows nothing more
    pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
    assert not pods["urgent-2"]["spec"].get("nodeName")
    assert len([n for n in pods if n.startswith("low-")]) == 3
    preempted = [e for e in cluster.events("ml") if e["reason"] == "Preempted"]
    assert len(preempted) == 1
    log = cluster.operators[0].tail(400)
    assert "eviction_refused" not in log and "evict_failed" not in log, log[-2000:]
