"""The schedulers a simulation can drive, behind one small interface.

Online baselines place one pod at a time, as the originals do, the moment work arrives or
capacity frees; wattpack runs a planning cycle over everything waiting. Both only propose: the
simulator's ledger records what runs and checks every limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from scheduler.baselines.online import PLACER_NAMES, NodeArrays, make_placer
from scheduler.errors import UserError
from scheduler.model import ClusterSnapshot, PackingPolicy, Plan, Pod
from scheduler.planner import plan as plan_cycle

SCHEDULERS = ("wattpack", *PLACER_NAMES)

Start = tuple[Pod, int, tuple[int, ...]]  # pod, node index, GPU indices


@dataclass
class OnlineRunner:
    """A baseline: all members of a job placed in turn, or none (Coscheduling's rule)."""

    name: str
    arrays: NodeArrays
    placer: object
    placed: dict[str, Start] = field(default_factory=dict)

    def place_job(self, pods: Sequence[Pod]) -> list[Start] | None:
        done: list[Start] = []
        for pod in sorted(pods, key=lambda p: -p.milli_total):
            where = self.placer.choose(self.arrays, pod)  # type: ignore[attr-defined]
            if where is None:
                for p, node, gpus in reversed(done):
                    self.arrays.remove(p, node, gpus)
                return None
            self.arrays.place(pod, *where)
            done.append((pod, *where))
        return done

    def release(self, pod: Pod, node: int, gpus: tuple[int, ...]) -> None:
        self.arrays.remove(pod, node, gpus)


@dataclass
class CycleRunner:
    """wattpack: one planning cycle over the running pods and the whole queue."""

    name: str
    policy: PackingPolicy
    clock: Callable[[], float] = time.perf_counter

    def plan(self, snapshot: ClusterSnapshot) -> Plan:
        return plan_cycle(snapshot, self.policy, clock=self.clock)


def make_runner(
    name: str, inventory: ClusterSnapshot, workload: Sequence[Pod], policy: PackingPolicy
) -> OnlineRunner | CycleRunner:
    if name == "wattpack":
        return CycleRunner(name, policy)
    if name not in PLACER_NAMES:
        raise UserError(f"unknown scheduler '{name}'", f"use one of: {', '.join(SCHEDULERS)}")
    empty = inventory.model_copy(update={"pods": []})
    return OnlineRunner(name, NodeArrays(empty, policy), make_placer(name, workload, policy))
