"""GPUs through Dynamic Resource Allocation in the snapshot (operators.kube.dra_convert) and the
claim status wattpack writes (operators.kube.dra). Objects are written as the API server sends
them, ResourceSlices as the NVIDIA DRA driver publishes them."""

from __future__ import annotations

from typing import Any

from operators.kube import dra
from operators.kube.convert import ClusterObjects, convert
from scheduler.model import GpuModel, HealthState

H100 = GpuModel(name="H100-SXM", tdp_watts=700, idle_watts=75, memory_mi_b=81920)
LABELS = {"wattpack.io/power-domain": "rack-a", "wattpack.io/gpu-model": "H100-SXM"}


def node(name: str, plugin_gpus: int = 0) -> dict[str, Any]:
    alloc = {"cpu": "96", "memory": "1Ti"}
    if plugin_gpus:
        alloc["nvidia.com/gpu"] = str(plugin_gpus)
    return {
        "metadata": {"name": name, "labels": dict(LABELS)},
        "spec": {},
        "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def gpu(minor: int, uuid: str, **attrs: Any) -> dict[str, Any]:
    a = {"type": {"string": "gpu"}, "uuid": {"string": uuid},
         "productName": {"string": "NVIDIA H100 80GB HBM3"}}  # fmt: skip
    a.update(attrs)
    return {"name": f"gpu-{minor}", "attributes": a,
            "capacity": {"memory": {"value": "80Gi"}}}  # fmt: skip


def slice_(node_name: str, devices: list[dict[str, Any]], generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{node_name}-gpu.nvidia.com-abcde"},
        "spec": {
            "driver": "gpu.nvidia.com",
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": generation, "resourceSliceCount": 1},
            "devices": devices,
        },
    }


def claim(
    name: str,
    count: int = 1,
    allocated: list[str] | None = None,
    node_name: str = "d1",
    mode: str | None = None,
    reserved: list[str] | None = None,
) -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": "gpu.nvidia.com", "count": count}
    if mode:
        exactly["allocationMode"] = mode
    status: dict[str, Any] = {}
    if allocated:
        status["allocation"] = {
            "devices": {
                "results": [
                    {"request": "gpus", "driver": "gpu.nvidia.com", "pool": node_name, "device": d}
                    for d in allocated
                ]
            }
        }
        status["reservedFor"] = [{"resource": "pods", "name": r, "uid": f"uid-{r}"}
                                 for r in reserved or []]  # fmt: skip
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
        "spec": {"devices": {"requests": [{"name": "gpus", "exactly": exactly}]}},
        "status": status,
    }


def pod(name: str, claims: list[str] = (), gpus: int = 0, node_name: str | None = None,
        template: str | None = None, **ann: str) -> dict[str, Any]:  # fmt: skip
    res: dict[str, Any] = {"requests": {"cpu": "1", "memory": "1Gi"}}
    if gpus:
        res["limits"] = {"nvidia.com/gpu": str(gpus)}
    spec: dict[str, Any] = {
        "schedulerName": "wattpack",
        "containers": [{"name": "c", "resources": res}],
        "resourceClaims": [{"name": c, "resourceClaimName": c} for c in claims],
    }
    if template:
        spec["resourceClaims"].append({"name": "t", "resourceClaimTemplateName": template})
    if node_name:
        spec["nodeName"] = node_name
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "annotations": ann},
        "spec": spec,
        "status": {"phase": "Running" if node_name else "Pending"},
    }


def gpunode(name: str, uuids: list[str], degraded: int | None = None) -> dict[str, Any]:
    gpus = [{"index": i, "uuid": u, "health": "degraded" if i == degraded else "healthy"}
            for i, u in enumerate(uuids)]  # fmt: skip
    return {"metadata": {"name": name}, "status": {"gpus": gpus}}


