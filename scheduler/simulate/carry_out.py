"""The simulator's target for the plan-execution contract: the ledger carries out each step
the way the API server would, and every step takes effect at once (the simulated cluster has no
grace periods). A surge replica runs beside its old copy in the ledger, so the ledger's checks
see both; a moved pod keeps its finish time (it checkpointed and resumes), and the move's
planned cost is counted as lost GPU-seconds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.execute import Step
from scheduler.model import Pod
from scheduler.simulate.ledger import Running, SimulationBug

if TYPE_CHECKING:
    from scheduler.simulate.replay import _Replay

_REPLICA = "~surge"  # suffix of a surge replica's name while its old copy still runs


class LedgerTarget:
    def __init__(self, sim: _Replay, now: float, pending: dict[str, Pod], costs: dict[str, float]):
        self.sim, self.now, self.pending, self.costs = sim, now, pending, costs
        self.bound: set[str] = set()
        self._stopped: dict[str, Running] = {}

    def _node(self, step: Step) -> int:
        node = self.sim.ledger.node_index.get(step.node)
        if node is None:
            raise SimulationBug(f"step #{step.id}: unknown node {step.node}")
        return node

    def evict(self, step: Step) -> bool:
        self.sim.evict(step.pod, self.now)
        return True

    def start(self, step: Step) -> bool:
        ledger = self.sim.ledger
        if step.surge:
            r = ledger.running[step.pod]
            replica = r.pod.model_copy(update={"name": r.pod.name + _REPLICA})
            ledger.start(replica, self._node(step), step.gpus, self.now)
            return True
        r = self._stopped.pop(step.pod, None)
        if r is None:
            raise SimulationBug(f"step #{step.id}: {step.pod} starts before it stopped")
        ledger.start(r.pod, self._node(step), step.gpus, self.now)
        self.sim.moved(r.pod, self.costs.get(step.pod, 0.0))
        return True

    def stop(self, step: Step) -> bool:
        ledger = self.sim.ledger
        r = ledger.stop(step.pod)
        if not step.surge:
            self._stopped[step.pod] = r
            return True
        # The replica runs: it becomes the pod.
        replica = ledger.stop(step.pod + _REPLICA)
        ledger.start(r.pod, replica.node, replica.gpus, self.now)
        self.sim.moved(r.pod, self.costs.get(step.pod, 0.0))
        return True

    def bind(self, steps: list[Step]) -> bool:
        for s in steps:
            self.sim.start(self.pending[s.pod], self._node(s), s.gpus, self.now)
            self.bound.add(s.pod)
        return True
