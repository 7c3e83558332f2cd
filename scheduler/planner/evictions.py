"""Evictions in a cycle: the ones the model counted, the ones a leftover pod makes for itself
(as kube-scheduler's preemption does), and putting back those whose room went unused."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from scheduler.fit.classes import fit_shape
from scheduler.fit.cycle import Cycle, starving
from scheduler.fit.greedy import unit_order
from scheduler.fit.state import UNUSABLE, ClusterState, Placement
from scheduler.fit.statement import Statement
from scheduler.fit.value import pod_value
from scheduler.model import Pod

Evicted = dict[str, tuple[Pod, str]]

# Nodes where a pod's preemption would work (and pay) weighed before the cheapest of them is
# taken: as kube-scheduler, which dry-runs a bounded number of candidate nodes. Nodes come
# cheapest victim first, so these are the likely cheapest; at 16,384 scattered nodes a pod
# that fits after preemption otherwise weighed 1,100 nodes (0.88 s for 161 pods), and with 8
# the plan's value was 0.03% higher, not lower (different early choices), in 0.58 s; 4,096
# and 1,024 nodes gave the same plan value.
_CANDIDATES = 8


def evict_counted(
    cycle: Cycle,
    counts: dict[tuple[tuple, int], int],
    group_of_class: list[int],
    emptiest_first: bool = False,
) -> dict[str, Pod]:
    """Evict `counts` victims of each (signature, group), from the most crowded nodes first, or
    (`emptiest_first`) from the nodes with the most free GPUs first: there an eviction completes
    a block of free GPUs, as the model's size rows count it."""
    s = cycle.state
    by_slot: dict[tuple[tuple, int], list[Pod]] = defaultdict(list)
    per_node: dict[int, int] = defaultdict(int)
    for v in cycle.victims:
        node = s.node_index[v.node]  # type: ignore[index]
        per_node[node] += 1
        by_slot[(s.victim_signature(v), group_of_class[s.class_of[node]])].append(v)
    evicted: dict[str, Pod] = {}
    for slot, k in counts.items():
        # Evicting from the same nodes first frees whole GPUs and whole nodes.
        def crowded(v: Pod) -> tuple:
            node = s.node_index[v.node]  # type: ignore[index]
            return (-s.nfree[node] if emptiest_first else 0, -per_node[node], v.node, v.key)

        pool = sorted(by_slot[slot], key=crowded)
        for v in pool[:k]:
            s.remove(v, s.node_index[v.node], tuple(v.gpu_indices))  # type: ignore[index]
            evicted[v.key] = v
    return evicted


def preempt_for(
    cycle: Cycle,
    units: list[list[Pod]],
    evicted: dict[str, Pod],
    placed: dict[str, Placement],
    stop: Callable[[], bool] | None = None,
) -> None:
    """What kube-scheduler does for one pod: on each node with lower-priority victims, evict the
    cheapest ones until the pod fits, and do it on the node where that costs least, if it costs
    less than the pod is worth. A gang does it member by member, all or none (a Statement): a
    member takes free room where there is some, and every member pays for its own victims.
    Catches what the model's counts could not realise. `stop` (a time limit) is asked before
    each unit."""
    state, policy = cycle.state, cycle.policy
    # Victims never change value: ranked once, cheapest first, not once per pod and node (at
    # 16,384 nodes that ranking was most of a realisation's time).
    cost_of = {v.key: pod_value(v, policy) for v in cycle.victims}
    on_node: dict[int, list[Pod]] = defaultdict(list)
    for v in sorted(cycle.victims, key=lambda v: (cost_of[v.key], v.key)):
        on_node[state.node_index[v.node]].append(v)  # type: ignore[index]
    # Nodes by their cheapest victim, which only rises as victims go: once it reaches what the
    # best node so far costs, no node further on can cost less.
    nodes = sorted(on_node, key=lambda n: (cost_of[on_node[n][0].key], n))
    room = _Room(state, cost_of, on_node, nodes)
    # Shapes and priorities that found no room: victims only go, and a failed unit leaves the
    # state as it was, so a later unit of the same shapes finds none either.
    hopeless: set[tuple] = set()
    for unit in unit_order(units, policy):
        if stop is not None and stop():
            return
        shape = (tuple(sorted((fit_shape(p) for p in unit), key=repr)), unit[0].priority)
        if shape in hopeless:
            continue
        trial = Statement(state)
        taken: dict[str, Pod] = {}
        where: list[tuple[Pod, Placement]] = []
        for pod in sorted(unit, key=lambda p: (-p.milli_total, p.key)):
            free = state.find(pod) if len(unit) > 1 else None
            if free is not None:
                trial.place(pod, *free)
                where.append((pod, free))
                continue
            best = room.cheapest(pod, pod_value(pod, policy), evicted, taken)
            if best is None:
                break
            node, victims = best
            for v in victims:
                trial.remove(v, node, tuple(v.gpu_indices))
                taken[v.key] = v
            gpus = state.gpus_for(pod, node)
            trial.place(pod, node, gpus)  # type: ignore[arg-type]
            where.append((pod, (node, gpus)))  # type: ignore[arg-type]
        if len(where) < len(unit):
            trial.discard()
            hopeless.add(shape)
            continue
        trial.commit()
        evicted.update(taken)
        placed.update((pod.key, at) for pod, at in where)