def run(pods: list[dict], claims: list[dict], nodes: list[dict] | None = None,
        slices: list[dict] | None = None, gpunodes: list[dict] = ()):  # type: ignore[no-untyped-def]  # fmt: skip
    uuids = [f"GPU-{i}" for i in range(4)]
    objs = ClusterObjects(
        nodes=nodes if nodes is not None else [node("d1")],
        pods=pods,
        gpunodes=list(gpunodes),
        gpu_models=[H100],
        resourceslices=slices if slices is not None
        else [slice_("d1", [gpu(i, u) for i, u in enumerate(uuids)])],
        resourceclaims=claims,
    )  # fmt: skip
    return convert(objs)


def test_a_node_has_the_gpus_the_driver_publishes_by_the_index_the_agent_reports() -> None:
    # Minor numbers and NVML indices differ on this machine: the agent's UUIDs decide.
    sick = gpu(3, "GPU-d")
    sick["taints"] = [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}]
    devices = [gpu(0, "GPU-b"), gpu(1, "GPU-a"), sick,
               {"name": "gpu-0-mig-1g", "attributes": {"type": {"string": "mig"}}}]  # fmt: skip
    nodes, notes = dra.node_gpus(
        [slice_("d1", devices), slice_("d1", [gpu(7, "GPU-old")], generation=0)],
        [gpunode("d1", ["GPU-a", "GPU-b", "GPU-c"])],
    )
    got = {i: d.name for i, d in nodes["d1"].devices.items()}
    assert got == {0: "gpu-1", 1: "gpu-0", 3: "gpu-3"} and not notes
    assert nodes["d1"].unusable() == {
        2: ("NoExecute", "no DRA device published for this GPU"),
        3: ("NoSchedule", "DRA device taint gpu.nvidia.com/xid=79:NoSchedule"),
    }
    # Without the agent: the index attribute (driver releases up to v25.3), else the name.
    nodes, _ = dra.node_gpus([slice_("d1", [gpu(0, "GPU-x", index={"int": 5}), gpu(2, "y")])], [])
    assert sorted(nodes["d1"].devices) == [2, 5]


def test_claims_become_the_pods_gpus_and_each_kind_of_node_keeps_its_pods() -> None:
    conv = run(
        [pod("two", ["c2"]), pod("plugin", gpus=1), pod("all", ["call"]), pod("nope", ["gone"])],
        [claim("c2", 2), claim("call", mode="All")],
        nodes=[node("d1"), node("p1", plugin_gpus=8)],
        gpunodes=[gpunode("d1", [f"GPU-{i}" for i in range(4)], degraded=2)],
    )
    snap = conv.snapshot
    nodes = {n.name: n for n in snap.nodes}
    assert nodes["d1"].gpus == 4 and nodes["d1"].resources == {"gpu.nvidia.com": 4}
    assert nodes["d1"].health_of(2) == HealthState.DEGRADED  # the agent's health holds
    assert nodes["p1"].resources == {"nvidia.com/gpu": 8}
    pods = {p.name: p for p in snap.pods}
    assert pods["two"].gpus == 2 and pods["two"].resources == {"gpu.nvidia.com": 2}
    assert pods["plugin"].resources == {"nvidia.com/gpu": 1}
    problems = {p.pod: p for p in conv.problems}
    assert "allocationMode All is not supported" in problems["ml/all"].reason
    assert not problems["ml/all"].waiting
    assert problems["ml/nope"].waiting and "does not exist yet" in problems["ml/nope"].reason


def test_shares_and_mixed_requests_are_refused_with_the_fix() -> None:
    conv = run(
        [pod("share", ["c1"], **{"wattpack.io/gpu-milli": "500"}), pod("both", ["c2"], gpus=1),
         pod("tmpl", template="t")],
        [claim("c1"), claim("c2")],
    )  # fmt: skip
    problems = {p.pod: p.reason for p in conv.problems}
    assert "MPS or time-slicing" in problems["ml/share"]
    assert "one way" in problems["ml/both"]
    assert "not made yet" in problems["ml/tmpl"]
    assert [p.waiting for p in conv.problems if p.pod == "ml/tmpl"] == [True]


