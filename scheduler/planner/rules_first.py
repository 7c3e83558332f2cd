"""Pods whose place depends on other pods are placed first: pods with inter-pod affinity,
anti-affinity or topology spread constraints, and pods that another pod's anti-affinity
selects (with their gangs). They go one unit at a time, highest priority and value first, each
checked against the pods placed before it, as kube-scheduler would place them one by one.

The rest of the cycle (the model, the repacks, preemption, moves) then plans around them as
running work that it may not move: the pods it places have no such rules and no anti-affinity
term selects them, so nothing it does can break a rule; and the running pods that a placed
pod's affinity or spread counted on stay where they are (a plan evicts and moves before it
binds). What this gives up: a pod with such
rules does not preempt, and one that runs is not moved (not even off a failing GPU: it is
rescheduled by its controller once the GPU fails)."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.fit.cycle import start_cycle
from scheduler.fit.greedy import place_unit, unit_order, units_of
from scheduler.fit.outcome import usable_capacity
from scheduler.fit.pod_rules import PodRules, touched
from scheduler.fit.reasons import Explainer
from scheduler.fit.state import ClusterState, Placement
from scheduler.fit.value import pod_value
from scheduler.model import (
    Binding,
    ClusterSnapshot,
    MoveBy,
    PackingPolicy,
    Plan,
    Pod,
    Unplaced,
)


def plan_rules_first(
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    rest: Callable[[ClusterSnapshot, PackingPolicy], Plan],
    clock: Callable[[], float],
) -> Plan:
    """The plan: the pods the rules bear on placed first, then `rest` on the cluster as it
    stands after them, within what is left of the time limit."""
    start = clock()
    bound_by_rules = touched(snapshot)
    if not bound_by_rules:
        return rest(snapshot, policy)
    cycle = start_cycle(snapshot, policy)
    gangs = {p.gang_key for p in cycle.pending if p.key in bound_by_rules and p.gang_key}
    first = [p for p in cycle.pending if p.key in bound_by_rules or p.gang_key in gangs]
    state = cycle.state
    state.follow_pod_rules(PodRules(snapshot))
    placed: dict[str, Placement] = {}
    for unit in unit_order(units_of(first), policy):
        place_unit(state, unit, placed)
    explainer = Explainer(state)
    unplaced = [explainer.explain(p) for p in first if p.key not in placed]

    nodes = snapshot.nodes
    first_keys = {p.key for p in first}
    leaned_on = _leaned_on(snapshot, [p for p in first if p.key in placed])
    pods = []
    for p in snapshot.pods:
        if p.key in placed:
            node, gpus = placed[p.key]
            # Running now, for the rest of the cycle: not to be preempted or moved.
            p = p.model_copy(
                update={
                    "node": nodes[node].name,
                    "gpu_indices": list(gpus),
                    "preemptible": False,
                    "move_by": MoveBy.NONE,
                }
            )
        elif p.key in first_keys:
            continue  # stays pending, explained here
        elif p.node is not None and p.key in leaned_on:
            # Evicted or moved away, it would take away what a placed pod's affinity or spread
            # counted on: the plan's evictions and moves go before its bindings.
            p = p.model_copy(update={"preemptible": False, "move_by": MoveBy.NONE})
        elif p.node is not None and p.key in bound_by_rules:
            p = p.model_copy(update={"move_by": MoveBy.NONE})
        pods.append(p)
    spent = clock() - start
    after = rest(snapshot.model_copy(update={"pods": pods}), _less_time(policy, spent))
    # In the order they were placed: each was judged with the ones before it in place.
    by_key = {p.key: p for p in first}
    first_placed = [by_key[k] for k in placed]
    bindings = [
        Binding(pod=p.key, node=nodes[placed[p.key][0]].name, gpu_indices=list(placed[p.key][1]))
        for p in first_placed
    ]
    out = _merged(after, bindings, unplaced, first, first_placed, state, policy)
    summary = out.summary.model_copy(update={"solve_seconds": round(clock() - start, 4)})
    return out.model_copy(update={"summary": summary})


def _less_time(policy: PackingPolicy, spent: float) -> PackingPolicy:
    """The policy with the time this step took off the limit (a deterministic solve keeps
    its limit: the same snapshot must give the same plan however long this step took)."""
    solver = policy.solver
    if solver.deterministic:
        return policy
    left = max(0.1 * solver.time_limit_seconds, solver.time_limit_seconds - spent)
    return policy.model_copy(
        update={"solver": solver.model_copy(update={"time_limit_seconds": left})}
    )


def _leaned_on(snapshot: ClusterSnapshot, placed: list[Pod]) -> set[str]:
    """Running pods that a placed pod's affinity or spread constraints count."""
    ns_labels = snapshot.namespace_labels
    # Alike rules once (replicas carry the same), as (namespace, affinity terms, selectors).
    rules = {
        (
            p.namespace,
            "".join(t.model_dump_json() for t in p.pod_affinity),
            "".join(c.model_dump_json() for c in p.topology_spread),
        ): p
        for p in placed
        if p.pod_affinity or p.topology_spread
    }

    def counted(q: Pod) -> bool:
        for p in rules.values():
            if p.pod_affinity and all(
                t.selects(p.namespace, q.namespace, q.labels, ns_labels) for t in p.pod_affinity
            ):
                return True
            if q.namespace == p.namespace and any(
                c.label_selector is not None and c.label_selector.matches(q.labels)
                for c in p.topology_spread
            ):
                return True
        return False

    seen: dict[tuple, bool] = {}  # type: ignore[type-arg]
    out = set()
    for q in snapshot.pods:
        if q.node is None or not rules:
            continue
        sig = (q.namespace, tuple(sorted(q.labels.items())))
        hit = seen.get(sig)
        if hit is None:
            hit = seen[sig] = counted(q)
        if hit:
            out.add(q.key)
    return out


def _merged(
    after: Plan,
    bindings: list[Binding],
    unplaced: list[Unplaced],
    first: list[Pod],
    first_placed: list[Pod],
    state: ClusterState,
    policy: PackingPolicy,
) -> Plan:
    """The rest's plan with the first pods' bindings ahead of its own (the order they are
    carried out in) and its totals counting them as placed by this plan."""
    s = after.summary
    value = sum(pod_value(p, policy) for p in first_placed)
    worth = sum(pod_value(p, policy) for p in first)
    capacity = usable_capacity(state)
    milli = sum(p.milli_total for p in first_placed)
    objective, bound = s.objective + value, s.bound + worth
    status = s.status
    if status in ("TRIVIAL", "OPTIMAL"):
        status = "OPTIMAL" if objective >= bound else "GREEDY"
    summary = s.model_copy(
        update={
            "status": status,
            "gpu_allocation_before": round(
                max(0.0, s.gpu_allocation_before - (milli / capacity if capacity else 0.0)), 6
            ),
            "objective": float(objective),
            "bound": float(bound),
            "gap": round((bound - objective) / bound, 6) if bound > 0 else 0.0,
            "placed_pods": s.placed_pods + len(bindings),
            "pending_pods": s.pending_pods + len(first),
        }
    )
    return after.model_copy(
        update={
            "bindings": bindings + list(after.bindings),
            "unplaced": unplaced + list(after.unplaced),
            "summary": summary,
        }
    )
