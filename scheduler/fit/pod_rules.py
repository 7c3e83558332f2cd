"""kube-scheduler's filters that depend on other pods: PodTopologySpread (DoNotSchedule) and
InterPodAffinity (the pod's required affinity and anti-affinity, and the required
anti-affinity of the pods already placed), in its filter order and words.

Unlike the node filters (scheduler.fit.filters), the verdict changes with every pod placed, so
the pods placed so far are kept here, counted by namespace and by the labels any rule reads
(pods alike in those are alike to every rule), and a pod's verdicts are worked out once per
change of them. Only the nodes of the snapshot count (wattpack models GPU nodes): a domain
that has only other nodes is not seen."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from scheduler.fit.filters import node_affinity_allows, tolerates
from scheduler.model import ClusterSnapshot, Node, Pod
from scheduler.model.pod_rules import LabelSelector, PodAffinityTerm, SpreadConstraint

SPREAD_LABEL = "node(s) didn't match pod topology spread constraints (missing required label)"
SPREAD = "node(s) didn't match pod topology spread constraints"
AFFINITY = "node(s) didn't match pod affinity rules"
ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI = "node(s) didn't satisfy existing pods anti-affinity rules"

_Group = tuple[str, tuple[tuple[str, str], ...]]  # namespace, the labels rules read


def _read_keys(pods: Iterable[Pod]) -> set[str]:
    keys: set[str] = set()
    for p in pods:
        for t in (*p.pod_affinity, *p.pod_anti_affinity):
            keys |= t.keys()
        for c in p.topology_spread:
            keys |= c.keys()
    return keys


def touched(snapshot: ClusterSnapshot) -> set[str]:
    """Keys of the pods any of these rules bears on: those with rules of their own, those an
    anti-affinity term of any pod selects (placing or moving them is checked too), and the
    pending pods a pending pod's affinity selects (placed with it, they can be its partners)."""
    own = [p for p in snapshot.pods if p.neighbour_rules]
    if not own:
        return set()
    ns = snapshot.namespace_labels
    anti = _unique((p.namespace, t) for p in snapshot.pods for t in p.pod_anti_affinity)
    near = [p for p in own if p.node is None and p.pod_affinity]
    near = list({(p.namespace, _json(p.pod_affinity)): p for p in near}.values())
    read = _read_keys(own)

    def excluded(q: Pod) -> bool:
        return any(t.selects(owner, q.namespace, q.labels, ns) for owner, t in anti)

    def partner(q: Pod) -> bool:
        return q.node is None and any(
            all(t.selects(p.namespace, q.namespace, q.labels, ns) for t in p.pod_affinity)
            for p in near
        )

    # Pods alike in namespace, the labels the rules read and whether they wait are alike here.
    verdict: dict[tuple, bool] = {}  # type: ignore[type-arg]
    out = {p.key for p in own}
    for q in snapshot.pods:
        labels = tuple(sorted((k, v) for k, v in q.labels.items() if k in read))
        sig = (q.namespace, labels, q.node is None)
        hit = verdict.get(sig)
        if hit is None:
            hit = verdict[sig] = excluded(q) or partner(q)
        if hit:
            out.add(q.key)
    return out


def _json(terms: list[PodAffinityTerm]) -> str:
    return "".join(t.model_dump_json() for t in terms)


def _unique(terms: Iterable[tuple[str, PodAffinityTerm]]) -> list[tuple[str, PodAffinityTerm]]:
    """Alike terms once (replicas carry the same ones)."""
    return list({(ns, t.model_dump_json()): (ns, t) for ns, t in terms}.values())


@dataclass
class _Verdicts:
    """One pod's rules over the pods placed when they were worked out."""

    spread: list[tuple[SpreadConstraint, dict[str, int], int, int]] = field(default_factory=list)
    affinity: Counter[tuple[str, str]] | None = None
    first_of_its_kind: bool = False
    anti: Counter[tuple[str, str]] | None = None
    existing_anti: set[tuple[str, str]] = field(default_factory=set)


