"""Dynamic Resource Allocation (resource.k8s.io/v1) as the NVIDIA DRA driver for GPUs uses it:
its ResourceSlices as each node's GPUs, a pod's ResourceClaims as the GPUs it asks for, and the
claim status that allocates the planned GPUs (what kube-scheduler's DynamicResources plugin
writes). Pure: API objects (dicts) in, facts or bodies out; operators.kube.dra_apply writes.

What the driver publishes (github.com/NVIDIA/k8s-dra-driver-gpu): one pool per node, named as
the node, with `spec.nodeName` set; a full GPU is a device named `gpu-<minor>` with the
attributes `type: gpu`, `uuid`, `productName`, ... (releases up to v25.3 also `index` and
`minor`), and the DeviceClass `gpu.nvidia.com` selects those devices. A device's GPU index is
the one wattpack's agent reports for its UUID (the GPUNode status), else its `index` attribute,
else the number in its name: the minor number, which is the index on most machines.

Supported claims: every request `exactly` of the class gpu.nvidia.com, allocationMode
ExactCount (the default), no selectors, no adminAccess, no capacity; `config` is carried into
the allocation for the driver (its time-slicing and MPS settings). Anything else a claim asks
for is refused with a reason, never allocated in part.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

DRIVER = "gpu.nvidia.com"
GPU_CLASS = "gpu.nvidia.com"
FINALIZER = "resource.kubernetes.io/delete-protection"  # the allocator's, as kube-scheduler sets
RESERVED_MAX = 256  # resource/v1 ResourceClaimReservedForMaxSize: status.reservedFor's limit
_NAME = re.compile(r"^gpu-(\d+)$")
_FILTERING = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class Device:
    """One GPU as the driver publishes it: what an allocation result names."""

    driver: str
    pool: str
    name: str
    index: int  # the node's GPU index (what the planner chooses)

    @property
    def ref(self) -> tuple[str, str, str]:
        return (self.driver, self.pool, self.name)


@dataclass
class NodeGpus:
    """A node's GPUs published through DRA, by index."""

    node: str
    devices: dict[int, Device] = field(default_factory=dict)
    tainted: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> effect, taint
    # What ties another device to a GPU (counter set, PCI bus ID) -> that GPU's index, and the
    # devices so tied (MIG partitions, VFIO devices) -> the index of the GPU they are part of.
    shares: dict[tuple[str, ...], int] = field(default_factory=dict)
    parts: dict[tuple[str, str, str], int] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return max(self.devices) + 1 if self.devices else 0

    def unusable(self) -> dict[int, tuple[str, str]]:
        """Indices the planner must not choose: index -> (effect, why). Not published (no device
        to allocate: NoExecute, as nothing can run there) or tainted by the driver (its health
        check found the GPU bad: NoSchedule keeps new work off, NoExecute also moves pods)."""
        out = {i: ("NoExecute", "no DRA device published for this GPU") for i in range(self.gpus)}
        for i in self.devices:
            del out[i]
        out.update({i: (e, f"DRA device taint {t}") for i, (e, t) in self.tainted.items()})
        return out


def _attribute(device: dict[str, Any], name: str) -> Any:
    """An attribute's value; a driver may qualify the name with its domain."""
    attrs = device.get("attributes") or {}
    value = attrs.get(name, attrs.get(f"{DRIVER}/{name}"))
    if not isinstance(value, dict):
        return None
    for kind in ("string", "int", "bool", "version"):
        if kind in value:
            return value[kind]
    return None