class _Room:
    """Where a pod fits after evicting the cheapest lower-priority victims, node by node."""

    def __init__(
        self,
        state: ClusterState,
        cost_of: dict[str, int],
        on_node: dict[int, list[Pod]],
        nodes: list[int],
    ) -> None:
        self.state, self.cost_of, self.on_node, self.nodes = state, cost_of, on_node, nodes
        # The GPUs a node has free and its victims hold: the most a pod could get there, now
        # and later (only evicting its victims frees GPUs on it). Most nodes fail a whole-node
        # pod on this alone, so each size walks only the nodes that pass.
        self._most = {
            n: state.nfree[n] + sum(len(v.gpu_indices) for v in vs) for n, vs in on_node.items()
        }
        self._for_size: dict[int, list[int]] = {}

    def _nodes_for(self, pod: Pod) -> list[int]:
        need = 0 if pod.fractional else pod.gpus  # a share may fit on a partly used GPU
        nodes = self._for_size.get(need)
        if nodes is None:
            nodes = self._for_size[need] = [n for n in self.nodes if self._most[n] >= need]
        return nodes

    def cheapest(self, pod: Pod, worth: int, *gone: dict[str, Pod]) -> tuple[int, list[Pod]] | None:
        """The node and victims (none of those `gone`) that make room for the pod for the
        least, if less than it is worth; weighs at most _CANDIDATES nodes where it works."""
        state, cost_of = self.state, self.cost_of
        best: tuple[int, int, list[Pod]] | None = None
        found = 0
        for node in self._nodes_for(pod):
            victims = self.on_node[node]
            if best is not None and cost_of[victims[0].key] >= best[0]:
                break
            if not state.model_ok(pod, node) or state.class_of[node] < 0:
                continue
            cands = [
                v
                for v in victims
                if v.priority < pod.priority and not any(v.key in g for g in gone)
            ]
            if not cands or (best is not None and cost_of[cands[0].key] >= best[0]):
                continue  # no victim here, or the cheapest alone costs what the best node does
            if not _could_fit(state, pod, node, cands):
                continue
            taken: list[Pod] = []
            fits = False
            trial = Statement(state)
            for v in cands:
                trial.remove(v, node, tuple(v.gpu_indices))
                taken.append(v)
                if (
                    state.host_ok(pod, node)
                    and state.power_ok(pod, node)
                    and state.gpus_for(pod, node) is not None
                ):
                    fits = True
                    break
            trial.discard()
            cost = sum(cost_of[v.key] for v in taken)
            if fits and cost < worth:
                found += 1
                if best is None or cost < best[0]:
                    best = (cost, node, taken)
                if found >= _CANDIDATES:
                    break
        return None if best is None else (best[1], best[2])


