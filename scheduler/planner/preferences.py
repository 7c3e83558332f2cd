"""kube-scheduler's soft preferences, where they cost nothing: preferred node affinity and
PreferNoSchedule taints. They weigh in kube-scheduler's score, and wattpack's objective (what
the cluster runs) comes first; so once a plan is chosen, each pod it places on a node it likes
less than another is moved, within the plan, to the node it likes most that has room for it
(every filter, GPU, CPU, memory and power budget holding). The plan places the same pods; only
their nodes change.

A node's score follows the default profile's weights: NodeAffinity 2 (the preferred terms'
weights that match, over the most any node matches) and TaintToleration 3 (fewer untolerated
PreferNoSchedule taints is better)."""

from __future__ import annotations

from scheduler.fit.state import ClusterState, Placement
from scheduler.model import ClusterSnapshot, Node, Pod
from scheduler.model.node_rules import TaintEffect

# Nodes tried per pod, best first: a bound on the pass, which runs once per cycle.
SCAN = 256


def _untolerated(pod: Pod, node: Node) -> int:
    return sum(
        1
        for t in node.taints
        if t.effect == TaintEffect.PREFER_NO_SCHEDULE
        and not any(x.tolerates(t) for x in pod.tolerations)
    )


def _affinity(pod: Pod, node: Node) -> int:
    return sum(
        t.weight
        for t in pod.preferred_node_affinity
        if t.preference.matches(node.name, node.labels)
    )


class Preferences:
    """The nodes each kind of pod prefers, best first."""

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.nodes = snapshot.nodes
        self.tainted = any(
            t.effect == TaintEffect.PREFER_NO_SCHEDULE for n in snapshot.nodes for t in n.taints
        )
        self._ranked: dict[str, tuple[list[int], list[float]]] = {}

    def cares(self, pod: Pod) -> bool:
        return bool(pod.preferred_node_affinity) or self.tainted

    def _signature(self, pod: Pod) -> str:
        terms = "".join(t.model_dump_json() for t in pod.preferred_node_affinity)
        tolerations = "".join(t.model_dump_json() for t in pod.tolerations)
        return terms + "\0" + tolerations

    def ranked(self, pod: Pod) -> tuple[list[int], list[float]]:
        """Nodes by score, best first, and every node's score."""
        sig = self._signature(pod)
        if sig not in self._ranked:
            aff = [_affinity(pod, n) for n in self.nodes]
            taints = [_untolerated(pod, n) for n in self.nodes]
            top_aff, top_taints = max(aff, default=0), max(taints, default=0)
            score = [
                2 * (100 * a / top_aff if top_aff else 0)
                + 3 * (100 * (1 - t / top_taints) if top_taints else 100)
                for a, t in zip(aff, taints, strict=True)
            ]
            order = sorted(range(len(self.nodes)), key=lambda i: -score[i])
            self._ranked[sig] = (order, score)
        return self._ranked[sig]


def honour_preferences(
    state: ClusterState, pending: list[Pod], placed: dict[str, Placement], fixed: set[int]
) -> int:
    """Moves placed pods to nodes they prefer where those have room; `fixed`: nodes whose
    placements stay (what was evicted there was evicted for them). Returns how many moved."""
    prefs = Preferences(state.snapshot)
    moved = 0
    for pod in pending:
        where = placed.get(pod.key)
        if where is None or where[0] in fixed or not prefs.cares(pod):
            continue
        node, gpus = where
        order, score = prefs.ranked(pod)
        better = [i for i in order[:SCAN] if score[i] > score[node]]
        if not better:
            continue
        state.remove(pod, node, gpus)
        for cand in better:
            if state.class_of[cand] < 0 or cand in fixed:
                continue
            if not (state.model_ok(pod, cand) and state.host_ok(pod, cand)):
                continue
            found = state.gpus_for(pod, cand)
            if found is not None and state.power_ok(pod, cand):
                state.place(pod, cand, found)
                placed[pod.key] = (cand, found)
                moved += 1
                break
        else:
            state.place(pod, node, gpus)
    return moved
