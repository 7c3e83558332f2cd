"""One-line notes for a plan made under conditions it cannot fix: a domain already over its
budget, a budget below what its GPUs draw idle, a node whose running pods already ask for more
CPU or memory than it has, a model with no solution."""

from __future__ import annotations

from collections import Counter

from scheduler.fit.state import ClusterState
from scheduler.model import ClusterSnapshot
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


def overcommit_notes(snapshot: ClusterSnapshot) -> list[str]:
    """Nodes whose running pods already ask for more CPU or memory than they have (an
    allocatable lowered under them, or pods bound by hand): the plan adds nothing there, and
    the checker does not blame it for what it found."""
    used: Counter[tuple[str, str]] = Counter()
    for p in snapshot.pods:
        if p.node is not None:
            used[(p.node, "cpuMilli")] += p.cpu_milli
            used[(p.node, "memoryMiB")] += p.memory_mi_b
    notes = []
    for n in snapshot.nodes:
        for field, have in (("cpuMilli", n.cpu_milli), ("memoryMiB", n.memory_mi_b)):
            if used[(n.name, field)] > have:
                notes.append(
                    f"node {n.name}: its running pods already ask for {field} "
                    f"{used[(n.name, field)]} of the {have} it has, before the plan: nothing new "
                    "goes there until they leave; fix the node's allocatable or the pods' requests"
                )
    return notes
