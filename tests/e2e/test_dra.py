"""GPUs through Dynamic Resource Allocation on a real API server: ResourceSlices published as the
NVIDIA DRA driver publishes them (pool and nodeName the node, devices gpu-<minor> with type, uuid
and the other attributes, memory capacity; the DeviceClass gpu.nvidia.com), pods with
ResourceClaims, and wattpack allocating the claims to the GPUs it planned, then binding. A
degraded GPU's device is never allocated, no device is in two claims, and device-plugin pods
keep going to device-plugin nodes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kube import H100, QUICK, Cluster, bound, scheduled_condition, wait_until
from kubernetes import client

from operators.kube.apply import Applier
from operators.kube.dra_apply import ClaimWriter, Written
from scheduler.model import Binding

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DRIVER = "gpu.nvidia.com"
NODE = "dra-a1"
# The agent's NVML index of each GPU by UUID; the driver names devices by minor number, and on
# this machine minors 0 and 1 are NVML indices 1 and 0.
UUIDS = [f"GPU-4f1c2a7e-000{i}" for i in range(4)]
MINOR_TO_INDEX = {0: 1, 1: 0, 2: 2, 3: 3}
INDEX_OF = {f"gpu-{m}": i for m, i in MINOR_TO_INDEX.items()}
DEGRADED = 2


HOST = "kubernetes.io/hostname"


def _res(cluster: Cluster) -> client.ResourceV1Api:
    return client.ResourceV1Api(cluster.api)


def _driver(cluster: Cluster, node: str, degraded: int | None = DEGRADED) -> None:
    """The DeviceClass, the node's ResourceSlice and its GPUNode, as the driver's helm chart,
    its kubelet plugin and wattpack's agent write them."""
    res = _res(cluster)
    expression = f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'gpu'"
    res.create_device_class(
        {"metadata": {"name": DRIVER}, "spec": {"selectors": [{"cel": {"expression": expression}}]}}
    )
    owner = cluster.core.read_node(node)
    devices = []
    for minor, index in MINOR_TO_INDEX.items():
        attrs: dict[str, Any] = {
            "type": {"string": "gpu"},
            "uuid": {"string": UUIDS[index]},
            "productName": {"string": "NVIDIA H100 80GB HBM3"},
            "brand": {"string": "Nvidia"},
            "architecture": {"string": "Hopper"},
            "cudaComputeCapability": {"version": "9.0.0"},
            "driverVersion": {"version": "570.124.6"},
            "cudaDriverVersion": {"version": "12.8.0"},
            "resource.kubernetes.io/pciBusID": {"string": f"0000:{0x18 + minor:02x}:00.0"},
        }
        devices.append(
            {"name": f"gpu-{minor}", "attributes": attrs, "capacity": {"memory": {"value": "80Gi"}}}
        )
    res.create_resource_slice(
        {
            "metadata": {
                "generateName": f"{node}-{DRIVER}-",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node,
                                     "uid": owner.metadata.uid, "controller": True}],
            },
            "spec": {
                "driver": DRIVER,
                "nodeName": node,
                "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                "devices": devices,
            },
        }
    )  # fmt: skip
    gpus = [{"index": i, "uuid": u, "health": "degraded" if i == degraded else "healthy"}
            for i, u in enumerate(UUIDS)]  # fmt: skip
    if degraded is not None:
        gpus[degraded]["reasons"] = ["xid 74 (NVLink error)"]
    cluster.custom.create_cluster_custom_object(
        "wattpack.io", "v1alpha1", "gpunodes",
        {"apiVersion": "wattpack.io/v1alpha1", "kind": "GPUNode", "metadata": {"name": node}},
    )  # fmt: skip
    cluster.custom.patch_cluster_custom_object_status(
        "wattpack.io", "v1alpha1", "gpunodes", node, {"status": {"gpus": gpus}}
    )


def _request(count: int = 1, **extra: Any) -> dict[str, Any]:
    exactly = {"deviceClassName": DRIVER, **extra}
    if "allocationMode" not in extra:  # the server refuses a count with mode All
        exactly["count"] = count
    return {"name": "gpus", "exactly": exactly}


def _claim(cluster: Cluster, name: str, count: int = 1, **extra: Any) -> None:
    body = {
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [_request(count, **extra)]}},
    }
    _res(cluster).create_namespaced_resource_claim("ml", body)


