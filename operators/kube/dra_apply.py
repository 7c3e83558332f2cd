"""Allocating a pod's ResourceClaims to the GPUs the plan chose, before it is bound, as
kube-scheduler's DynamicResources plugin does in PreBind: the claim gets the allocator's
finalizer (a normal update), then `status.allocation` and the pod in `status.reservedFor` (one
status update), each with the resourceVersion read. A claim already allocated (shared) only
gets the pod added to reservedFor.

Everything is read fresh from the server, not the cache: the claims (a device in any claim's
allocation is never given again), the node's ResourceSlices and its GPUNode (the index of each
device). A 409 is read again and tried once more; failing that, the group is not bound this
cycle. What a group wrote is taken back (`undo`) when any member cannot be allocated or bound,
so no claim stays allocated for a pod that was not bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from operators.kube import dra
from operators.kube.cache import read_json
from operators.kube.errors import describe
from scheduler.model import Binding

log = structlog.get_logger(__name__)

_TRIES = 2  # a conflict is read again once; a second one gives up until the next cycle


class ClaimRefused(Exception):
    """Why a pod's claims cannot be allocated as planned (the message says which claim)."""


@dataclass
class Written:
    """What a group wrote to claims, to take back: per claim the pods it added to reservedFor
    (pod key -> uid), and the claims it allocated. Per pod, so that taking back the members
    not bound never drops the reservation of a member that was (a claim two members share)."""

    reserved: dict[str, dict[str, str]] = field(default_factory=dict)
    allocated: set[str] = field(default_factory=set)

    def add(self, pod: str, claim: str, uid: str, allocated: bool) -> None:
        self.reserved.setdefault(claim, {})[pod] = uid
        if allocated:
            self.allocated.add(claim)


