"""The checker's own reading of inter-pod affinity, anti-affinity and topology spread, written
from kube-scheduler's documented meaning and sharing nothing with the planner's
(scheduler.fit.pod_rules): every pod the plan places or moves is judged, in the order the plan
is carried out (moves, then bindings), against the pods in place at that moment."""

from __future__ import annotations

from scheduler.model import ClusterSnapshot, Node, Plan, Pod
from scheduler.model.pod_rules import PodAffinityTerm, SpreadConstraint

_Placed = list[tuple[Pod, Node]]


def pod_rule_problems(
    snapshot: ClusterSnapshot, plan: Plan, final: dict[str, tuple[Pod, Node, tuple[int, ...]]]
) -> list[str]:
    pods = {p.key: p for p in snapshot.pods}
    if not any(p.pod_affinity or p.pod_anti_affinity or p.topology_spread for p in pods.values()):
        return []
    order = [m.pod for m in plan.moves] + [b.pod for b in plan.bindings]
    order = [k for k in order if k in final]
    later = set(order)
    # Only a pod with rules of its own, or one that some pod's anti-affinity selects, can be
    # placed against the rules.
    anti = {
        (q.namespace, t.model_dump_json()): (q, t)
        for q in pods.values()
        for t in q.pod_anti_affinity
    }
    ns = snapshot.namespace_labels
    judged = {
        k
        for k in later
        if pods[k].pod_affinity
        or pods[k].pod_anti_affinity
        or pods[k].topology_spread
        or any(_about(t, q, pods[k], ns) for q, t in anti.values())
    }
    in_place = [(p, n) for k, (p, n, _) in final.items() if k not in later]
    problems = []
    for key in order:
        pod, node, _ = final[key]
        if key in judged:
            for why in _why_not(pod, node, in_place, snapshot):
                problems.append(f"{key} on {node.name}: {why}")
        in_place.append((pod, node))
    return problems


def _why_not(pod: Pod, node: Node, others: _Placed, snapshot: ClusterSnapshot) -> list[str]:
    ns = snapshot.namespace_labels
    out = []
    for c in pod.topology_spread:
        why = _skew(pod, node, c, others, snapshot.nodes)
        if why:
            out.append(why)
    if pod.pod_affinity and not _affinity_met(pod, node, others, ns):
        out.append("its required pod affinity is not met")
    for t in pod.pod_anti_affinity:
        if any(_same_domain(node, n, t.topology_key) and _about(t, pod, q, ns) for q, n in others):
            out.append(f"a pod its anti-affinity ({t.topology_key}) excludes runs in its domain")
    for q, n in others:
        for t in q.pod_anti_affinity:  # (an empty list for nearly every pod)
            if _same_domain(node, n, t.topology_key) and _about(t, q, pod, ns):
                out.append(f"{q.key}'s anti-affinity ({t.topology_key}) excludes it there")
    return out


def _about(term: PodAffinityTerm, owner: Pod, pod: Pod, ns: dict[str, dict[str, str]]) -> bool:
    if term.namespaces or term.namespace_selector is not None:
        sel = term.namespace_selector
        scoped = pod.namespace in term.namespaces or (
            sel is not None and sel.matches(ns.get(pod.namespace, {}))
        )
    else:
        scoped = pod.namespace == owner.namespace
    return scoped and term.label_selector is not None and term.label_selector.matches(pod.labels)


def _same_domain(a: Node, b: Node, key: str) -> bool:
    return key in a.labels and a.labels.get(key) == b.labels.get(key)


def _affinity_met(pod: Pod, node: Node, others: _Placed, ns: dict[str, dict[str, str]]) -> bool:
    terms = pod.pod_affinity
    if any(t.topology_key not in node.labels for t in terms):
        return False
    partners = [(q, n) for q, n in others if all(_about(t, pod, q, ns) for t in terms)]
    if all(any(_same_domain(node, n, t.topology_key) for _, n in partners) for t in terms):
        return True
    # The first of its group: no partner on any node with the terms' keys, and it is one.
    alone = not any(t.topology_key in n.labels for _, n in partners for t in terms)
    return alone and all(_about(t, pod, pod, ns) for t in terms)


def _skew(pod: Pod, node: Node, c: SpreadConstraint, others: _Placed, nodes: list[Node]) -> str:
    keys = [x.topology_key for x in pod.topology_spread]
    if c.topology_key not in node.labels:
        return f"node lacks the spread key {c.topology_key}"

    def eligible(n: Node) -> bool:
        if any(k not in n.labels for k in keys):
            return False
        if c.node_affinity_policy == "Honor":
            if any(n.labels.get(k) != v for k, v in pod.node_selector.items()):
                return False
            if pod.node_affinity is not None and not any(
                t.matches(n.name, n.labels) for t in pod.node_affinity
            ):
                return False
        if c.node_taints_policy == "Honor":
            for t in n.taints:
                if t.effect in ("NoSchedule", "NoExecute") and not any(
                    x.tolerates(t) for x in pod.tolerations
                ):
                    return False
        return True

    counts = {n.labels[c.topology_key]: 0 for n in nodes if eligible(n)}
    sel = c.label_selector
    if sel is not None and not sel.empty:
        for q, n in others:
            if q.namespace == pod.namespace and sel.matches(q.labels) and eligible(n):
                counts[n.labels[c.topology_key]] += 1
    least = min(counts.values(), default=0)
    if c.min_domains is not None and len(counts) < c.min_domains:
        least = 0
    own = int(sel is not None and sel.matches(pod.labels))
    skew = counts.get(node.labels[c.topology_key], 0) + own - least
    if skew > c.max_skew:
        return f"spread over {c.topology_key} would be {skew}, above maxSkew {c.max_skew}"
    return ""