def _claim_pod(cluster: Cluster, name: str, *claims: str, template: str | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    refs = [{"name": f"c{i}", "resourceClaimName": c} for i, c in enumerate(claims)]
    if template:
        refs.append({"name": "t", "resourceClaimTemplateName": template})
    return cluster.pod(name, gpus=0, resourceClaims=refs, **kw)


def _claims(cluster: Cluster) -> dict[str, dict[str, Any]]:
    resp = _res(cluster).list_namespaced_resource_claim("ml", _preload_content=False)
    return {c["metadata"]["name"]: c for c in json.loads(resp.data)["items"]}


def _devices(c: dict[str, Any]) -> list[str]:
    alloc = (c.get("status") or {}).get("allocation") or {}
    return [r["device"] for r in (alloc.get("devices") or {}).get("results") or []]


def _annotated(pod: dict[str, Any]) -> list[int]:
    text = pod["metadata"]["annotations"]["wattpack.io/gpu-indices"]
    return sorted(int(x) for x in text.split(",") if x)


def _setup(cluster: Cluster, policy: dict[str, Any] | None = None) -> None:
    cluster.set_config({**QUICK, "preemption": False, **(policy or {})}, [H100])
    cluster.power_domain("facility", None, None)
    cluster.gpu_node(NODE, "facility", gpus=0)  # its GPUs come only through DRA
    cluster.gpu_node("plug-a1", "facility", gpus=4)  # the NVIDIA device plugin's node
    cluster.nodes_ready(2)
    cluster.namespace("ml")
    _driver(cluster, NODE)


def test_wattpack_allocates_claims_to_the_planned_gpus_and_never_a_degraded_one(
    cluster: Cluster,
) -> None:
    _setup(cluster)
    cluster.cp.start_controller_manager("resourceclaim-controller")  # claims from templates
    _claim(cluster, "pair", 2)
    _claim(cluster, "every", allocationMode="All")
    _res(cluster).create_namespaced_resource_claim_template(
        "ml",
        {"metadata": {"name": "one"}, "spec": {"spec": {"devices": {"requests": [_request()]}}}},
    )
    _claim_pod(cluster, "direct", "pair")
    _claim_pod(cluster, "sharer", "pair")  # one claim, two pods: a shared GPU pair
    _claim_pod(cluster, "templated", template="one")
    _claim_pod(cluster, "unsupported", "every")
    cluster.pod("plugin", gpus=2)
    cluster.start_operator("--interval=1")

    def placed() -> dict[str, dict[str, Any]] | None:
        pods = {p["metadata"]["name"]: p for p in cluster.pods("ml")}
        names = {p["metadata"]["name"] for p in bound(list(pods.values()))}
        ready = names == {"direct", "sharer", "templated", "plugin"}
        return pods if ready and scheduled_condition(pods["unsupported"]) else None

    pods = wait_until(placed, 90, "the claim pods and the plugin pod bound",
                      describe=lambda: [(p["metadata"]["name"], p["spec"].get("nodeName"))
                                        for p in cluster.pods("ml")])  # fmt: skip
    # The healthy GPUs (0, 1, 3) are all held now and GPU 2 is degraded: one more claim waits.
    _claim(cluster, "single")
    _claim_pod(cluster, "extra", "single")

    def explained() -> dict[str, Any] | None:
        p = next(p for p in cluster.pods("ml") if p["metadata"]["name"] == "extra")
        return p if scheduled_condition(p) else None

    extra = wait_until(explained, 60, "the extra claim pod explained")
    assert not extra["spec"].get("nodeName")
    assert {pods[n]["spec"]["nodeName"] for n in ("direct", "sharer", "templated")} == {NODE}
    assert pods["plugin"]["spec"]["nodeName"] == "plug-a1"
    why = scheduled_condition(pods["unsupported"])
    assert why["reason"] == "Unschedulable" and "allocationMode All" in why["message"]

    claims = _claims(cluster)
    made = [n for n, c in claims.items() if n.startswith("templated-")]
    assert len(made) == 1, sorted(claims)
    held = {"pair": ["direct", "sharer"], made[0]: ["templated"]}
    seen: dict[str, str] = {}
    for name, users in held.items():
        c = claims[name]
        alloc = c["status"]["allocation"]
        assert alloc["nodeSelector"]["nodeSelectorTerms"] == [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}
        ]
        for r in alloc["devices"]["results"]:
            assert (r["request"], r["driver"], r["pool"]) == ("gpus", DRIVER, NODE)
        reserved = {(r["resource"], r["name"], r["uid"]) for r in c["status"]["reservedFor"]}
        assert reserved == {("pods", u, pods[u]["metadata"]["uid"]) for u in users}
        assert "resource.kubernetes.io/delete-protection" in c["metadata"]["finalizers"]
        indices = sorted(INDEX_OF[d] for d in _devices(c))
        assert indices == _annotated(pods[users[0]]), name  # the devices at the planned GPUs
        for d in _devices(c):
            assert d not in seen, f"{d} in {seen.get(d)} and {name}"
            seen[d] = name
    assert _annotated(pods["sharer"]) == _annotated(pods["direct"])
    assert sorted(INDEX_OF[d] for d in seen) == [0, 1, 3]  # never the degraded GPU 2
    assert not _devices(claims["single"]) and not _devices(claims["every"])