class ClaimWriter:
    def __init__(self, api: client.ApiClient, may_write: Callable[[], bool]) -> None:
        self.res = client.ResourceV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.may_write = may_write

    # -- allocate -------------------------------------------------------------------------

    def reserve(
        self, bindings: list[Binding], pods: dict[str, dict[str, Any]], written: Written
    ) -> dict[str, list[int]]:
        """Allocate and reserve every member's claims; the GPU indices each pod with claims
        then holds. Raises ClaimRefused (what was written stays in `written`, to undo)."""
        with_claims = [b for b in bindings if dra.has_claims(pods[b.pod])]
        if not with_claims:
            return {}
        taken = dra.taken(self._list_claims())
        held: dict[str, list[int]] = {}
        for b in with_claims:
            pod = pods[b.pod]
            gpus = self._node_gpus(b.node)
            # A GPU is taken when any device of it is: itself, or a MIG partition or VFIO
            # device of it that another scheduler allocated.
            at = dra.device_at({b.node: gpus})
            busy = {at[ref][1]: c for ref, c in taken.items() if ref in at}
            try:
                refs = dra.claim_refs(pod)
            except dra.ClaimProblem as e:
                raise ClaimRefused(f"{b.pod}: {e}") from None
            chosen = [gpus.devices.get(i) for i in b.gpu_indices]
            if any(d is None for d in chosen):
                raise ClaimRefused(f"{b.pod}: GPUs {b.gpu_indices} of {b.node} are not all "
                                   "published as DRA devices")  # fmt: skip
            left: list[dra.Device] = list(chosen)  # type: ignore[arg-type]
            indices: list[int] = []
            for name, from_template in refs:
                ns = pod["metadata"].get("namespace", "default")
                obj = self._get(ns, name)
                claim = self._usable(b.pod, pod, obj, from_template)
                if claim.allocated:
                    where = dra.nodes_of(claim, at)
                    if list(where) != [b.node]:
                        raise ClaimRefused(
                            f"{b.pod}: ResourceClaim {claim.key} is allocated on another node"
                        )
                    indices += where[b.node]
                    self._reserve(b.pod, pod, claim.key, written)
                    continue
                mine, left = left[: claim.gpus], left[claim.gpus :]
                if len(mine) < claim.gpus:
                    raise ClaimRefused(f"{b.pod}: the plan gives fewer GPUs than its claims ask")
                for d in mine:
                    if d.index in busy:
                        raise ClaimRefused(
                            f"{b.pod}: device {d.name} (GPU {d.index}) of {b.node} is already "
                            f"allocated to ResourceClaim {busy[d.index]}"
                        )
                self._allocate(b.pod, pod, obj, b.node, mine, written)
                taken.update({d.ref: claim.key for d in mine})
                busy.update({d.index: claim.key for d in mine})
                indices += [d.index for d in mine]
            if left:
                raise ClaimRefused(f"{b.pod}: the plan gives more GPUs than its claims ask")
            held[b.pod] = sorted(indices)
        return held

    @staticmethod
    def _usable(
        key: str, pod: dict[str, Any], obj: dict[str, Any], from_template: bool
    ) -> dra.Claim:
        """The claim as read now, checked as when it was planned (it may have changed)."""
        try:
            return dra.usable(pod, obj, from_template)
        except dra.ClaimProblem as e:
            raise ClaimRefused(f"{key}: {e}") from None

    def _allocate(
        self,
        key: str,
        pod: dict[str, Any],
        obj: dict[str, Any],
        node: str,
        devices: list[dra.Device],
        written: Written,
    ) -> None:
        ns, name = obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]
        device_class = self._device_class()
        for attempt in range(_TRIES):
            if attempt:
                obj = self._get(ns, name)
                if (obj.get("status") or {}).get("allocation"):
                    raise ClaimRefused(f"{key}: ResourceClaim {ns}/{name} got allocated meanwhile")
            self._writable()

            def write(obj: dict[str, Any] = obj) -> None:
                if dra.FINALIZER not in (obj["metadata"].get("finalizers") or []):
                    obj["metadata"].setdefault("finalizers", []).append(dra.FINALIZER)
                    obj = read_json(
                        self.res.replace_namespaced_resource_claim(
                            name, ns, obj, _preload_content=False
                        )
                    )
                status = obj.setdefault("status", {})
                status["allocation"] = dra.allocation(obj, device_class, node, devices)
                status["reservedFor"] = [*(status.get("reservedFor") or []), dra.consumer(pod)]
                self._put_status(ns, name, obj)

            if not self._written(key, f"{ns}/{name}", write, attempt):
                continue
            written.add(key, f"{ns}/{name}", pod["metadata"].get("uid", ""), allocated=True)
            log.info("claim_allocated", pod=key, claim=f"{ns}/{name}", node=node,
                     devices=[d.name for d in devices])  # fmt: skip
            return

    def _put_status(self, ns: str, name: str, obj: dict[str, Any]) -> None:
        self.res.replace_namespaced_resource_claim_status(
            name, ns, obj, _preload_content=False
        ).release_conn()

    @staticmethod
    def _written(key: str, claim: str, write: Callable[[], None], attempt: int) -> bool:
        """Whether the write went through; False: a conflict, worth another try from a fresh
        read. Any other failure refuses the claim."""
        try:
            write()
        except ApiException as e:
            if e.status == 409 and attempt + 1 < _TRIES:
                return False
            raise ClaimRefused(f"{key}: ResourceClaim {claim}: {describe(e)}") from None
        except HTTPError as e:
            raise ClaimRefused(f"{key}: ResourceClaim {claim}: {describe(e)}") from None
        return True

    def _reserve(self, key: str, pod: dict[str, Any], claim: str, written: Written) -> None:
        """A claim already allocated (shared by several pods): the pod joins reservedFor."""
        ns, name = claim.split("/", 1)
        uid = pod["metadata"].get("uid", "")
        for attempt in range(_TRIES):
            obj = self._get(ns, name)
            status = obj.setdefault("status", {})
            reserved = status.get("reservedFor") or []
            if any(r.get("uid") == uid for r in reserved):
                return
            self._writable()
            status["reservedFor"] = [*reserved, dra.consumer(pod)]
            if not self._written(key, claim, lambda o=obj: self._put_status(ns, name, o), attempt):
                continue
            written.add(key, claim, uid, allocated=False)
            log.info("claim_reserved", pod=key, claim=claim)
            return

    # -- take back --------------------------------------------------------------------------

    def undo(self, written: Written, pods: set[str]) -> None:
        """Take back what the group wrote for `pods` (members not bound): they leave
        reservedFor, and a claim the group allocated that no one else holds is deallocated and
        loses the finalizer again, as kube-scheduler's Unreserve does. A member that was bound
        keeps its reservation (the kubelet prepares its devices from it)."""
        for claim, users in sorted(written.reserved.items()):
            uids = {uid for pod, uid in users.items() if pod in pods}
            if uids:
                self._release(claim, uids, claim in written.allocated)

    def _release(self, claim: str, uids: set[str], allocated: bool) -> None:
        ns, name = claim.split("/", 1)
        for attempt in range(_TRIES):
            try:
                obj = self._get(ns, name)
                status = obj.setdefault("status", {})
                status["reservedFor"] = [
                    r for r in status.get("reservedFor") or [] if r.get("uid") not in uids
                ]
                if allocated and not status["reservedFor"]:
                    status["allocation"] = None
                obj = read_json(
                    self.res.replace_namespaced_resource_claim_status(
                        name, ns, obj, _preload_content=False
                    )
                )
                if not (obj.get("status") or {}).get("allocation"):
                    fin = obj["metadata"].get("finalizers") or []
                    if dra.FINALIZER in fin:
                        obj["metadata"]["finalizers"] = [f for f in fin if f != dra.FINALIZER]
                        self.res.replace_namespaced_resource_claim(
                            name, ns, obj, _preload_content=False
                        ).release_conn()
                log.warning("claim_taken_back", claim=claim, pods=sorted(uids))
                return
            except (ApiException, ClaimRefused) as e:
                if isinstance(e, ApiException) and e.status == 409 and attempt + 1 < _TRIES:
                    continue
                # The resourceclaim controller drops reservations of pods that are gone; a
                # pending pod still reserved follows the allocation on the next cycle.
                log.error("claim_take_back_failed", claim=claim, error=describe(e))
                return
            except HTTPError as e:
                log.error("claim_take_back_failed", claim=claim, error=describe(e))
                return

    # -- reading ----------------------------------------------------------------------------

    def _writable(self) -> None:
        if not self.may_write():
            raise ClaimRefused("this replica no longer leads")

    def _get(self, ns: str, name: str) -> dict[str, Any]:
        try:
            return read_json(
                self.res.read_namespaced_resource_claim(name, ns, _preload_content=False)
            )
        except (ApiException, HTTPError) as e:
            raise ClaimRefused(f"ResourceClaim {ns}/{name}: {describe(e)}") from None

    def _list_claims(self) -> list[dict[str, Any]]:
        try:
            resp = self.res.list_resource_claim_for_all_namespaces(_preload_content=False)
        except (ApiException, HTTPError) as e:
            raise ClaimRefused(f"cannot read the ResourceClaims: {describe(e)}") from None
        return list(read_json(resp).get("items") or [])

    def _device_class(self) -> dict[str, Any]:
        try:
            resp = self.res.read_device_class(dra.GPU_CLASS, _preload_content=False)
        except (ApiException, HTTPError) as e:
            raise ClaimRefused(f"DeviceClass {dra.GPU_CLASS}: {describe(e)}") from None
        return read_json(resp)

    def _node_gpus(self, node: str) -> dra.NodeGpus:
        try:
            resp = self.res.list_resource_slice(
                field_selector=f"spec.nodeName={node}", _preload_content=False
            )
            slices = list(read_json(resp).get("items") or [])
        except (ApiException, HTTPError) as e:
            raise ClaimRefused(f"cannot read the ResourceSlices of {node}: {describe(e)}") from None
        gpunodes = []
        try:
            gpunodes = [
                self.custom.get_cluster_custom_object("wattpack.io", "v1alpha1", "gpunodes", node)
            ]
        except ApiException as e:
            if e.status != 404:  # no GPUNode: indices come from the devices themselves
                raise ClaimRefused(f"cannot read GPUNode {node}: {describe(e)}") from None
        except HTTPError as e:
            raise ClaimRefused(f"cannot read GPUNode {node}: {describe(e)}") from None
        nodes, _ = dra.node_gpus(slices, gpunodes)
        return nodes.get(node, dra.NodeGpus(node))
