"""A pod watch that stalls past the assumption window, on a real API server: the operator runs
in this process so that its pod watch can be stopped (the cache then stays as it was, as behind
a proxy that holds the stream), while its other watches and every write go on."""

from __future__ import annotations

import time

import pytest
from kube import H100, QUICK, Cluster, gpus_in_use, one_node, wait_until

from operators.kube.cache import wait_synced
from operators.operator.loop import Operator, Settings
from operators.operator.metrics import OperatorMetrics

pytestmark = pytest.mark.slow


def test_a_stalled_pod_watch_past_the_assumption_window_gives_no_gpu_twice(
    cluster: Cluster,
) -> None:
    one_node(cluster)
    cluster.pod("a", gpus=4)
    cluster.pod("c", gpus=4)
    cluster.pod("d", gpus=8, kind="inference")
    settings = Settings("wattpack-system", "wattpack-config", assume_for=0.5)
    op = Operator(cluster.api, settings, OperatorMetrics(), "in-test")
    for informer in op.informers.values():
        informer.start()
    try:
        assert wait_synced(list(op.informers.values()), 30)
        wait_until(lambda: len(op.informers["pods"].items()) == 3, 30, "three pods cached")
        op.informers["pods"].stop()  # the pod watch stalls: the cache keeps a, c and d pending

        first = op.cycle()
        assert first is not None
        assert {b.pod for b in first.bindings} == {"ml/a", "ml/c"}
        # The plan changes (inference now weighs most) while the cache still shows a and c
        # pending, after the window in which this process remembers binding them.
        cluster.set_config({**QUICK, "kindWeights": {"inference": 1000}}, [H100])
        wait_until(
            lambda: "1000" in str(op.informers["config"].items()), 30, "the new policy cached"
        )
        time.sleep(1.0)
        second = op.cycle()
        assert second is not None
        assert [b.pod for b in second.bindings] == ["ml/d"]  # d planned onto a's and c's GPUs
    finally:
        op.stop()
    pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
    assert not pods["d"]["spec"].get("nodeName")  # the server's pods said the GPUs are taken
    held = gpus_in_use(list(pods.values()))
    assert sorted(held) == list(range(8))
