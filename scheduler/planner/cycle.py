"""One scheduling cycle: classify, solve the aggregated model, expand.

Small clusters are modelled node by node and exactly, seeded with a greedy plan that is also the
floor; large ones are modelled in groups of interchangeable nodes. A greedy plan is the fallback
whenever the solver has no solution in time, so a plan always comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from scheduler.fit.cycle import Cycle, start_cycle
from scheduler.fit.greedy import arrival_order, greedy_fill, units_of
from scheduler.fit.outcome import assemble
from scheduler.fit.state import Placement
from scheduler.fit.value import plan_value, pod_value
from scheduler.model import ClusterSnapshot, PackingPolicy, Plan, Pod
from scheduler.solver import AggregateModel, classify, expand, group_classes

log = structlog.get_logger(__name__)

# Up to this many nodes every node is its own class, which the model solves GPU by GPU, exactly.
EXACT_NODES = 24


def _gang_notes(pending: list[Pod]) -> dict[str, str]:
    return {
        p.gang_key: f"gang {p.gang_key} ({p.gang.size} members, all or none)"
        for p in pending
        if p.gang_key and p.gang
    }


def _greedy(snapshot: ClusterSnapshot, policy: PackingPolicy, exact: bool):
    cycle = start_cycle(snapshot, policy, singleton_classes=exact)
    placed: dict[str, Placement] = {}
    greedy_fill(cycle.state, units_of(cycle.pending), placed)
    return cycle, placed, plan_value(cycle.pending, placed, (), policy)


def _might_all_fit(cycle: Cycle) -> bool:
    """Whether the pending pods ask for no more GPU capacity than is free: else best fit cannot
    place them all, and trying would only cost time."""
    need = sum(p.milli_total for p in cycle.pending)
    free = sum(cycle.state.free_milli(node) for node in range(len(cycle.state.res)))
    return need <= free


def plan(
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    clock: Callable[[], float] = time.perf_counter,
    model_sink: Callable[[str], None] | None = None,
) -> Plan:
    """One cycle. model_sink, if given, receives the CP-SAT model as text (for debugging)."""
    start = clock()
    exact = len(snapshot.nodes) <= EXACT_NODES
    cycle = start_cycle(snapshot, policy, singleton_classes=exact)
    notes = _gang_notes(cycle.pending)
    trivial = float(sum(pod_value(p, policy) for p in cycle.pending))

    def finish(c: Cycle, placed, evicted, status: str, bound: float) -> Plan:
        return assemble(
            c.state,
            c.pending,
            placed,
            evicted,
            status=status,
            bound=bound,
            seconds=clock() - start,
            gang_notes=notes,
        )

    if not cycle.pending:
        return finish(cycle, {}, {}, "TRIVIAL", 0.0)
    floor = 0.0
    if not exact and _might_all_fit(cycle):
        # Most cycles of a live cluster place a few arrivals on room to spare. When best fit
        # places every pending pod, no plan can do more: skip the model. Else best fit's value
        # is the floor the model's plan must beat.
        placed: dict[str, Placement] = {}
        if not greedy_fill(cycle.state, units_of(cycle.pending), placed, arrival_order):
            return finish(cycle, placed, {}, "OPTIMAL", trivial)
        floor = plan_value(cycle.pending, placed, (), policy)
        by_key = {p.key: p for p in cycle.pending}
        for key, (node, gpus) in placed.items():
            cycle.state.remove(by_key[key], node, gpus)
    groups, group_of_class = group_classes(cycle.state, exact)
    demand = classify(cycle.pending, cycle.state, max((g.n for g in groups), default=1))
    model = AggregateModel(cycle, demand, groups, group_of_class)
    if model_sink is not None:
        model_sink(model.text())
    greedy = _greedy(snapshot, policy, exact) if exact else None
    if greedy is not None:
        model.hint(greedy[1], greedy[0].state.class_of)
    settings = policy.solver
    built = clock() - start
    counts = model.solve(
        settings.time_limit_seconds,
        settings.workers,
        settings.seed,
        settings.relative_gap,
        settings.deterministic,
    )
    log.info(
        "solved",
        status=counts.status,
        pod_classes=len(demand.classes),
        node_groups=len(groups),
        variables=len(model.x),
        build_seconds=round(built, 3),
        seconds=round(clock() - start, 3),
    )
    if counts.status not in ("OPTIMAL", "FEASIBLE", "LP_ROUNDED"):
        greedy = greedy or _greedy(snapshot, policy, exact)
        return finish(greedy[0], greedy[1], {}, "GREEDY", trivial)
    # No plan can beat placing every pending pod: a bound the solver may not have proved yet.
    counts.bound = min(counts.bound, trivial)
    placed, evicted = expand(cycle, demand, counts, groups, group_of_class)
    value = plan_value(cycle.pending, placed, (v for v, _ in evicted.values()), policy)
    log.info("expanded", value=value, bound=counts.bound, seconds=round(clock() - start, 3))
    if greedy is None and floor > value:
        greedy = _greedy(snapshot, policy, exact)
    if greedy is not None and greedy[2] > value:
        return finish(greedy[0], greedy[1], {}, "GREEDY", counts.bound)
    # OPTIMAL only when the realised plan meets the proven bound; else say whose counts these are.
    status = (
        "OPTIMAL"
        if value >= counts.bound
        else ("LP_ROUNDED" if counts.status == "LP_ROUNDED" else "FEASIBLE")
    )
    return finish(cycle, placed, evicted, status, counts.bound)
