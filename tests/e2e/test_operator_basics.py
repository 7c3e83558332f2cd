"""The operator against a real API server: manifests, binding, gangs, shares, and why a pod
waits."""

from __future__ import annotations

import pytest
from kube import Cluster, bound, scheduled_condition, wait_until

pytestmark = pytest.mark.slow

MODELS = [{"name": "H100-SXM", "tdpWatts": 700, "idleWatts": 75, "memoryMiB": 81920}]
POLICY = {"solver": {"timeLimitSeconds": 5, "workers": 1, "deterministic": True}}


def test_manifests_apply_server_side(cluster: Cluster) -> None:
    crds = cluster.cp.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/gpunodes.wattpack.io" in crds
    assert "customresourcedefinition.apiextensions.k8s.io/powerdomains.wattpack.io" in crds
    # RBAC is valid and least-privilege: the operator may bind but not delete pods.
    sa = "system:serviceaccount:wattpack-system:wattpack-operator"

    def can(verb: str, what: str, *extra: str) -> str:
        out = cluster.cp.kubectl("auth", "can-i", verb, what, *extra, f"--as={sa}", check=False)
        return out.stdout.strip()

    assert can("create", "pods", "--subresource=binding") == "yes"
    assert can("create", "pods", "--subresource=eviction") == "yes"
    assert can("update", "leases", "-n", "wattpack-system") == "yes"
    assert can("delete", "pods") == "no"
    assert can("update", "leases", "-n", "default") == "no"
    # The CRD's schema is enforced by the real server: a budget of 0 W is refused.
    bad = cluster.cp.kubectl(
        "apply",
        "-f",
        "-",
        check=False,
        stdin="apiVersion: wattpack.io/v1alpha1\nkind: PowerDomain\n"
        "metadata: {name: r}\nspec: {budgetWatts: 0}\n",
    )
    assert bad.returncode != 0 and "budgetWatts" in bad.stderr


def test_binds_gangs_and_shares_and_explains_the_rest(cluster: Cluster) -> None:
    cluster.set_config(POLICY, MODELS)
    cluster.power_domain("facility", None, None)
    # One node at full power plus a little: the gang fits, and so do two half-GPU shares.
    cluster.power_domain("rack-a", "facility", 8 * 700 + 8 * 75 + 600)
    cluster.gpu_node("gpu-a1", "rack-a")
    cluster.gpu_node("gpu-a2", "rack-a")
    cluster.nodes_ready(2)
    cluster.namespace("ml")
    for i in range(4):
        cluster.pod(f"gang-{i}", gpus=2, gang="g", gang_size=4)
    cluster.pod("share-a", milli=500, kind="inference")
    cluster.pod("share-b", milli=500, kind="inference")
    cluster.pod("too-big", gpus=16)
    cluster.start_operator("--interval=2")

    def settled():
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        return (
            pods
            if len(bound(list(pods.values()))) == 6 and scheduled_condition(pods["too-big"])
            else None
        )

    pods = wait_until(settled, 90, "6 pods bound and too-big explained")
    gang_nodes = {pods[f"gang-{i}"]["spec"]["nodeName"] for i in range(4)}
    gpus_taken: dict[str, set[int]] = {}
    for name in [f"gang-{i}" for i in range(4)]:
        p = pods[name]
        idx = [int(x) for x in p["metadata"]["annotations"]["wattpack.io/gpu-indices"].split(",")]
        assert len(idx) == 2
        taken = gpus_taken.setdefault(p["spec"]["nodeName"], set())
        assert not taken & set(idx), "a GPU was given twice"
        taken |= set(idx)
    assert gang_nodes  # all four bound (settled checked six)
    a, b = pods["share-a"], pods["share-b"]
    assert a["metadata"]["annotations"]["wattpack.io/gpu-indices"].count(",") == 0
    cond = scheduled_condition(pods["too-big"])
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert "gpu" in cond["message"].lower()
    events = [
        e
        for e in cluster.events("ml")
        if e["involvedObject"]["name"] == "too-big" and e["reason"] == "FailedScheduling"
    ]
    assert events and events[0]["message"] == cond["message"]
    # Two shares of 500 fit one GPU: the packer puts them together.
    assert (a["spec"]["nodeName"], a["metadata"]["annotations"]["wattpack.io/gpu-indices"]) == (
        b["spec"]["nodeName"],
        b["metadata"]["annotations"]["wattpack.io/gpu-indices"],
    )
