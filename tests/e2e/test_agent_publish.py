"""The node agent against a real API server: it writes its node's GPUNode with server-side
apply (owned by the Node), reports a GPU failure within seconds, caps GPUs at spec.powerLimits
(clamped to what each GPU allows), and does not rewrite an unchanged status every round."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest
import yaml
from controlplane import Proc
from kube import Cluster, wait_until
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.slow

NODE = "gpu-a1"
GROUP, VERSION, PLURAL = "wattpack.io", "v1alpha1", "gpunodes"
# GPU 1 starts below its maximum so that a too-high ask shows as a change to the maximum;
# GPU 2 falls off the bus a second in. Nothing changes after that: the quiet check relies on it.
SCENARIO = {
    "gpus": [
        {"uuid": "GPU-e2e-0"},
        {"uuid": "GPU-e2e-1", "initial": {"power_limit_mw": 300_000}},
        {"uuid": "GPU-e2e-2"},
    ],
    "events": [{"at": 1, "gpu": 2, "xid": 79}],
}


def start_agent(cluster: Cluster, *args: str) -> Proc:
    scenario = cluster.cp.root / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    cmd = [
        sys.executable, "-m", "operators.cli", "--log-level", "info", "--log-format", "json",
        "agent", "--backend", "fake", "--scenario", str(scenario), "--interval", "0.5",
        "--metrics-port", "0", "--publish", "--kubeconfig", str(cluster.cp.kubeconfig),
        "--node", NODE, *args,
    ]  # fmt: skip
    proc = Proc("agent", cmd, cluster.cp.root / "agent.log").start()
    cluster.operators.append(proc)  # stopped, and its log shown, by the fixture
    return proc


def gpunode(cluster: Cluster) -> dict[str, Any] | None:
    try:
        return dict(cluster.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, NODE))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def gpus(cluster: Cluster) -> list[dict[str, Any]]:
    obj = gpunode(cluster) or {}
    return list((obj.get("status") or {}).get("gpus") or [])


def ask(cluster: Cluster, limits: list[dict[str, int]]) -> None:
    cluster.custom.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, NODE, {"spec": {"powerLimits": limits}}
    )


def test_agent_publishes_gpunode_reports_failures_and_applies_power_limits(
    cluster: Cluster,
) -> None:
    cluster.gpu_node(NODE, "rack-a", gpus=3)
    node_uid = cluster.core.read_node(NODE).metadata.uid
    agent = start_agent(cluster)

    obj = wait_until(
        lambda: (g := gpunode(cluster)) and (g.get("status") or {}).get("gpuCount") == 3 and g,
        30,
        "the agent's GPUNode with a status",
    )
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": node_uid}
    ]
    status = obj["status"]
    assert [g["uuid"] for g in status["gpus"]] == ["GPU-e2e-0", "GPU-e2e-1", "GPU-e2e-2"]
    assert [g["powerLimitWatts"] for g in status["gpus"]] == [700, 300, 700]
    assert status["observedAt"] and status["powerWatts"] == 3 * 70

    # XID 79 at 1 s: failed, with a reason, within a few seconds.
    failed = wait_until(
        lambda: (g := gpus(cluster)) and g[2]["health"] == "failed" and g,
        10,
        "GPU 2 failed in the GPUNode status",
    )
    assert failed[2]["reasons"] and "79" in " ".join(failed[2]["reasons"])
    assert [g["health"] for g in failed[:2]] == ["healthy", "healthy"]
    assert (gpunode(cluster) or {})["status"]["healthyCount"] == 2

    # A limit in spec is applied and the next status shows it; one above the GPU's maximum
    # is clamped to the maximum.
    ask(cluster, [{"index": 0, "watts": 500}])
    wait_until(lambda: gpus(cluster)[0].get("powerLimitWatts") == 500, 10, "GPU 0 capped at 500")
    ask(cluster, [{"index": 0, "watts": 500}, {"index": 1, "watts": 5000}])
    wait_until(lambda: gpus(cluster)[1].get("powerLimitWatts") == 700, 10, "GPU 1 at its max")
    assert gpus(cluster)[0]["powerLimitWatts"] == 500

    # Written by server-side apply, object and status, as the agent's field manager; the spec
    # stays whoever set it.
    managed = {
        (m["manager"], m["operation"], m.get("subresource", ""))
        for m in (gpunode(cluster) or {})["metadata"]["managedFields"]
    }
    assert {("wattpack-agent", "Apply", ""), ("wattpack-agent", "Apply", "status")} <= managed
    assert (gpunode(cluster) or {})["spec"]["powerLimits"][1] == {"index": 1, "watts": 5000}

    # Nothing changes now: over several rounds, no write (observedAt would move every second).
    time.sleep(1.0)  # the round that saw the last set has published
    before = (gpunode(cluster) or {})["metadata"]["resourceVersion"]
    time.sleep(3.0)
    assert (gpunode(cluster) or {})["metadata"]["resourceVersion"] == before
    assert agent.alive()


def test_once_publishes_one_status_and_exits(cluster: Cluster) -> None:
    cluster.gpu_node(NODE, "rack-a", gpus=3)
    agent = start_agent(cluster, "--once", "--at", "5")
    assert agent.popen is not None and agent.popen.wait(60) == 0, agent.tail()
    status = (gpunode(cluster) or {}).get("status") or {}
    assert status["gpuCount"] == 3 and status["healthyCount"] == 2
    assert status["gpus"][2]["health"] == "failed"
