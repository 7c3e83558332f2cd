"""The FGD protocol (Weng et al., USENIX ATC'23): workload inflation without departures.

A trace's jobs are submitted in a random order (a fresh shuffle each time the list runs out, the
copies renamed) until the arrived GPU requests reach `target` x the cluster's GPU capacity;
nothing leaves. At every demand level (a multiple of `step`) the allocation is recorded.

Baselines place each job as it arrives or drop it, as the paper's simulator does: with no
departures, capacity only shrinks, so a job that fits nowhere now never will. wattpack queues the
arrivals and plans one cycle per level over everything still waiting, as a batch scheduler with
a queue does; its cycles are the only points at which it places work. The protocol has no
evictions (nothing would ever take an evicted pod's place back: nothing leaves), so wattpack
plans it with preemption off, whatever priorities the trace carries (`without_evictions`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from scheduler.model import ClusterSnapshot, PackingPolicy, Pod
from scheduler.simulate.carry_out import LedgerTarget, carry_out
from scheduler.simulate.ledger import Ledger, SimulationBug
from scheduler.simulate.meter import percentiles
from scheduler.simulate.result import InflationCurve, RunTimings
from scheduler.simulate.runners import CycleRunner, OnlineRunner, make_runner
from scheduler.traces.workload import TraceJob

Progress = Callable[[int, int], None]  # (levels done, levels in all), over every seed


@dataclass(frozen=True)
class InflationSettings:
    seeds: tuple[int, ...] = tuple(range(10))
    target: float = 1.3  # stop once arrived requests reach this share of GPU capacity
    step: float = 0.05  # demand levels at which allocation is recorded

    def levels(self) -> list[float]:
        n = round(self.target / self.step)
        return [round(self.step * (i + 1), 6) for i in range(n)]


def without_evictions(policy: PackingPolicy) -> PackingPolicy:
    """The policy the FGD protocol plans with: nothing evicts (preemption, starving gangs, the
    release of broken gangs are off)."""
    return policy.model_copy(
        update={
            "preemption": False,
            "starving_gang_seconds": None,
            "broken_gang_release_seconds": None,
        }
    )


def _renamed(job: TraceJob, copy: int) -> TraceJob:
    if copy == 0:
        return job
    suffix = f"-c{copy}"
    pods = tuple(
        p.model_copy(
            update={
                "name": p.name + suffix,
                "gang": p.gang.model_copy(update={"name": p.gang.name + suffix})
                if p.gang
                else None,
            }
        )
        for p in job.pods
    )
    return TraceJob(job.name + suffix, job.submit, None, pods, job.source_line)


def arrivals(jobs: Sequence[TraceJob], seed: int) -> Iterator[TraceJob]:
    """Endless arrivals: shuffles of the job list, each copy renamed so that names stay unique."""
    rng = random.Random(seed)
    # CPU-only jobs arrive too: they take CPU on GPU nodes, a deliberate test in the trace.
    copy = 0
    while True:
        order = list(jobs)
        rng.shuffle(order)
        for job in order:
            yield _renamed(job, copy)
        copy += 1


def _one_seed(
    inventory: ClusterSnapshot,
    jobs: Sequence[TraceJob],
    scheduler: str,
    policy: PackingPolicy,
    settings: InflationSettings,
    seed: int,
    tick: Callable[[], None],
    clock: Callable[[], float],
    cycle_seconds: list[float],
    moves: list[float],
) -> tuple[list[float], list[float], float]:
    workload = [p for j in jobs for p in j.pods]
    runner = make_runner(scheduler, inventory, workload, policy)
    ledger = Ledger(inventory, policy)
    capacity = ledger.capacity_milli
    levels = settings.levels()
    milli: list[float] = []
    whole: list[float] = []
    queue: dict[str, Pod] = {}
    arrived = 0
    stream = arrivals(jobs, seed)
    if not capacity or not any(j.milli for j in jobs):
        return [0.0] * len(levels), [0.0] * len(levels), capacity / 1000

    for level in levels:
        while arrived < level * capacity:
            job = next(stream)
            arrived += job.milli
            if isinstance(runner, OnlineRunner):
                t0 = clock()
                starts = runner.place_job(job.pods)
                cycle_seconds.append(clock() - t0)
                for pod, node, gpus in starts or ():
                    ledger.start(pod, node, gpus, 0.0)
            else:
                queue.update((p.key, p) for p in job.pods)
        if isinstance(runner, CycleRunner) and queue:
            t0 = clock()
            seen = ledger.snapshot(list(queue.values()))
            plan = runner.plan(seen)
            if plan.evictions:
                raise SimulationBug("evictions in the FGD protocol: it plans without preemption")
            # Through the execution contract, as every plan is carried out: moves included.
            carry_out(
                plan,
                seen,
                LedgerTarget(
                    ledger,
                    0.0,
                    queue,
                    evicted=lambda key: None,
                    bound=lambda pod, node, gpus: ledger.start(queue.pop(pod.key), node, gpus, 0),
                    moved=lambda pod, cost: moves.append(cost),
                    costs={m.pod: m.cost for m in plan.moves},
                ),
            )
            cycle_seconds.append(clock() - t0)
        milli.append(ledger.allocation)
        whole.append(ledger.busy_share)
        tick()
    if ledger.violations:
        raise SimulationBug(f"{scheduler}: {ledger.violations} budget violations")
    return milli, whole, (capacity - ledger.allocated_milli) / 1000


def inflate(
    inventory: ClusterSnapshot,
    jobs: Sequence[TraceJob],
    scheduler: str,
    policy: PackingPolicy,
    settings: InflationSettings = InflationSettings(),
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> InflationCurve:
    t0 = clock()
    policy = without_evictions(policy)
    levels = settings.levels()
    done = 0
    total = len(levels) * len(settings.seeds)

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    cycle_seconds: list[float] = []
    moves: list[float] = []  # the cost of each move made, over every seed
    per_seed = [
        _one_seed(
            inventory, jobs, scheduler, policy, settings, s, tick, clock, cycle_seconds, moves
        )
        for s in settings.seeds
    ]
    return InflationCurve(
        scheduler=scheduler,
        seeds=list(settings.seeds),
        demand=levels,
        milli=[m for m, _, _ in per_seed],
        whole=[w for _, w, _ in per_seed],
        unallocated_gpus=[u for _, _, u in per_seed],
        moves=len(moves),
        move_gpu_seconds=round(sum(moves), 3),
        timings=RunTimings(cycle_seconds=percentiles(cycle_seconds), total_seconds=clock() - t0),
    )