def _uuids(gpunodes: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """node -> GPU UUID -> index, as the agent reports them (NVML's indices)."""
    out: dict[str, dict[str, int]] = {}
    for g in gpunodes:
        gpus = (g.get("status") or {}).get("gpus") or []
        out[g["metadata"]["name"]] = {e["uuid"]: e["index"] for e in gpus if e.get("uuid")}
    return out


def _index(device: dict[str, Any], uuids: dict[str, int]) -> int | None:
    uuid = _attribute(device, "uuid")
    if uuid in uuids:
        return uuids[uuid]
    index = _attribute(device, "index")
    if isinstance(index, int):
        return index
    m = _NAME.match(str(device.get("name", "")))
    return int(m.group(1)) if m else None


def _current(slices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The driver's slices of each pool's newest generation (older ones are being replaced)."""
    newest: dict[str, int] = {}
    ours = [s for s in slices if (s.get("spec") or {}).get("driver") == DRIVER]
    for s in ours:
        pool = s["spec"].get("pool") or {}
        newest[pool.get("name", "")] = max(
            newest.get(pool.get("name", ""), 0), int(pool.get("generation", 0))
        )
    return [
        s
        for s in ours
        if int((s["spec"].get("pool") or {}).get("generation", 0))
        == newest[(s["spec"].get("pool") or {}).get("name", "")]
    ]


def node_gpus(
    slices: list[dict[str, Any]], gpunodes: list[dict[str, Any]]
) -> tuple[dict[str, NodeGpus], list[str]]:
    """Each node's full GPUs from the driver's ResourceSlices (MIG and VFIO devices are not
    GPUs to the planner, but each stands for the GPU it is part of: `parts`), and notes on
    what was left out."""
    uuids = _uuids(gpunodes)
    out: dict[str, NodeGpus] = {}
    notes: list[str] = []
    others: list[tuple[str, str, dict[str, Any]]] = []
    for s in _current(slices):
        spec = s["spec"]
        pool = (spec.get("pool") or {}).get("name", "")
        for d in spec.get("devices") or []:
            node = spec.get("nodeName") or d.get("nodeName")
            if _attribute(d, "type") != "gpu":
                if node:
                    others.append((node, pool, d))
                continue
            if not node:
                notes.append(
                    f"ResourceSlice {s['metadata']['name']}: device {d.get('name')} is not local "
                    "to one node; wattpack allocates node-local GPUs only, left out"
                )
                continue
            gpus = out.setdefault(node, NodeGpus(node))
            index = _index(d, uuids.get(node, {}))
            if index is None or index < 0 or index in gpus.devices:
                notes.append(
                    f"node {node}: DRA device {d.get('name')} has no GPU index of its own "
                    "(no uuid the agent reports, no index attribute, no gpu-<n> name); left out"
                )
                continue
            gpus.devices[index] = Device(DRIVER, pool, str(d["name"]), index)
            gpus.shares.update({k: index for k in _physical(pool, d)})
            taints = [t for t in d.get("taints") or [] if t.get("effect") in _FILTERING]
            if taints:
                t = taints[0]
                value = f"={t['value']}" if t.get("value") else ""
                gpus.tainted[index] = (t["effect"], f"{t.get('key')}{value}:{t['effect']}")
    for node, pool, d in others:
        _part_of(out.get(node), pool, d)
    return out, notes


def _physical(pool: str, device: dict[str, Any]) -> set[tuple[str, ...]]:
    """What ties a device to one physical GPU: the counter sets it consumes (the driver's
    DynamicMIG publishes a GPU and its MIG partitions consuming one counter set per GPU,
    `gpu-<minor>-counter-set`) and its PCI bus ID (a GPU and its VFIO passthrough device)."""
    keys: set[tuple[str, ...]] = {
        ("counterSet", pool, str(c.get("counterSet"))) for c in device.get("consumesCounters") or []
    }
    bus = _attribute(device, "resource.kubernetes.io/pciBusID")
    if bus:
        keys.add(("pciBusID", str(bus)))
    return keys


def _part_of(gpus: NodeGpus | None, pool: str, device: dict[str, Any]) -> None:
    """A partition or passthrough device of one of the node's GPUs: allocated, it takes that
    GPU (kube-scheduler may allocate a MIG partition of a GPU wattpack would otherwise give)."""
    if gpus is None:
        return
    for k in sorted(_physical(pool, device)):
        if k in gpus.shares:
            gpus.parts[(DRIVER, pool, str(device.get("name")))] = gpus.shares[k]
            return


def device_at(nodes: dict[str, NodeGpus]) -> dict[tuple[str, str, str], tuple[str, int]]:
    """(driver, pool, device) -> (node, GPU index), to read allocations back; a partition of a
    GPU reads as that GPU."""
    out = {ref: (n.node, i) for n in nodes.values() for ref, i in n.parts.items()}
    out.update({d.ref: (n.node, i) for n in nodes.values() for i, d in n.devices.items()})
    return out


# -- claims ------------------------------------------------------------------------------------


class ClaimProblem(ValueError):
    """Why the pod's claims cannot be allocated by wattpack (or not yet: `waiting`)."""

    def __init__(self, message: str, waiting: bool = False) -> None:
        super().__init__(message)
        self.waiting = waiting


@dataclass(frozen=True)
class Claim:
    """A pod's ResourceClaim as planning and allocating need it."""

    namespace: str
    name: str
    uid: str
    requests: tuple[tuple[str, int], ...]  # (request name, GPUs), for an unallocated claim
    allocated: tuple[tuple[str, str, str], ...]  # (driver, pool, device) of its allocation
    reserved: tuple[str, ...]  # uids of the pods it is reserved for

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def gpus(self) -> int:
        return sum(n for _, n in self.requests)


def has_claims(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("resourceClaims"))


def claim_names(pod: dict[str, Any]) -> list[str]:
    """The names of the ResourceClaims the pod uses: its own, or the one made from its
    template (pod.status.resourceClaimStatuses, written by the resourceclaim controller)."""
    return [name for name, _ in claim_refs(pod)]


def claim_refs(pod: dict[str, Any]) -> list[tuple[str, bool]]:
    """(claim name, made from a template) for each claim the pod uses: a claim made from a
    template must be the pod's own (resourceclaim.Name's mustCheckOwner)."""
    md, spec = pod["metadata"], pod.get("spec") or {}
    made = {
        s["name"]: s.get("resourceClaimName")
        for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
    }
    out: list[tuple[str, bool]] = []
    for c in spec.get("resourceClaims") or []:
        if c.get("resourceClaimName"):
            out.append((c["resourceClaimName"], False))
        elif c.get("resourceClaimTemplateName"):
            if c["name"] not in made:
                raise ClaimProblem(
                    f"spec.resourceClaims[{c['name']}]: the claim of template "
                    f"{c['resourceClaimTemplateName']} is not made yet (kube-controller-manager's "
                    "resourceclaim controller makes it)",
                    waiting=True,
                )
            if made[c["name"]]:  # null: the controller found no claim is needed
                out.append((made[c["name"]], True))
    if not out and spec.get("resourceClaims"):
        raise ClaimProblem(f"pod {md['name']}: spec.resourceClaims name no claim")
    return out


def read_claim(obj: dict[str, Any]) -> Claim:
    """A ResourceClaim; an unallocated one must be a GPU claim wattpack can allocate."""
    md, status = obj["metadata"], obj.get("status") or {}
    key = f"{md.get('namespace', 'default')}/{md['name']}"
    results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
    allocated = tuple((r["driver"], r["pool"], r["device"]) for r in results)
    reserved = tuple(r.get("uid", "") for r in status.get("reservedFor") or [])
    requests: tuple[tuple[str, int], ...] = ()
    if not status.get("allocation"):
        requests = tuple(_request(key, r) for r in _devices(obj).get("requests") or [])
        if not requests:
            raise ClaimProblem(f"ResourceClaim {key} requests no device")
        if _devices(obj).get("constraints"):
            raise ClaimProblem(
                f"ResourceClaim {key}: spec.devices.constraints are not supported by wattpack; "
                "drop them (one node's GPUs share their model and driver anyway)"
            )
    return Claim(md.get("namespace", "default"), md["name"], md.get("uid", ""), requests,
                 allocated, reserved)  # fmt: skip


def _devices(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("spec") or {}).get("devices") or {})


def _request(key: str, r: dict[str, Any]) -> tuple[str, int]:
    name = r.get("name", "")
    where = f"ResourceClaim {key} request {name}"
    if r.get("firstAvailable"):
        raise ClaimProblem(
            f"{where}: firstAvailable (a prioritized list) is not supported by wattpack; "
            f"ask for exactly a count of {GPU_CLASS}"
        )
    ex = r.get("exactly") or {}
    if ex.get("deviceClassName") != GPU_CLASS:
        raise ClaimProblem(
            f"{where}: device class {ex.get('deviceClassName')!r} is not one wattpack allocates "
            f"(only full GPUs of {GPU_CLASS})"
        )
    mode = ex.get("allocationMode") or "ExactCount"
    if mode != "ExactCount":
        raise ClaimProblem(
            f"{where}: allocationMode {mode} is not supported by wattpack; use ExactCount "
            "with a count"
        )
    for unsupported in ("selectors", "adminAccess", "capacity"):
        if ex.get(unsupported):
            raise ClaimProblem(
                f"{where}: {unsupported} is not supported by wattpack (it chooses the GPUs by "
                "health and power); drop it, or give the pod another scheduler"
            )
    count = int(ex.get("count") or 1)
    if count < 1:
        raise ClaimProblem(f"{where}: count {count} is not a number of GPUs")
    return name, count


def pod_claims(pod: dict[str, Any], claims: dict[str, dict[str, Any]]) -> list[Claim]:
    """The pod's claims (`claims`: every ResourceClaim by namespace/name)."""
    ns = pod["metadata"].get("namespace", "default")
    out = []
    for name, from_template in claim_refs(pod):
        obj = claims.get(f"{ns}/{name}")
        if obj is None:
            raise ClaimProblem(f"ResourceClaim {ns}/{name} does not exist yet", waiting=True)
        out.append(usable(pod, obj, from_template))
    return out


def usable(pod: dict[str, Any], obj: dict[str, Any], from_template: bool) -> Claim:
    """The claim, if the pod may be scheduled with it now, as kube-scheduler's PreFilter
    judges (foreachPodResourceClaim): not being deleted, the pod's own when made from a
    template, and room in reservedFor for the pod when allocated already."""
    claim = read_claim(obj)
    md, uid = obj["metadata"], pod["metadata"].get("uid", "")
    if md.get("deletionTimestamp"):
        # The API server refuses new reservedFor entries then; the resourceclaim controller
        # makes the template's claim again once this one is gone.
        raise ClaimProblem(f"ResourceClaim {claim.key} is being deleted", waiting=from_template)
    if from_template and _owner_pod(obj) != uid:
        # Not (or no longer) made for this pod: the controller makes the pod its own.
        raise ClaimProblem(f"ResourceClaim {claim.key} was made for another pod", waiting=True)
    if claim.allocated and uid not in claim.reserved and len(claim.reserved) >= RESERVED_MAX:
        raise ClaimProblem(
            f"ResourceClaim {claim.key} is reserved for {len(claim.reserved)} pods, the most "
            "the API server allows (ResourceClaimReservedForMaxSize); the pod waits for one "
            "of them to finish",
            waiting=True,
        )
    return claim


def _owner_pod(obj: dict[str, Any]) -> str | None:
    for o in obj["metadata"].get("ownerReferences") or []:
        if o.get("kind") == "Pod" and o.get("controller"):
            return str(o.get("uid"))
    return None


# -- allocating --------------------------------------------------------------------------------


def allocation(
    claim: dict[str, Any], device_class: dict[str, Any] | None, node: str, devices: list[Device]
) -> dict[str, Any]:
    """status.allocation for an unallocated claim: its requests in order take the devices, the
    class's and the claim's config go with them (the driver reads its sharing settings there),
    and the node selector pins the node, as kube-scheduler's allocator writes it."""
    results, left = [], list(devices)
    for r in _devices(claim).get("requests") or []:
        count = int((r.get("exactly") or {}).get("count") or 1)
        for d in left[:count]:
            results.append({"request": r["name"], "driver": d.driver, "pool": d.pool,
                            "device": d.name})  # fmt: skip
        left = left[count:]
    config = [
        {"source": "FromClass", **c}
        for c in ((device_class or {}).get("spec") or {}).get("config") or []
    ]
    config += [{"source": "FromClaim", **c} for c in _devices(claim).get("config") or []]
    out: dict[str, Any] = {
        "devices": {"results": results},
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        },
    }
    if config:
        out["devices"]["config"] = config
    return out


def consumer(pod: dict[str, Any]) -> dict[str, str]:
    """The pod as a reservedFor entry."""
    md = pod["metadata"]
    return {"resource": "pods", "name": md["name"], "uid": md.get("uid", "")}


def taken(claims: list[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    """Every device some claim holds, and which claim: never allocated twice."""
    out: dict[tuple[str, str, str], str] = {}
    for c in claims:
        md = c["metadata"]
        alloc = (c.get("status") or {}).get("allocation") or {}
        for r in (alloc.get("devices") or {}).get("results") or []:
            out[(r["driver"], r["pool"], r["device"])] = f"{md.get('namespace')}/{md['name']}"
    return out


def by_key(claims: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{c['metadata'].get('namespace', 'default')}/{c['metadata']['name']}": c for c in claims
    }


def nodes_of(
    claim: Claim, where: dict[tuple[str, str, str], tuple[str, int]]
) -> dict[str, list[int]]:
    """An allocated claim's GPUs by node (unknown devices are left out)."""
    out: dict[str, list[int]] = defaultdict(list)
    for ref in claim.allocated:
        if ref in where:
            node, index = where[ref]
            out[node].append(index)
    return dict(out)