def test_running_pods_hold_their_devices_and_allocations_nobody_holds_are_taken() -> None:
    conv = run(
        [pod("run", ["c1"], node_name="d1"), pod("again", ["c1"], node_name="d1"),
         pod("follow", ["c3"]), pod("first", ["c4"]), pod("second", ["c4"])],
        [claim("c1", 1, ["gpu-2"], reserved=["run", "again"]), claim("c3", 2, ["gpu-0", "gpu-3"]),
         claim("c4", 1)],
    )  # fmt: skip
    pods = {p.key: p for p in conv.snapshot.pods}
    # A shared claim's device counts once, for the first pod by key.
    assert (pods["ml/again"].gpus, pods["ml/again"].gpu_indices) == (1, [2])
    assert pods["ml/run"].gpus == 0
    stand_in = pods["ml/resourceclaim/c3"]  # follow is pending: its claim holds GPUs 0 and 3
    assert (stand_in.node, stand_in.gpu_indices, stand_in.preemptible) == ("d1", [0, 3], False)
    assert conv.uids["ml/resourceclaim/c3"] == "uid-c3"
    follow = pods["ml/follow"]
    assert follow.gpus == 0 and follow.node_affinity[0].matches("d1", {})
    assert not follow.node_affinity[0].matches("d2", {})
    assert pods["ml/first"].gpus == 1 and "ml/second" not in pods
    (second,) = [p for p in conv.problems if p.pod == "ml/second"]
    assert second.waiting and "shared with pod ml/first" in second.reason


