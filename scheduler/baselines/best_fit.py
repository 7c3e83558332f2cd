"""Best-fit: each pod, in priority-then-size order, goes to the fullest node it fits on.

No preemption, no look-ahead: what Slurm-style and MostAllocated-style schedulers do. Power is
respected the way a user would have to: a node whose domains lack headroom is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from scheduler.fit.cycle import start_cycle
from scheduler.fit.greedy import greedy_fill, units_of
from scheduler.fit.outcome import assemble
from scheduler.fit.state import Placement
from scheduler.fit.value import pod_value
from scheduler.model import ClusterSnapshot, PackingPolicy, Plan


def best_fit(
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    clock: Callable[[], float] = time.perf_counter,
) -> Plan:
    start = clock()
    cycle = start_cycle(snapshot, policy)
    cycle.state.weigh_stranding = False
    placed: dict[str, Placement] = {}
    greedy_fill(cycle.state, units_of(cycle.pending), placed)
    # A heuristic proves nothing: its bound is the value of every pending pod.
    trivial_bound = float(sum(pod_value(p, policy) for p in cycle.pending))
    return assemble(
        cycle.state,
        cycle.pending,
        placed,
        {},
        status="GREEDY",
        bound=trivial_bound,
        seconds=clock() - start,
        gang_notes={},
    )