def test_an_idle_operator_does_not_plan_again_and_a_new_claim_comes_through_its_watch(
    cluster: Cluster,
) -> None:
    # The resourceclaims watch once failed on every start with a client that has no
    # V1ResourceClaim model; each failure relisted and woke the operator, so an idle one
    # planned about once a second. With the timer at 600 s, every cycle here is a change seen.
    _setup(cluster)
    proc = cluster.start_operator("--interval=600")

    def cycles() -> int:
        return proc.log.read_text().count('"cycle_done"')

    wait_until(cycles, 60, "the first cycle")
    before = cycles()
    time.sleep(10)  # idle: nothing changes in the cluster
    idle = cycles() - before
    # Changes that are real may still come: the PowerDomain status its first cycle wrote, and a
    # status KWOK writes on each of the two nodes now and then. The broken watch made ten.
    assert idle <= 3, proc.tail(40)
    text = proc.log.read_text()
    assert '"watch_' not in text, proc.tail(40)

    _claim(cluster, "late")
    _claim_pod(cluster, "late-pod", "late")
    wait_until(lambda: bound(cluster.pods("ml")), 60, "the late claim's pod bound")
    assert _devices(_claims(cluster)["late"])
    listed = [
        x for x in proc.log.read_text().splitlines() if '"listed"' in x and '"resourceclaims"' in x
    ]
    assert len(listed) == 1, listed  # the new claim came through the watch, not a relist


def test_a_gang_whose_claim_cannot_be_allocated_is_not_bound_and_nothing_stays_written(
    cluster: Cluster,
) -> None:
    _setup(cluster)
    for name in ("ga", "gb", "squat"):
        _claim(cluster, name)
    # Someone else holds gpu-3 (GPU 3): written as kube-scheduler's allocator writes it.
    squat = _claims(cluster)["squat"]
    squat["status"] = {
        "allocation": {
            "devices": {"results": [{"request": "gpus", "driver": DRIVER, "pool": NODE,
                                     "device": "gpu-3"}]},
            "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [NODE]}]}]},
        }
    }  # fmt: skip
    _res(cluster).replace_namespaced_resource_claim_status("squat", "ml", squat)
    for pod, claim in (("gang-a", "ga"), ("gang-b", "gb")):
        _claim_pod(cluster, pod, claim, gang="g", gang_size=2)
    uids = {f"ml/{p['metadata']['name']}": p["metadata"]["uid"] for p in cluster.pods("ml")}
    applier = Applier(cluster.api, dry_run=False)

    out = applier.bind_group(
        [Binding(pod="ml/gang-a", node=NODE, gpu_indices=[0]),
         Binding(pod="ml/gang-b", node=NODE, gpu_indices=[3])], uids,
    )  # fmt: skip
    assert out.bound == []
    assert "already allocated to ResourceClaim ml/squat" in out.failed["ml/gang-a"]
    claims = _claims(cluster)
    for name in ("ga", "gb"):  # gang-a's allocation was taken back whole
        status = claims[name].get("status") or {}
        assert not status.get("allocation") and not status.get("reservedFor"), name
        assert "resource.kubernetes.io/delete-protection" not in (
            claims[name]["metadata"].get("finalizers") or []
        )
    assert not bound(cluster.pods("ml"))

    out = applier.bind_group(
        [Binding(pod="ml/gang-a", node=NODE, gpu_indices=[0]),
         Binding(pod="ml/gang-b", node=NODE, gpu_indices=[1])], uids,
    )  # fmt: skip
    assert sorted(out.bound) == ["ml/gang-a", "ml/gang-b"]
    claims = _claims(cluster)
    assert _devices(claims["ga"]) == ["gpu-1"] and _devices(claims["gb"]) == ["gpu-0"]