def test_the_allocation_names_the_devices_pins_the_node_and_carries_the_config() -> None:
    c = claim("c2", 2)
    c["spec"]["devices"]["config"] = [{"requests": ["gpus"], "opaque": {"driver": "gpu.nvidia.com",
                                        "parameters": {"kind": "GpuConfig"}}}]  # fmt: skip
    devices = [dra.Device(dra.DRIVER, "d1", "gpu-3", 3), dra.Device(dra.DRIVER, "d1", "gpu-0", 0)]
    klass = {"spec": {"config": [{"opaque": {"driver": "gpu.nvidia.com", "parameters": {}}}]}}
    alloc = dra.allocation(c, klass, "d1", devices)
    assert alloc["devices"]["results"] == [
        {"request": "gpus", "driver": "gpu.nvidia.com", "pool": "d1", "device": "gpu-3"},
        {"request": "gpus", "driver": "gpu.nvidia.com", "pool": "d1", "device": "gpu-0"},
    ]
    assert [x["source"] for x in alloc["devices"]["config"]] == ["FromClass", "FromClaim"]
    term = alloc["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]
    assert term == {"key": "metadata.name", "operator": "In", "values": ["d1"]}
    assert dra.taken([claim("x", 1, ["gpu-1"])]) == {("gpu.nvidia.com", "d1", "gpu-1"): "ml/x"}


def test_a_claim_is_usable_as_kube_scheduler_judges_it() -> None:
    p = pod("p", ["c1"])
    ok = dra.usable(p, claim("c1"), from_template=False)
    assert ok.key == "ml/c1" and ok.gpus == 1
    # A claim being deleted: the API server refuses new reservations on it.
    gone = claim("c1", 1, ["gpu-0"])
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    try:
        dra.usable(p, gone, from_template=False)
        raise AssertionError("a claim being deleted was usable")
    except dra.ClaimProblem as e:
        assert "being deleted" in str(e) and not e.waiting
    # A claim named directly may be another pod's (kube-scheduler checks no owner then) ...
    theirs = claim("c1")
    theirs["metadata"]["ownerReferences"] = [{"kind": "Pod", "uid": "uid-q", "controller": True}]
    assert dra.usable(p, theirs, from_template=False).key == "ml/c1"
    # ... but a template's claim must be the pod's own, and one without an owner is not.
    for owners in ([{"kind": "Pod", "uid": "uid-q", "controller": True}], []):
        made = claim("t-x")
        made["metadata"]["ownerReferences"] = owners
        try:
            dra.usable(p, made, from_template=True)
            raise AssertionError(f"a template's claim owned by {owners} was usable")
        except dra.ClaimProblem as e:
            assert "made for another pod" in str(e) and e.waiting
    made["metadata"]["ownerReferences"] = [{"kind": "Pod", "uid": "uid-p", "controller": True}]
    assert dra.usable(p, made, from_template=True).key == "ml/t-x"


def test_a_shared_claim_reserved_for_256_pods_takes_no_more() -> None:
    full = claim("c1", 1, ["gpu-0"], reserved=[f"r{i}" for i in range(dra.RESERVED_MAX)])
    conv = run([pod("late", ["c1"])], [full])
    (late,) = conv.problems
    assert late.waiting and "reserved for 256 pods" in late.reason
    assert "ml/late" not in {p.key for p in conv.snapshot.pods}
    # A pod already among them is not refused.
    assert dra.usable(pod("r7", ["c1"]), full, from_template=False).key == "ml/c1"
    one_less = claim("c1", 1, ["gpu-0"], reserved=[f"r{i}" for i in range(dra.RESERVED_MAX - 1)])
    assert dra.usable(pod("late", ["c1"]), one_less, from_template=False).key == "ml/c1"


def _dynamic_mig(minor: int, uuid: str) -> list[dict[str, Any]]:
    """A GPU and one of its MIG partitions as the driver's DynamicMIG publishes them: both
    consume the GPU's counter set."""
    counters = [{"counterSet": f"gpu-{minor}-counter-set", "counters": {}}]
    full = gpu(minor, uuid)
    full["consumesCounters"] = counters
    attrs = {"type": {"string": "mig"}, "profile": {"string": "1g.24gb"}}
    part = {"name": f"gpu-{minor}-mig-1g24gb-0", "consumesCounters": counters, "attributes": attrs}
    return [full, part]


def test_a_mig_partition_another_scheduler_allocated_takes_its_whole_gpu() -> None:
    devices = [d for i in range(4) for d in _dynamic_mig(i, f"GPU-{i}")]
    devices.append({"name": "gpu-vfio-0", "attributes": {"type": {"string": "vfio"}}})
    nodes, _ = dra.node_gpus([slice_("d1", devices)], [])
    at = dra.device_at(nodes)
    assert at[("gpu.nvidia.com", "d1", "gpu-2-mig-1g24gb-0")] == ("d1", 2)
    assert ("gpu.nvidia.com", "d1", "gpu-vfio-0") not in at  # tied to no GPU: left out

    def mig(name: str, minor: int, reserved: list[str]) -> dict[str, Any]:
        return claim(name, 1, [f"gpu-{minor}-mig-1g24gb-0"], reserved=reserved)

    # Two pods kube-scheduler placed on partitions of GPU 1 (one each), and an allocation of a
    # partition of GPU 3 that no running pod holds.
    conv = run(
        [pod("ma", ["m1"], node_name="d1"), pod("mb", ["m2"], node_name="d1"),
         pod("new", ["c2"])],
        [mig("m1", 1, ["ma"]), mig("m2", 1, ["mb"]), mig("m3", 3, []), claim("c2", 2)],
        slices=[slice_("d1", devices)],
    )  # fmt: skip
    pods = {p.key: p for p in conv.snapshot.pods}
    assert (pods["ml/ma"].gpus, pods["ml/ma"].gpu_indices) == (1, [1])
    assert (pods["ml/mb"].gpus, pods["ml/mb"].gpu_indices) == (0, [])  # GPU 1 counts once
    assert pods["ml/resourceclaim/m3"].gpu_indices == [3]
    plan_free = {0, 1, 2, 3} - {i for p in pods.values() for i in p.gpu_indices}
    assert plan_free == {0, 2}
