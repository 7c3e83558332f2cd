"""The simulator's target for the plan-execution contract: the ledger carries out each step
the way the API server would, and every step takes effect at once (the simulated cluster has no
grace periods). A surge replica runs beside its old copy in the ledger, so the ledger's checks
see both; a moved pod keeps its finish time (it checkpointed and resumes), and the move's
planned cost is reported. What an eviction or a binding means beyond the ledger (queueing the
victim again, the pod's finish event) is the caller's, through `evicted` and `bound`."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.execute import Execution, Step, plan_steps
from scheduler.model import ClusterSnapshot, Plan, Pod
from scheduler.simulate.ledger import Ledger, Running, SimulationBug

_REPLICA = "~surge"  # suffix of a surge replica's name while its old copy still runs


class LedgerTarget:
    def __init__(
        self,
        ledger: Ledger,
        now: float,
        pending: dict[str, Pod],
        evicted: Callable[[str], None],
        bound: Callable[[Pod, int, tuple[int, ...]], None],
        moved: Callable[[Pod, float], None],
        costs: dict[str, float],
    ) -> None:
        self.ledger, self.now, self.pending, self.costs = ledger, now, pending, costs
        self._evicted, self._bound, self._moved = evicted, bound, moved
        self.bound: set[str] = set()
        self._stopped: dict[str, Running] = {}

    def _node(self, step: Step) -> int:
        node = self.ledger.node_index.get(step.node)
        if node is None:
            raise SimulationBug(f"step #{step.id}: unknown node {step.node}")
        return node

    def evict(self, step: Step) -> bool:
        self._evicted(step.pod)
        return True

    def start(self, step: Step) -> bool:
        ledger = self.ledger
        if step.surge:
            r = ledger.running[step.pod]
            replica = r.pod.model_copy(update={"name": r.pod.name + _REPLICA})
            ledger.start(replica, self._node(step), step.gpus, self.now)
            return True
        r = self._stopped.pop(step.pod, None)
        if r is None:
            raise SimulationBug(f"step #{step.id}: {step.pod} starts before it stopped")
        ledger.start(r.pod, self._node(step), step.gpus, self.now)
        self._moved(r.pod, self.costs.get(step.pod, 0.0))
        return True

    def stop(self, step: Step) -> bool:
        ledger = self.ledger
        r = ledger.stop(step.pod)
        if not step.surge:
            self._stopped[step.pod] = r
            return True
        # The replica runs: it becomes the pod.
        replica = ledger.stop(step.pod + _REPLICA)
        ledger.start(r.pod, replica.node, replica.gpus, self.now)
        self._moved(r.pod, self.costs.get(step.pod, 0.0))
        return True

    def bind(self, steps: list[Step]) -> bool:
        for s in steps:
            self._bound(self.pending[s.pod], self._node(s), s.gpus)
            self.bound.add(s.pod)
        return True


def carry_out(plan: Plan, seen: ClusterSnapshot, target: LedgerTarget) -> None:
    """Every step of the plan, in the contract's order; a plan left part done is a bug."""
    run = Execution(plan_steps(plan, seen, target.ledger.policy))
    run.advance(target)
    if not run.complete:
        raise SimulationBug(f"{len(run.steps) - len(run.finished)} steps of a plan not done")