class PodRules:
    def __init__(self, snapshot: ClusterSnapshot, placed: Iterable[tuple[Pod, int]] = ()) -> None:
        self.nodes: list[Node] = snapshot.nodes
        self.ns_labels = snapshot.namespace_labels
        self._read = _read_keys(snapshot.pods)
        self._groups: dict[_Group, Counter[int]] = {}
        self._labels: dict[_Group, dict[str, str]] = {}
        # Placed pods per group, topology key (of any affinity term) and domain, kept as they
        # come and go: a pod's affinity verdicts then sum domains, not nodes.
        self._keys = sorted(
            {t.topology_key for p in snapshot.pods for t in (*p.pod_affinity, *p.pod_anti_affinity)}
            | {c.topology_key for p in snapshot.pods for c in p.topology_spread}
        )
        self._in_domain: dict[_Group, dict[str, Counter[str]]] = {}
        # Groups by label (key, value): a selector's matchLabels narrow the groups to test to
        # those with every pair (apps have a label each; there may be thousands).
        self._by_label: dict[tuple[str, str], set[_Group]] = {}
        # Anti-affinity terms of placed pods, alike ones together: (owner namespace, term,
        # the nodes of the pods that carry it).
        self._anti: dict[str, tuple[str, PodAffinityTerm, Counter[int]]] = {}
        # ... by a label (key, value) their selector's matchLabels require ("" for none): a
        # pod need only be tested against the terms its labels could meet.
        self._anti_by_label: dict[tuple[str, str] | str, set[str]] = {}
        self._version = 0
        self._seen: dict[str, tuple[int, _Verdicts]] = {}
        self._eligible_of: dict[tuple, tuple[list[tuple[int, str]], bool]] = {}  # type: ignore[type-arg]
        self._values_of: dict[str, list[str]] = {}
        index = {n.name: i for i, n in enumerate(self.nodes)}
        for p in snapshot.pods:
            if p.node is not None and p.node in index:
                self.add(p, index[p.node], +1)
        for p, node in placed:
            self.add(p, node, +1)

    def copy(self) -> PodRules:
        out = object.__new__(PodRules)
        out.nodes, out.ns_labels, out._read = self.nodes, self.ns_labels, self._read
        out._groups = {g: Counter(c) for g, c in self._groups.items()}
        out._labels, out._keys = self._labels, self._keys
        out._by_label = {k: set(v) for k, v in self._by_label.items()}
        out._in_domain = {
            g: {k: Counter(c) for k, c in by_key.items()} for g, by_key in self._in_domain.items()
        }
        out._anti = {k: (ns, t, Counter(c)) for k, (ns, t, c) in self._anti.items()}
        out._anti_by_label = {k: set(v) for k, v in self._anti_by_label.items()}
        out._version, out._seen = self._version, {}
        out._eligible_of, out._values_of = self._eligible_of, self._values_of
        return out

    def _group(self, pod: Pod) -> _Group:
        labels = tuple(sorted((k, v) for k, v in pod.labels.items() if k in self._read))
        return pod.namespace, labels

    def add(self, pod: Pod, node: int, sign: int) -> None:
        """A pod placed on (sign +1) or taken off (-1) the node."""
        self._version += 1
        g = self._group(pod)
        if g not in self._groups:
            self._groups[g] = Counter()
            self._in_domain[g] = {k: Counter() for k in self._keys}
            self._labels[g] = dict(g[1])
            for pair in g[1]:
                self._by_label.setdefault(pair, set()).add(g)
        labels = self.nodes[node].labels
        for k, counts in self._in_domain[g].items():
            value = labels.get(k)
            if value is not None:
                counts[value] += sign
        self._groups[g][node] += sign
        for t in pod.pod_anti_affinity:
            key = f"{pod.namespace}\0{t.model_dump_json()}"
            if key not in self._anti:
                self._anti[key] = (pod.namespace, t, Counter())
                sel = t.label_selector
                pair = min(sel.match_labels.items()) if sel and sel.match_labels else ""
                self._anti_by_label.setdefault(pair, set()).add(key)
            self._anti[key][2][node] += sign

    # -- verdicts ----------------------------------------------------------------------------
    def refusal(self, pod: Pod, node: int) -> str | None:
        """Why the node does not take the pod now, in kube-scheduler's words (PodTopologySpread,
        then InterPodAffinity); None if it may."""
        v = self._verdicts(pod)
        labels = self.nodes[node].labels
        for c, counts, least, own in v.spread:
            value = labels.get(c.topology_key)
            if value is None:
                return SPREAD_LABEL
            if counts.get(value, 0) + own - least > c.max_skew:
                return SPREAD
        if v.affinity is not None and not self._affinity_holds(pod, v, labels):
            return AFFINITY
        if v.anti:
            for t in pod.pod_anti_affinity:
                value = labels.get(t.topology_key)
                if value is not None and v.anti[(t.topology_key, value)] > 0:
                    return ANTI_AFFINITY
        if v.existing_anti and any(pair in v.existing_anti for pair in labels.items()):
            return EXISTING_ANTI
        return None

    def admits(self, pod: Pod, node: int) -> bool:
        return self.refusal(pod, node) is None

    def _affinity_holds(self, pod: Pod, v: _Verdicts, labels: dict[str, str]) -> bool:
        assert v.affinity is not None
        found = True
        for t in pod.pod_affinity:
            value = labels.get(t.topology_key)
            if value is None:
                return False  # every topology key must be on the node
            if v.affinity[(t.topology_key, value)] <= 0:
                found = False
        # The first of a group of pods with affinity to each other: no pod anywhere matches its
        # terms, and it matches them itself.
        return found or v.first_of_its_kind

    def _verdicts(self, pod: Pod) -> _Verdicts:
        seen = self._seen.get(pod.key)
        if seen is not None and seen[0] == self._version:
            return seen[1]
        v = _Verdicts()
        if pod.topology_spread:
            v.spread = self._spread(pod)
        if pod.pod_affinity:
            v.affinity = self._domains(pod, pod.pod_affinity, every=True)
            v.first_of_its_kind = not +v.affinity and all(
                t.selects(pod.namespace, pod.namespace, pod.labels, self.ns_labels)
                for t in pod.pod_affinity
            )
        if pod.pod_anti_affinity:
            v.anti = self._domains(pod, pod.pod_anti_affinity, every=False)
        for key in self._anti_about(pod):
            owner, t, nodes = self._anti[key]
            if t.selects(owner, pod.namespace, pod.labels, self.ns_labels):
                for n, k in nodes.items():
                    value = self.nodes[n].labels.get(t.topology_key) if k > 0 else None
                    if value is not None:
                        v.existing_anti.add((t.topology_key, value))
        self._seen[pod.key] = (self._version, v)
        return v

    def _anti_about(self, pod: Pod) -> Iterable[str]:
        """Placed pods' anti-affinity terms that may select the pod."""
        yield from self._anti_by_label.get("", ())
        for pair in pod.labels.items():
            yield from self._anti_by_label.get(pair, ())

    def _placed(
        self, selector: LabelSelector | None = None
    ) -> Iterable[tuple[_Group, dict[str, str], Counter[int]]]:
        """The groups of placed pods; with a selector, only those that may match it (a group
        without one of its matchLabels cannot)."""
        groups: Iterable[_Group] = self._groups
        if selector is not None and selector.match_labels:
            sets = [self._by_label.get(pair, set()) for pair in selector.match_labels.items()]
            groups = min(sets, key=len)
        for g in groups:
            yield g, self._labels[g], self._groups[g]

    @staticmethod
    def _narrowing(terms: list[PodAffinityTerm], every: bool) -> LabelSelector | None:
        """A selector every group that matters must match: for affinity (every term) any
        term's; for anti-affinity (any term) one only where there is a single term."""
        return terms[0].label_selector if every or len(terms) == 1 else None

    def _domains(
        self, pod: Pod, terms: list[PodAffinityTerm], every: bool
    ) -> Counter[tuple[str, str]]:
        """Placed pods per (topology key, value): for affinity, pods that match every term
        count for each term's domain; for anti-affinity, a pod counts for each term it
        matches."""
        out: Counter[tuple[str, str]] = Counter()
        if any(t.label_selector is None for t in terms) and (every or len(terms) == 1):
            return out  # a null selector selects no pod
        for g, labels, _ in self._placed(self._narrowing(terms, every)):
            hits = [t for t in terms if t.selects(pod.namespace, g[0], labels, self.ns_labels)]
            if not hits or (every and len(hits) < len(terms)):
                continue
            for t in hits:
                for value, k in self._in_domain[g][t.topology_key].items():
                    if k > 0:
                        out[(t.topology_key, value)] += k
        return out

    def _domain_values(self, key: str) -> list[str]:
        values = self._values_of.get(key)
        if values is None:
            values = self._values_of[key] = sorted(
                {n.labels[key] for n in self.nodes if key in n.labels}
            )
        return values

    def _eligible(
        self, pod: Pod, c: SpreadConstraint, keys: list[str]
    ) -> tuple[list[tuple[int, str]], bool]:
        """The nodes a constraint counts, with their domain: every constraint's key on the node,
        and the node inclusion policies; and whether that is every node with its key. They
        depend on the nodes alone, so they are worked out once per kind of pod (what the node
        filters read of it) and constraint."""
        key = (pod.rules_key, tuple(keys), c.topology_key, c.node_affinity_policy,
               c.node_taints_policy)  # fmt: skip
        out = self._eligible_of.get(key)
        if out is None:
            nodes = [
                (i, n.labels[c.topology_key])
                for i, n in enumerate(self.nodes)
                if all(k in n.labels for k in keys)
                and (c.node_affinity_policy != "Honor" or node_affinity_allows(pod, n))
                and (c.node_taints_policy != "Honor" or tolerates(pod, n))
            ]
            with_key = sum(1 for n in self.nodes if c.topology_key in n.labels)
            out = (nodes, len(nodes) == with_key)
            self._eligible_of[key] = out
        return out

    def _spread(self, pod: Pod) -> list[tuple[SpreadConstraint, dict[str, int], int, int]]:
        """Per constraint: matching pods per domain over the eligible nodes, the least of them
        (0 with fewer domains than minDomains), and whether the pod counts itself."""
        constraints = pod.topology_spread
        keys = [c.topology_key for c in constraints]
        counts: list[dict[str, int]] = []
        for c in constraints:
            eligible, every_node = self._eligible(pod, c, keys)
            # A null or empty selector counts no pod (as kube-scheduler's countPodsMatchSelector).
            sel = c.label_selector
            groups = [] if sel is None or sel.empty else [
                g for g, labels, _ in self._placed(sel)
                if g[0] == pod.namespace and sel.matches(labels)
            ]  # fmt: skip
            if every_node:
                # Every node with the key counts: sum the groups' domains, not their nodes.
                domains = dict.fromkeys(self._domain_values(c.topology_key), 0)
                for g in groups:
                    for value, k in self._in_domain[g][c.topology_key].items():
                        domains[value] += max(0, k)
            else:
                matching: Counter[int] = Counter()
                for g in groups:
                    matching.update(self._groups[g])
                domains = {}
                for i, value in eligible:
                    domains[value] = domains.get(value, 0) + max(0, matching[i])
            counts.append(domains)
        out = []
        for c, domains in zip(constraints, counts, strict=True):
            least = min(domains.values()) if domains else 0
            if c.min_domains is not None and len(domains) < c.min_domains:
                least = 0
            own = int(c.label_selector is not None and c.label_selector.matches(pod.labels))
            out.append((c, domains, least, own))
        return out
