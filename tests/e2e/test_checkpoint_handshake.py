"""The checkpoint handshake on a real API server: a training victim that takes part is asked to
checkpoint and evicted once it says it has, or when the policy's time is up."""

from __future__ import annotations

import time

import pytest
from kube import Cluster, bound, one_node, wait_until

from operators.timestamps import rfc3339

pytestmark = pytest.mark.slow

REQUESTED, DONE = "wattpack.io/checkpoint-requested", "wattpack.io/checkpointed"


def test_victims_are_evicted_after_their_checkpoint_or_its_timeout(cluster: Cluster) -> None:
    one_node(cluster, {"preemption": True, "checkpointTimeoutSeconds": 20})
    cluster.priority_class("high", 1000)
    cluster.priority_class("low", 10)
    for i in range(4):
        cluster.pod(
            f"low-{i}",
            gpus=2,
            priority_class="low",
            annotations={"wattpack.io/checkpoints": "true"},
        )
    cluster.start_operator("--interval=1")
    wait_until(lambda: len(bound(cluster.pods("ml"))) == 4, 60, "the node filled with low pods")

    cluster.pod("urgent", gpus=4, priority_class="high")

    def asked():
        pods = cluster.pods("ml")
        names = [
            p["metadata"]["name"]
            for p in pods
            if REQUESTED in (p["metadata"].get("annotations") or {})
        ]
        return names if len(names) == 2 else None

    victims = sorted(wait_until(asked, 60, "two victims asked to checkpoint"))
    time.sleep(3)
    pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
    assert all(not pods[v]["metadata"].get("deletionTimestamp") for v in victims)  # not yet
    first, second = victims
    cluster.core.patch_namespaced_pod(first, "ml", {"metadata": {"annotations": {DONE: rfc3339()}}})
    acked_at = time.monotonic()

    def gone(name: str):  # type: ignore[no-untyped-def]
        def check() -> bool:
            pod = {p["metadata"]["name"]: p for p in cluster.pods("ml")}.get(name)
            return pod is None or bool(pod["metadata"].get("deletionTimestamp"))

        return check

    wait_until(gone(first), 15, "the acknowledged victim evicted")
    assert time.monotonic() - acked_at < 15
    assert not gone(second)()  # it said nothing: it waits for the timeout
    wait_until(gone(second), 40, "the silent victim evicted at the timeout")

    def urgent_bound():
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        return pods if pods.get("urgent", {}).get("spec", {}).get("nodeName") else None

    pods = wait_until(urgent_bound, 60, "urgent bound once both victims are gone")
    assert len([n for n in pods if n.startswith("low-")]) == 2
    reasons = [e["reason"] for e in cluster.events("ml")]
    assert reasons.count("CheckpointRequested") == 2 and reasons.count("Preempted") == 2
