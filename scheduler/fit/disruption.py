"""PodDisruptionBudgets in a cycle: the running pods no plan may evict or move.

A plan disrupts several pods at once, and which of a budget's pods preemption, migration and
defragmentation reach is only known once the plan is made. So before the cycle, a budget that
allows k disruptions leaves k of its running pods open to them (preemptible ones first, then the
lowest priority and the smallest: those the planner reaches first) and holds the rest as not
preemptible: no plan can then disrupt more of its pods than it allows. A pod under two budgets is
open only if both leave it open.
"""

from __future__ import annotations

from scheduler.model import ClusterSnapshot


def held_by_budgets(snapshot: ClusterSnapshot) -> dict[str, str]:
    """Running pods this cycle may not disrupt, each with the budget (namespace/name) that
    holds it."""
    if not snapshot.disruption_budgets:
        return {}
    running = {p.key: p for p in snapshot.pods if p.node is not None}
    held: dict[str, str] = {}
    for budget in sorted(snapshot.disruption_budgets, key=lambda b: b.key):
        covered = sorted(
            (running[k] for k in set(budget.pods) if k in running),
            key=lambda p: (not p.preemptible, p.priority, p.milli_total, p.key),
        )
        for p in covered[budget.disruptions_allowed :]:
            held.setdefault(p.key, budget.key)
    return held


def hold_for_budgets(snapshot: ClusterSnapshot) -> ClusterSnapshot:
    """The snapshot with the pods its budgets hold marked not preemptible (nothing evicts or
    moves such a pod)."""
    held = held_by_budgets(snapshot)
    if not held:
        return snapshot
    pods = [
        p.model_copy(update={"preemptible": False}) if p.key in held and p.preemptible else p
        for p in snapshot.pods
    ]
    return snapshot.model_copy(update={"pods": pods})
