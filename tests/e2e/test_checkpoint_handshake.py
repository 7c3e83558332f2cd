"""The checkpoint handshake on a real API server: a training victim that takes part is asked to
checkpoint and evicted once it says it has, or when the policy's time is up."""

from __future__ import annotations

import time

import pytest
from kube import Cluster, full_of_low_pods, once_bound, wait_until

from operators.timestamps import rfc3339

pytestmark = pytest.mark.slow

REQUESTED, DONE = "wattpack.io/checkpoint-requested", "wattpack.io/checkpointed"


def test_victims_are_evicted_after_their_checkpoint_or_its_timeout(cluster: Cluster) -> None:
    full_of_low_pods(
        cluster,
        {"checkpointTimeoutSeconds": 20},
        annotations={"wattpack.io/checkpoints": "true"},
    )
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

    pods = wait_until(once_bound(cluster, "urgent"), 60, "urgent bound once both victims are gone")
    assert len([n for n in pods if n.startswith("low-")]) == 2
    reasons = [e["reason"] for e in cluster.events("ml")]
    assert reasons.count("CheckpointRequested") == 2 and reasons.count("Preempted") == 2
