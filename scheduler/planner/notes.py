"""One-line notes for a plan made under conditions it cannot fix: a domain already over its
budget, a budget below what its GPUs draw idle, a model with no solution."""

from __future__ import annotations

from scheduler.fit.state import ClusterState
from scheduler.power import idle_watts_by_domain


def power_notes(state: ClusterState) -> list[str]:
    idle = idle_watts_by_domain(state.snapshot)
    notes = []
    for d, budget in sorted(state.budget.items()):
        if idle.get(d, 0) > budget:
            notes.append(
                f"power domain {d}: budget {budget} W is below the {idle[d]} W its GPUs draw "
                "idle and can never be met; no new load there; raise the budget or remove nodes"
            )
        elif state.power[d] > budget:
            notes.append(
                f"power domain {d} draws {state.power[d]} W over its {budget} W budget before "
                "the plan: frozen (no new load there unless evictions free it); the rest of the "
                "cluster is planned as usual"
            )
    return notes