def _could_fit(state: ClusterState, pod: Pod, node: int, cands: list[Pod]) -> bool:
    """Whether evicting every candidate could make room for the pod on the node: a necessary
    test, made without touching the state (at 16,384 nodes preemption tries thousands of nodes
    per pod, and most lack the CPU, the GPUs or the power even with every victim gone)."""
    if state.cpu[node] + sum(v.cpu_milli for v in cands) < pod.cpu_milli:
        return False
    if state.mem[node] + sum(v.memory_mi_b for v in cands) < pod.memory_mi_b:
        return False
    if not pod.fractional and state.nfree[node] + sum(len(v.gpu_indices) for v in cands) < pod.gpus:
        return False
    return state.power_room(node, state.watts(pod, node) - sum(state.watts(v, node) for v in cands))


def _fits_back(state: ClusterState, v: Pod, node: int) -> bool:
    need = v.gpu_milli if v.fractional else 1000
    gpus_ok = all(
        state.res[node][g] in (UNUSABLE,) or state.res[node][g] >= need for g in v.gpu_indices
    )
    return gpus_ok and state.host_ok(v, node) and state.power_ok(v, node)


def settle_evictions(
    state: ClusterState, evicted: dict[str, Pod], pending: list[Pod], placed: dict[str, Placement]
) -> tuple[Evicted, list[list[Pod]]]:
    """Restore victims whose room went unused; keep only evictions a higher priority needs."""
    by_key = {p.key: p for p in pending}
    on_node: dict[int, list[str]] = defaultdict(list)
    for key, (n, _) in placed.items():
        on_node[n].append(key)
    bumped: list[list[Pod]] = []
    kept: list[tuple[Pod, int]] = []
    for v in sorted(evicted.values(), key=lambda v: (-v.priority, v.key)):
        node = state.node_index[v.node]  # type: ignore[index]
        if not _fits_back(state, v, node):
            # Room taken by pods that do not outrank the victim goes back to the victim.
            for key in sorted(on_node[node], key=lambda k: by_key[k].priority):
                p = by_key[key]
                if key in placed and p.priority <= v.priority and not p.gang_key:
                    state.remove(p, node, placed.pop(key)[1])
                    bumped.append([p])
                    if _fits_back(state, v, node):
                        break
        if _fits_back(state, v, node):
            state.place(v, node, tuple(v.gpu_indices))
            continue
        kept.append((v, node))
    reasons = _Preemptors(state, by_key, placed)
    return {v.key: (v, reasons.reason(v, node)) for v, node in kept}, bumped


class _Preemptors:
    """Who an eviction made room for: the highest-priority pod placed on the victim's node,
    else in a power domain it shares; indexed once, not searched once per victim."""

    def __init__(
        self, state: ClusterState, by_key: dict[str, Pod], placed: dict[str, Placement]
    ) -> None:
        self.state = state
        self.on_node: dict[int, tuple[int, str]] = {}
        self.in_domain: dict[str, tuple[int, str]] = {}
        self.by_key = by_key
        for key, (n, _) in placed.items():
            rank = (-by_key[key].priority, key)
            if n not in self.on_node or rank < self.on_node[n]:
                self.on_node[n] = rank
            for d in state.chain[n]:
                if d not in self.in_domain or rank < self.in_domain[d]:
                    self.in_domain[d] = rank

    def reason(self, v: Pod, node: int) -> str:
        best = self.on_node.get(node)
        if best is None or -best[0] <= v.priority:
            ranks = [self.in_domain[d] for d in self.state.chain[node] if d in self.in_domain]
            best = min(ranks, default=None)
        if best is None or -best[0] <= v.priority:
            return f"preempted for higher-priority work (priority {v.priority})"
        p = self.by_key[best[1]]
        policy = self.state.policy
        if starving(p, policy):
            return (
                f"preempted by {p.gang_key}, a gang waiting {p.waiting_seconds:.0f} s "
                f"(starvingGangSeconds {policy.starving_gang_seconds:g})"
            )
        return f"preempted by {p.key} (priority {p.priority} > {v.priority})"
