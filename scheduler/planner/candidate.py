"""One of the plans a cycle compares: the best fit the baseline makes, the stranding-aware
greedy, the model's counts realised. The cycle returns the best of them, so the model can only
add to what greedy placement already achieves (a portfolio, not a fallback)."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.fit.cycle import Cycle
from scheduler.fit.state import Placement
from scheduler.fit.value import pending_values, pod_value
from scheduler.planner.evictions import Evicted


@dataclass
class Candidate:
    name: str  # best-fit | greedy | model
    status: str  # the plan status it earns if chosen: GREEDY, or the solver's
    cycle: Cycle  # its own cycle state, left as the candidate placed it
    placed: dict[str, Placement]
    evicted: Evicted

    @property
    def value(self) -> int:
        """plan_value of its placements and evictions, from the cycle's values by pod."""
        values, policy = pending_values(self.cycle), self.cycle.policy
        return sum(values[k][0] for k in self.placed if k in values) - sum(
            pod_value(v, policy) for v, _ in self.evicted.values()
        )

    @property
    def used_milli(self) -> int:
        """GPU milli it adds: the allocation it reaches, less what was there."""
        values = pending_values(self.cycle)
        return sum(values[k][1] for k in self.placed) - sum(
            v.milli_total for v, _ in self.evicted.values()
        )

    @property
    def evicted_nodes(self) -> set[int]:
        """The nodes it evicts from, by index: what it placed there is what the room was freed
        for, so later improvements leave those nodes alone."""
        index = self.cycle.state.node_index
        return {index[v.node] for v, _ in self.evicted.values() if v.node is not None}

    def rank(self) -> tuple[int, int, int, bool]:
        """Objective first, then allocation, then fewer evictions; on a tie, any plan that
        weighed stranding over best fit's (it leaves more of the cluster usable later)."""
        return (self.value, self.used_milli, -len(self.evicted), self.name != "best-fit")


def best_of(candidates: list[Candidate]) -> Candidate:
    """The best candidate; on a tie the earliest (max keeps the first). Each rank is worked out
    once: a value sums every pending pod, ten thousand of them at scale."""
    return max(candidates, key=Candidate.rank)
