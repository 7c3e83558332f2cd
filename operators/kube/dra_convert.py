"""GPUs that come through Dynamic Resource Allocation, in the snapshot (operators.kube.convert).

No field of the snapshot format is new; DRA is written in the terms the planner already has:

- A node whose GPUs the driver publishes has `gpus` = its highest device index + 1; an index
  with no device is a `failed` GPU, one the driver tainted `degraded` (NoSchedule) or `failed`
  (NoExecute): never chosen.
- A pending pod's GPUs are those its unallocated claims ask for. A claim already allocated (a
  claim shared with a pod placed before) adds none, and pins the pod to its node with required
  node affinity (`metadata.name In [node]`), as the allocation's node selector does. A claim
  two pending pods share counts for the first of them by key; the other waits a cycle.
- A running pod holds the GPUs of its allocated claims (each device counted once, for the first
  pod by key); devices allocated to claims no running pod holds are held by a stand-in pod
  (`resourceclaim/<claim>`, not preemptible, never moved): no device is planned twice.
- Only in a cluster that has both kinds of GPU node: GPUs through DRA are the resource
  `gpu.nvidia.com` and device-plugin GPUs `nvidia.com/gpu` in the nodes' and pods' `resources`,
  so NodeResourcesFit keeps each kind of pod on its kind of node ("Insufficient gpu.nvidia.com").
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from operators.kube import dra
from scheduler.model import GpuHealth, HealthState, MoveBy, Node, Pod, PodKind
from scheduler.model.node_rules import Requirement, SelectorTerm

DRA_RESOURCE = dra.GPU_CLASS  # the snapshot's name for GPUs through DRA
PLUGIN_RESOURCE = "nvidia.com/gpu"
STAND_IN = "resourceclaim/"


class DraView:
    """The cluster's DRA objects, read once per conversion."""

    def __init__(
        self,
        slices: list[dict[str, Any]],
        claims: list[dict[str, Any]],
        gpunodes: list[dict[str, Any]],
        pending: list[dict[str, Any]],
    ) -> None:
        self.nodes, self.notes = dra.node_gpus(slices, gpunodes)
        self.where = dra.device_at(self.nodes)
        self.claims = dra.by_key(claims)
        self.held: set[str] = set()  # allocated claims a running pod holds
        # GPU indices running pods hold, by node: partitions of one GPU (MIG devices of a
        # DynamicMIG GPU) in several claims hold it once.
        self.counted: dict[str, set[int]] = defaultdict(set)
        self.users: set[str] = set()  # pods whose GPUs come from claims
        # An unallocated claim shared by pending pods counts for the first by key.
        self.first: dict[str, str] = {}
        for raw in sorted(pending, key=_key):
            ns = raw["metadata"].get("namespace", "default")
            try:
                names = dra.claim_names(raw) if dra.has_claims(raw) else []
            except dra.ClaimProblem:
                continue
            for name in names:
                self.first.setdefault(f"{ns}/{name}", _key(raw))

    def gpus_of(self, node: str) -> int:
        gpus = self.nodes.get(node)
        return gpus.gpus if gpus is not None else 0

    # -- pods ---------------------------------------------------------------------------------

    def pending(self, pod: Pod, raw: dict[str, Any], milli_key: str) -> Pod:
        """A pending pod with claims: its GPUs and where an allocated claim pins it. Raises
        dra.ClaimProblem when its claims cannot be planned."""
        if milli_key in (raw["metadata"].get("annotations") or {}):
            raise dra.ClaimProblem(
                f"annotation {milli_key}: a share of a GPU through DRA is one ResourceClaim that "
                "the sharing pods all name (the driver's MPS or time-slicing config divides the "
                "GPU); drop the annotation"
            )
        if pod.gpus:
            raise dra.ClaimProblem(
                f"the pod requests {PLUGIN_RESOURCE} and has ResourceClaims; ask for the GPUs "
                "one way (claims of gpu.nvidia.com, or the device plugin's resource)"
            )
        gpus, nodes = 0, set()
        for c in dra.pod_claims(raw, self.claims):
            if c.allocated:
                on = dra.nodes_of(c, self.where)
                if not on:
                    raise dra.ClaimProblem(
                        f"ResourceClaim {c.key} is allocated to devices no node publishes as "
                        "GPUs of gpu.nvidia.com"
                    )
                nodes |= set(on)
                continue
            if self.first.get(c.key, pod.key) != pod.key:
                raise dra.ClaimProblem(
                    f"ResourceClaim {c.key} is shared with pod {self.first[c.key]}, which is "
                    "placed first; this pod follows it to the same GPUs",
                    waiting=True,
                )
            gpus += c.gpus
        if len(nodes) > 1:
            raise dra.ClaimProblem(
                f"the pod's ResourceClaims are allocated on different nodes ({sorted(nodes)})"
            )
        self.users.add(pod.key)
        update: dict[str, Any] = {"gpus": gpus}
        if nodes:
            update["node_affinity"] = _pinned(pod.node_affinity, nodes.pop())
        return pod.model_copy(update=update)

    def running(self, pod: Pod, raw: dict[str, Any], annotated: list[int] | None) -> Pod:
        """A bound pod with claims holds the devices of its allocated claims on its node
        (the indices come back as `gpu_indices`, taken as they are by _assign_indices)."""
        ns = raw["metadata"].get("namespace", "default")
        try:
            names = dra.claim_names(raw)
        except dra.ClaimProblem:
            names = []
        indices: list[int] = []
        allocated = False
        for name in names:
            key = f"{ns}/{name}"
            obj = self.claims.get(key)
            if obj is None:
                continue
            try:
                claim = dra.read_claim(obj)
            except dra.ClaimProblem:
                continue
            if not claim.allocated:
                continue
            allocated = True
            if key in self.held:
                continue  # a shared claim: its devices count once
            self.held.add(key)
            for i in dra.nodes_of(claim, self.where).get(pod.node or "", []):
                if i not in self.counted[pod.node or ""]:
                    self.counted[pod.node or ""].add(i)
                    indices.append(i)
        self.users.add(pod.key)
        if not allocated:
            # Bound so lately that the claims' cache lags: what we annotated when we bound it.
            indices = list(annotated or [])
        return pod.model_copy(update={"gpus": len(indices), "gpu_indices": sorted(indices)})

    # -- the whole snapshot -------------------------------------------------------------------

    def stand_ins(self, nodes: dict[str, Node], placed: list[Pod]) -> tuple[list[Pod], dict]:
        """Pods that stand for allocated claims no running pod holds (their pod is pending,
        gone, or on no node the snapshot has), on the GPUs no running pod holds; and their
        uids."""
        used: dict[str, set[int]] = defaultdict(set)
        for p in placed:
            if p.node is not None:
                used[p.node] |= set(p.gpu_indices)
        out, uids = [], {}
        for key, obj in sorted(self.claims.items()):
            if key in self.held:
                continue
            try:
                claim = dra.read_claim(obj)
            except dra.ClaimProblem:
                continue
            for node, indices in sorted(dra.nodes_of(claim, self.where).items()):
                free = sorted(set(indices) - used[node])
                if node not in nodes or not free:
                    continue
                used[node] |= set(free)
                p = Pod(
                    name=f"{STAND_IN}{claim.name}",
                    namespace=claim.namespace,
                    kind=PodKind.TRAINING,
                    gpus=len(free),
                    node=node,
                    gpu_indices=free,
                    preemptible=False,
                    move_by=MoveBy.NONE,
                )
                out.append(p)
                uids[p.key] = claim.uid
                self.users.add(p.key)
        return out, uids

    def finish(self, nodes: list[Node], pods: list[Pod]) -> tuple[list[Node], list[Pod]]:
        """Unusable indices as failed GPUs, and in a cluster with both kinds of GPU node, each
        kind as a resource of its own."""
        out_nodes = []
        mixed = bool(self.nodes) and any(n.name not in self.nodes for n in nodes)
        for n in nodes:
            gpus = self.nodes.get(n.name)
            if gpus is None:
                if mixed:
                    n = n.model_copy(update={"resources": {**n.resources, PLUGIN_RESOURCE: n.gpus}})
                out_nodes.append(n)
                continue
            health = {h.index: h for h in n.gpu_health}
            for i, (effect, why) in gpus.unusable().items():
                state = HealthState.FAILED if effect == "NoExecute" else HealthState.DEGRADED
                if health.get(i) is None or health[i].state != HealthState.FAILED:
                    health[i] = GpuHealth(index=i, state=state, reasons=[why])
            update: dict[str, Any] = {"gpu_health": [health[i] for i in sorted(health)]}
            if mixed:
                update["resources"] = {**n.resources, DRA_RESOURCE: len(gpus.devices)}
            out_nodes.append(n.model_copy(update=update))
        if not mixed:
            return out_nodes, pods
        out_pods = []
        for p in pods:
            name = DRA_RESOURCE if p.key in self.users else PLUGIN_RESOURCE
            if p.gpus and not p.fractional:
                p = p.model_copy(update={"resources": {**p.resources, name: p.gpus}})
            out_pods.append(p)
        return out_nodes, out_pods


def _pinned(terms: list[SelectorTerm] | None, node: str) -> list[SelectorTerm]:
    """The pod's required node affinity and the node its allocated claims are on: each term
    also requires the node (terms are ORed, their requirements ANDed)."""
    pin = Requirement(key="metadata.name", operator="In", values=[node])
    if not terms:
        return [SelectorTerm(match_expressions=[], match_fields=[pin])]
    return [t.model_copy(update={"match_fields": [*t.match_fields, pin]}) for t in terms]


def _key(raw: dict[str, Any]) -> str:
    md = raw["metadata"]
    return f"{md.get('namespace', 'default')}/{md['name']}"
