"""The whole path from a GPU fault to a placement: the agent (fake NVML) sees XID 79 on one GPU,
publishes it in the node's GPUNode, and the operator stops giving that GPU new work and says why
the pod it cannot place waits."""

from __future__ import annotations

import sys

import pytest
import yaml
from controlplane import Proc
from kube import Cluster, bound, scheduled_condition, wait_until

pytestmark = pytest.mark.slow

MODELS = [{"name": "H100-SXM", "tdpWatts": 700, "idleWatts": 75, "memoryMiB": 81920}]
POLICY = {"solver": {"timeLimitSeconds": 5, "workers": 1}}
NODE = "gpu-a1"
# Four GPUs; GPU 2 falls off the bus (XID 79) half a second in.
SCENARIO = {
    "gpus": [{"uuid": f"GPU-h2p-{i}"} for i in range(4)],
    "events": [{"at": 0.5, "gpu": 2, "xid": 79}],
}


def test_a_failed_gpu_takes_no_new_work(cluster: Cluster) -> None:
    cluster.set_config(POLICY, MODELS)
    cluster.power_domain("facility", None, None)
    cluster.gpu_node(NODE, "facility", gpus=4)
    cluster.nodes_ready(1)
    cluster.namespace("ml")
    scenario = cluster.cp.root / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    agent = [
        sys.executable, "-m", "operators.cli", "--log-format", "json", "agent",
        "--backend", "fake", "--scenario", str(scenario), "--interval", "0.5",
        "--metrics-port", "0", "--pod-resources-socket", "", "--publish",
        "--kubeconfig", str(cluster.cp.kubeconfig), "--node", NODE,
    ]  # fmt: skip
    cluster.operators.append(Proc("agent", agent, cluster.cp.root / "agent.log").start())

    def gpu2_failed() -> bool:
        try:
            obj = cluster.custom.get_cluster_custom_object(
                "wattpack.io", "v1alpha1", "gpunodes", NODE
            )
        except Exception:
            return False
        gpus = (obj.get("status") or {}).get("gpus") or []
        return any(g["index"] == 2 and g["health"] == "failed" for g in gpus)

    wait_until(gpu2_failed, 30, "GPU 2 published as failed")
    cluster.start_operator("--interval=1")
    for i in range(4):
        cluster.pod(f"one-{i}", gpus=1)

    def settled():
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        waiting = [p for p in pods.values() if not p["spec"].get("nodeName")]
        if len(bound(list(pods.values()))) == 3 and waiting and scheduled_condition(waiting[0]):
            return pods
        return None

    pods = wait_until(settled, 60, "three pods bound, the fourth explained")
    used = sorted(
        int(p["metadata"]["annotations"]["wattpack.io/gpu-indices"])
        for p in pods.values()
        if p["spec"].get("nodeName")
    )
    assert used == [0, 1, 3]
    (waiting,) = [p for p in pods.values() if not p["spec"].get("nodeName")]
    assert scheduled_condition(waiting)["reason"] == "Unschedulable"