def test_taking_back_a_member_keeps_the_reservation_of_one_sharing_its_claim(
    cluster: Cluster,
) -> None:
    # Two members of a group share one claim; one is bound and the other is not (its bind
    # failed, or the replica lost its lease between the two): only the other's reservation is
    # taken back, and the claim stays allocated for the bound one, whose kubelet prepares it.
    _setup(cluster)
    _claim(cluster, "both")
    for name in ("sa", "sb"):
        _claim_pod(cluster, name, "both")
    pods = {f"ml/{p['metadata']['name']}": p for p in cluster.pods("ml")}
    writer, written = ClaimWriter(cluster.api, lambda: True), Written()
    held = writer.reserve(
        [Binding(pod="ml/sa", node=NODE, gpu_indices=[0]),
         Binding(pod="ml/sb", node=NODE, gpu_indices=[])], pods, written,
    )  # fmt: skip
    assert held == {"ml/sa": [0], "ml/sb": [0]}

    writer.undo(written, {"ml/sb"})
    c = _claims(cluster)["both"]
    assert [r["name"] for r in c["status"]["reservedFor"]] == ["sa"]
    assert [INDEX_OF[d] for d in _devices(c)] == [0]
    assert "resource.kubernetes.io/delete-protection" in c["metadata"]["finalizers"]

    writer.undo(written, {"ml/sa"})  # the last one out: the allocation goes with it
    c = _claims(cluster)["both"]
    assert not (c.get("status") or {}).get("allocation") and not c["status"].get("reservedFor")
    assert "resource.kubernetes.io/delete-protection" not in (c["metadata"].get("finalizers") or [])


def _wattpack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "operators.cli", *args], capture_output=True, text=True, cwd=REPO
    )


def test_export_then_plan_is_the_operators_plan_with_claims(
    cluster: Cluster, tmp_path: Path
) -> None:
    _setup(cluster, {"solver": {"timeLimitSeconds": 10, "workers": 1, "deterministic": True}})
    # One cluster with taints, affinities and claims: a tainted device-plugin node in zone z2,
    # replicas one per node, a pod pinned to the zone.
    dedicated = {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}
    cluster.gpu_node("plug-t", "facility", gpus=4, labels={"zone": "z2"}, taints=[dedicated])
    cluster.nodes_ready(3)
    tolerate = [{"key": "dedicated", "operator": "Exists"}]
    web = {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": HOST}
    for i in range(3):
        cluster.pod(
            f"web-{i}", gpus=1, labels={"app": "web"}, tolerations=tolerate,
            affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [web]}},
        )  # fmt: skip
    cluster.pod("z2", gpus=1, tolerations=tolerate, nodeSelector={"zone": "z2"})
    cluster.pod("intolerant", gpus=1, nodeSelector={"zone": "z2"})
    _claim(cluster, "pair", 2)
    _claim(cluster, "held")
    _claim(cluster, "four", 4)
    _claim_pod(cluster, "a", "pair")
    _claim_pod(cluster, "b", "pair")  # waits for a
    _claim_pod(cluster, "c", "held")
    _claim_pod(cluster, "big", "four")  # four GPUs: one is degraded
    cluster.pod("plugin", gpus=3)
    op = cluster.start_operator("--dry-run", "--interval=2")

    def first_plan() -> dict[str, Any] | None:
        for line in op.log.read_text().splitlines():
            if line.startswith("{") and '"bindings"' in line:
                return dict(json.loads(line))
        return None

    operator_plan = wait_until(first_plan, 60, "the operator's first dry-run plan")
    snap, pol = tmp_path / "snapshot.yaml", tmp_path / "policy.yaml"
    exp = _wattpack("export", f"--kubeconfig={cluster.cp.kubeconfig}", "--out", str(snap),
                    "--policy-out", str(pol))  # fmt: skip
    assert exp.returncode == 0, exp.stderr
    planned = _wattpack("plan", str(snap), "--policy", str(pol), "--output", "json")
    assert planned.returncode == 0, planned.stderr
    file_plan = json.loads(planned.stdout)
    for part in ("bindings", "evictions", "unplaced"):
        assert file_plan[part] == operator_plan[part], part
    where = {b["pod"]: (b["node"], b["gpuIndices"]) for b in operator_plan["bindings"]}
    assert where["ml/plugin"][0] == "plug-a1"
    # The device-plugin web replicas: one per node, two nodes, so one waits.
    webs = [where[f"ml/web-{i}"][0] for i in range(3) if f"ml/web-{i}" in where]
    assert len(webs) == len(set(webs)) == 2 and set(webs) <= {"plug-a1", "plug-t"}
    assert where["ml/z2"][0] == "plug-t" and "ml/intolerant" not in where
    assert where["ml/a"][0] == where["ml/c"][0] == NODE
    assert DEGRADED not in where["ml/a"][1] + where["ml/c"][1]
    unplaced = {u["pod"]: u["reason"] for u in operator_plan["unplaced"]}
    assert "untolerated taint {dedicated: ml}" in unplaced["ml/intolerant"]
    assert "ml/big" in unplaced and "ml/b" not in where
    assert not any(_devices(c) for c in _claims(cluster).values())  # a dry run writes nothing
