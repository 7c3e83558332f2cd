"""Turn the placements a cycle decided into a Plan: bindings, evictions, reasons and totals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scheduler.fit.greedy import place_in_turn, units_of
from scheduler.fit.reasons import Explainer
from scheduler.fit.state import UNUSABLE, ClusterState, Placement
from scheduler.fit.statement import Statement
from scheduler.fit.value import plan_value
from scheduler.model import Binding, Eviction, Move, Plan, PlanSummary, Pod


def usable_capacity(state: ClusterState) -> int:
    """milli-GPU of the GPUs that can take work: usable, on schedulable nodes."""
    return 1000 * sum(
        1
        for node, res in enumerate(state.res)
        if state.class_of[node] >= 0
        for r in res
        if r != UNUSABLE
    )


def gpu_allocation(used_milli: int, capacity_milli: int) -> float:
    """Every placed pod's GPUs and shares over the capacity that can take work (snapshot doc)."""
    return used_milli / capacity_milli if capacity_milli else 0.0


def _gang_shortfalls(
    state: ClusterState, pending: list[Pod], placed: Mapping[str, Placement]
) -> dict[str, tuple[str, int]]:
    """For each gang left pending, how many of its members fit together on what is left now."""
    notes = {}
    for unit in units_of(p for p in pending if p.gang_key and p.key not in placed):
        trial = Statement(state)
        done = place_in_turn(trial, unit)
        trial.discard()
        if len(done) < len(unit):
            key = unit[0].gang_key
            text = f"gang {key}: only {len(done)} of {len(unit)} members fit at once"
            notes[key] = (text, len(unit) - len(done))
    return notes


def assemble(
    state: ClusterState,
    pending: list[Pod],
    placed: Mapping[str, Placement],
    evicted: Mapping[str, tuple[Pod, str]],
    *,
    status: str,
    bound: float,
    seconds: float,
    gang_notes: Mapping[str, str],
    notes: Sequence[str] = (),
    objective: int | None = None,
    moves: Sequence[Move] = (),
    reasons: Mapping[str, str] | None = None,
) -> Plan:
    """The plan: bindings, evictions, every pod left with its reason, the summary. `objective`,
    if the caller has it, is plan_value of these placements (summed again otherwise)."""
    policy = state.policy
    # Built from checked data: construct skips re-validating tens of thousands of bindings.
    bindings = [
        Binding.model_construct(
            pod=p.key, node=state.nodes[placed[p.key][0]].name, gpu_indices=list(placed[p.key][1])
        )
        for p in pending
        if p.key in placed
    ]
    evictions = [
        Eviction(pod=victim.key, node=victim.node or "", reason=reason)
        for victim, reason in evicted.values()
    ]
    explainer = Explainer(state)
    short_gangs = _gang_shortfalls(state, pending, placed)
    unplaced = [
        explainer.explain(p, *short_gangs[p.gang_key])
        if p.gang_key in short_gangs
        else explainer.explain(p, gang_notes.get(p.gang_key or ""))
        for p in pending
        if p.key not in placed
    ]
    if reasons:
        # What the planner knows better than the final state shows (a pod that would fit
        # after moves the budget did not allow).
        unplaced = [
            u.model_copy(update={"reason": reasons[u.pod]}) if u.pod in reasons else u
            for u in unplaced
        ]
    if objective is None:
        objective = plan_value(pending, placed, (v for v, _ in evicted.values()), policy)
    bound = max(bound, float(objective))
    running = sum(p.milli_total for p in state.snapshot.pods if p.node is not None)
    used = (
        running
        + sum(p.milli_total for p in pending if p.key in placed)
        - sum(v.milli_total for v, _ in evicted.values())
    )
    summary = PlanSummary(
        status=status,
        solve_seconds=round(seconds, 4),
        gpu_allocation_before=round(gpu_allocation(running, usable_capacity(state)), 6),
        gpu_allocation=round(gpu_allocation(used, usable_capacity(state)), 6),
        objective=float(objective),
        bound=float(bound),
        gap=round((bound - objective) / bound, 6) if bound > 0 else 0.0,
        power_watts=dict(sorted(state.power.items())),
        power_budget_watts=dict(sorted(state.budget.items())),
        placed_pods=len(bindings),
        pending_pods=len(pending),
        degraded=bool(notes),
        notes=list(notes),
    )
    return Plan(
        bindings=bindings,
        evictions=evictions,
        moves=list(moves),
        unplaced=unplaced,
        summary=summary,
    )
