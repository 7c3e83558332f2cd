"""kube-scheduler's node filters that depend on the pod and the node alone: TaintToleration
(NoSchedule and NoExecute; PreferNoSchedule never filters) and NodeAffinity (nodeSelector and
required node affinity). A cordoned node carries node.kubernetes.io/unschedulable:NoSchedule, so
NodeUnschedulable is TaintToleration here, as in Kubernetes.

At thousands of nodes the filters are asked millions of times a cycle, so they are asked per
kind of pod and kind of node: pods alike in what the filters read share a key, and nodes that
every such key treats alike share a kind. Node classes and pools keep nodes of one kind, so a
check of a pool stands for its nodes."""

from __future__ import annotations

import ast
from collections import Counter
from functools import lru_cache

from scheduler.model import ClusterSnapshot, Node, Pod
from scheduler.model.node_rules import Requirement, SelectorTerm, Taint, TaintEffect, Toleration

_FILTERING = (TaintEffect.NO_SCHEDULE, TaintEffect.NO_EXECUTE)
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"  # the taint of a cordoned node


def pod_key(pod: Pod) -> str:
    """What the filters read of the pod, as a string (hashable and ordered, as pod class keys
    must be); empty: nothing (no tolerations, selector or affinity)."""
    return pod.rules_key


@lru_cache(maxsize=4096)
def _rules(key: str) -> tuple[tuple[Toleration, ...], tuple, tuple[SelectorTerm, ...] | None]:
    if not key:
        return (), (), None
    tolerations, selector, affinity = ast.literal_eval(key)  # Pod.rules_key's repr

    def reqs(rs: tuple) -> list[Requirement]:
        return [Requirement(key=k, operator=op, values=list(v)) for k, op, v in rs]

    return (
        tuple(Toleration(key=k, operator=op, value=v, effect=e) for k, op, v, e in tolerations),
        selector,
        None
        if affinity is None
        else tuple(
            SelectorTerm(match_expressions=reqs(e), match_fields=reqs(f)) for e, f in affinity
        ),
    )


def _untolerated(tolerations: tuple[Toleration, ...], node: Node) -> Taint | None:
    for t in node.taints:
        if t.effect in _FILTERING and not any(x.tolerates(t) for x in tolerations):
            return t
    return None


def _matches(selector: tuple, affinity: tuple[SelectorTerm, ...] | None, node: Node) -> bool:
    labels = node.labels
    if any(labels.get(k) != v for k, v in selector):
        return False
    return affinity is None or any(t.matches(node.name, labels) for t in affinity)


def _refusal(key: str, node: Node) -> str | None:
    tolerations, selector, affinity = _rules(key)
    if not _matches(selector, affinity, node):
        return "node(s) didn't match Pod's node affinity/selector"
    taint = _untolerated(tolerations, node)
    if taint is not None and taint.key == UNSCHEDULABLE:
        return "node(s) were unschedulable"
    if taint is not None:
        value = f": {taint.value}" if taint.value else ""
        return f"node(s) had untolerated taint {{{taint.key}{value}}}"
    return None


def node_affinity_allows(pod: Pod, node: Node) -> bool:
    """The pod's nodeSelector and required node affinity allow the node."""
    _, selector, affinity = _rules(pod_key(pod))
    return _matches(selector, affinity, node)


def tolerates(pod: Pod, node: Node) -> bool:
    """The pod tolerates every NoSchedule and NoExecute taint of the node."""
    return _untolerated(_rules(pod_key(pod))[0], node) is None


def refusal(pod: Pod, node: Node) -> str | None:
    """Why the node does not take the pod, in kube-scheduler's words (NodeAffinity first, then
    TaintToleration, its filter order); None if it may."""
    return _refusal(pod_key(pod), node)


_RECENT: list[tuple[ClusterSnapshot, NodeFilters]] = []  # a cycle builds several states


class NodeFilters:
    """The filters over one snapshot, asked by pod key and node kind."""

    @classmethod
    def of(cls, snapshot: ClusterSnapshot) -> NodeFilters:
        """The filters of the snapshot, worked out once however many states a cycle builds
        (kept with the snapshot, whose identity keys them)."""
        for snap, filters in _RECENT:
            if snap is snapshot:
                return filters
        filters = cls(snapshot)
        _RECENT.append((snapshot, filters))
        del _RECENT[:-2]
        return filters

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.nodes = snapshot.nodes
        keys = {pod_key(p) for p in snapshot.pods}
        keys.add("")
        # Whether any pod asks for other resources or host ports (NodeResourcesFit, NodePorts):
        # read once per snapshot, as the filters are, however many states a cycle builds.
        self.resources_asked = any(p.resources for p in snapshot.pods)
        self.ports_asked = any(p.host_ports for p in snapshot.pods)
        self._keys = sorted(keys)
        # Nothing to decide: no pod asks anything and no node has a filtering taint.
        self.trivial = self._keys == [""] and not any(
            t.effect in _FILTERING for n in snapshot.nodes for t in n.taints
        )
        self._verdicts: dict[tuple[str, int], bool] = {}
        kinds: dict[tuple, int] = {}
        self.kind: list[int] = []
        self._rep: list[int] = []
        for i, n in enumerate(snapshot.nodes):
            vector = () if self.trivial else tuple(self._admits(k, n) for k in self._keys)
            kind = kinds.get(vector)
            if kind is None:
                kind = kinds[vector] = len(self._rep)
                self._rep.append(i)
                for k, ok in zip(self._keys, vector, strict=False):
                    self._verdicts[(k, kind)] = ok
            self.kind.append(kind)
        # Nodes by kind and whether they take new work: a refusal is counted per kind.
        self._census = Counter(zip(self.kind, (n.schedulable for n in snapshot.nodes), strict=True))

    @staticmethod
    def _admits(key: str, node: Node) -> bool:
        return _refusal(key, node) is None

    def admits_kind(self, pod: Pod, kind: int) -> bool:
        if self.trivial:
            return True
        key = pod_key(pod)
        v = self._verdicts.get((key, kind))
        if v is None:  # a pod the snapshot did not hold (a copy made in the cycle)
            v = self._verdicts[(key, kind)] = self._admits(key, self.nodes[self._rep[kind]])
        return v

    def admits(self, pod: Pod, node: int) -> bool:
        return self.trivial or self.admits_kind(pod, self.kind[node])

    def refusals(self, pod: Pod) -> Counter[str]:
        """How many nodes refuse the pod, by why, where any filter has a say (cordoned nodes of
        a snapshot that marks them unschedulable count as kube-scheduler's NodeUnschedulable)."""
        out: Counter[str] = Counter()
        if self.trivial:  # no filter has a say: the reasons stay wattpack's own
            return out
        key = pod_key(pod)
        for (kind, schedulable), count in self._census.items():
            reason = (
                _refusal(key, self.nodes[self._rep[kind]])
                if schedulable
                else "node(s) were unschedulable"
            )
            if reason is not None:
                out[reason] += count
        return out

    def admitted_kinds(self, pod: Pod) -> list[int]:
        """The kinds of node that take the pod."""
        return [k for k in range(len(self._rep)) if self.admits_kind(pod, k)]


def summary(counts: Counter[str], total: int) -> str:
    """kube-scheduler's line: '0/64 nodes are available: 3 node(s) had untolerated taint
    {...}, 61 Insufficient GPU.' from the count of nodes that refuse the pod, by why."""
    parts = [f"{n} {why}" for why, n in sorted(counts.items(), key=lambda t: (-t[1], t[0]))]
    return f"0/{total} nodes are available: " + ", ".join(parts) + "."
