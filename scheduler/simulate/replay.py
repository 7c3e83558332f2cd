"""Event-driven replay of a trace: jobs arrive at their submit time, run, and leave.

Baselines act at every event, one pod at a time; wattpack plans a cycle on arrivals and whenever
capacity frees, at most once every `cycle_seconds` of simulated time (a debounce, as the operator
does). The ledger checks every limit at every start; the meter integrates the figures.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.baselines.online import NodeArrays
from scheduler.errors import UserError
from scheduler.fit.classes import fit_shape
from scheduler.model import ClusterSnapshot, PackingPolicy, Pod, PodKind
from scheduler.model.policy import KindPowerFactors
from scheduler.simulate.carry_out import LedgerTarget, carry_out
from scheduler.simulate.failures import GpuAlarm, GpuFailure
from scheduler.simulate.ledger import Ledger, PowerBound, Running, SimulationBug
from scheduler.simulate.meter import Meter, percentiles
from scheduler.simulate.result import RunResult, RunTimings
from scheduler.simulate.runners import CycleRunner, OnlineRunner, make_runner
from scheduler.simulate.snapshot_at import SnapshotSink, snapshot_at, snapshot_name
from scheduler.traces.workload import TraceJob

Progress = Callable[[int, int], None]  # (jobs arrived, jobs in all)

_FINISH, _FAIL, _ARRIVE, _CYCLE, _ALARM, _KILL = 0, 1, 2, 3, 4, 5
MIGRATION_MODES = ("none", "reactive", "proactive")


@dataclass(frozen=True)
class ReplaySettings:
    cycle_seconds: float = 10.0  # wattpack's debounce between cycles, simulated seconds
    arrival_scale: float = 1.0  # submit times are divided by this: > 1 packs arrivals closer
    # Stop at this simulated time (after scaling). None = the last arrival: the drain after it
    # says little about a scheduler, and a trace's longest jobs would dwarf the rest.
    horizon: float | None = None
    failures: tuple[GpuFailure, ...] = ()  # GPUs that fail, at simulated times
    # An evicted pod checkpoints as it leaves and later runs only what it had left (the
    # checkpoint handshake); False: it restarts from the beginning and its work is lost.
    resume_evicted: bool = False
    # Simulated times (after scaling) at which the state is sent to `on_snapshot` as a
    # ClusterSnapshot, after every event at that time; times past the end are not taken.
    snapshot_at: tuple[float, ...] = ()
    on_snapshot: SnapshotSink | None = None
    # GPUs that turn degraded (failures.alarms_for): seen by the schedulers in proactive mode.
    alarms: tuple[GpuAlarm, ...] = ()
    # What a failure does: none: nobody notices until the job hangs past hang_seconds, then it
    # goes back to the queue; reactive: it goes back at once; proactive: as reactive, and
    # alarms turn GPUs degraded, so a migrating scheduler moves work off first.
    migration: str = "reactive"
    # Jobs checkpoint this often: a killed pod loses only the work since its last checkpoint,
    # and resumes from it. None: it restarts from the beginning.
    checkpoint_seconds: float | None = None
    hang_seconds: float = 1800.0  # none: until the job's collective times out (NCCL watchdog)
    # What GPUs of each kind really draw (the ledger's power, the budgets' truth); None: what
    # the policy says. Tuning sets it: a trial's power factors are the planner's belief, and
    # one that believes in less than the GPUs draw must show as budgets broken, not as room.
    physics: KindPowerFactors | None = None


@dataclass
class _Queued:
    job: TraceJob
    pods: tuple[Pod, ...]
    order: int
    since: float  # when it was queued (arrival, or eviction or GPU failure): its wait starts

    def key(self) -> tuple:
        return (-max(p.priority for p in self.pods), self.job.submit, self.order)

    def shape(self) -> tuple:
        return tuple(sorted((fit_shape(p) for p in self.pods), key=repr))  # None beside str


class _Replay:
    def __init__(
        self,
        inventory: ClusterSnapshot,
        jobs: Sequence[TraceJob],
        scheduler: str,
        policy: PackingPolicy,
        settings: ReplaySettings,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.scheduler = scheduler
        self.snapshot_times = sorted(settings.snapshot_at) if settings.on_snapshot else []
        scale = settings.arrival_scale
        self.jobs = sorted(
            (TraceJob(j.name, j.submit / scale, j.duration, j.pods, j.source_line) for j in jobs),
            key=lambda j: (j.submit, j.source_line),
        )
        workload = [p for j in self.jobs for p in j.pods]
        self.runner = make_runner(scheduler, inventory, workload, policy)
        truth = policy
        if settings.physics is not None:
            truth = policy.model_copy(update={"power_factors": settings.physics})
        self.ledger = Ledger(inventory, truth)
        self.bound = PowerBound(inventory, truth, self.ledger.usable)
        start = self.jobs[0].submit if self.jobs else 0.0
        self.meter = Meter(self.ledger, start)
        self.events: list[tuple] = []
        self.seq = itertools.count()
        self.queue: dict[int, _Queued] = {}
        self.waiting = 0  # pods in the queue
        # Queued jobs the scheduler has tried and could not place: "work waiting" in the
        # metrics. Arrivals not yet looked at (wattpack between cycles) do not count.
        self.tried: set[int] = set()
        self.blocked = 0  # pods in tried jobs
        self.order = itertools.count()
        self.job_of: dict[str, TraceJob] = {}
        self.generation: Counter[str] = Counter()
        self.first_start: set[str] = set()
        self.given: dict[str, float] = {}  # pod -> the run time its latest start was given
        self.left: dict[str, float] = {}  # evicted pods that resume: run time still to go
        self.demand: Counter[PodKind] = Counter()
        self.job_sizes: Counter[int] = Counter()  # present jobs (queued or running) by milli
        self.pods_left: Counter[str] = Counter()  # per present job, pods not yet finished
        self.cycle_at: float | None = None
        self.last_cycle = -float("inf")
        self.cycle_seconds: list[float] = []
        self.finished = self.evictions = self.unplaceable = 0
        self.failed_gpus = self.killed = self.moves = self.alarms = 0
        self.hung_since: dict[str, float] = {}  # pods on a failed GPU nobody noticed yet
        self.alarmed_work = False  # work sits on a GPU that turned degraded since the last cycle
        self.move_times: deque[float] = deque()  # when each move was made: moves.perHour
        if settings.migration not in MIGRATION_MODES:
            raise UserError(
                f"migration mode {settings.migration!r} is unknown",
                f"give one of {', '.join(MIGRATION_MODES)}",
            )
        self.lost_gpu_seconds = 0.0
        # A pod that fits on no node of the empty cluster is not waiting work: it never runs.
        empty = NodeArrays(inventory.model_copy(update={"pods": []}), policy)
        self.fits_empty = lambda pod: bool(empty.feasible(pod).any())

    # -- events ----------------------------------------------------------------------------
    def push(self, t: float, kind: int, payload: object) -> None:
        heapq.heappush(self.events, (t, kind, next(self.seq), payload))

    def enqueue(self, job: TraceJob, pods: tuple[Pod, ...], now: float) -> int:
        n = next(self.order)
        self.queue[n] = _Queued(job, pods, n, now)
        self.waiting += len(pods)
        return n

    def dequeue(self, q: _Queued) -> None:
        del self.queue[q.order]
        self.waiting -= len(q.pods)
        if q.order in self.tried:
            self.tried.discard(q.order)
            self.blocked -= len(q.pods)

    def mark_tried(self) -> None:
        for n, q in self.queue.items():
            if n not in self.tried:
                self.tried.add(n)
                self.blocked += len(q.pods)

    def start(self, pod: Pod, node: int, gpus: tuple[int, ...], now: float) -> None:
        self.ledger.start(pod, node, gpus, now)
        job = self.job_of[pod.key]
        if pod.key not in self.first_start:
            self.first_start.add(pod.key)
            self.meter.started(pod.kind, now - job.submit)
        duration = self.left.pop(pod.key, job.duration)
        if duration is not None:
            self.given[pod.key] = duration
            self.push(now + duration, _FINISH, (pod.key, self.generation[pod.key]))

    def finish(self, key: str) -> None:
        r = self.ledger.stop(key)
        self.demand[r.pod.kind] -= r.pod.milli_total
        job = self.job_of[key]
        self.pods_left[job.name] -= 1
        if not self.pods_left[job.name]:
            self.job_sizes[job.milli] -= 1
        self.finished += 1
        if isinstance(self.runner, OnlineRunner):
            self.runner.release(r.pod, r.node, r.gpus)

    def take_back(self, key: str) -> tuple[Running, Pod]:
        """Stop a pod before its time (evicted, or its GPU failed): its finish event goes stale,
        and the pending pod to queue again is returned with it."""
        r = self.ledger.stop(key)
        self.generation[key] += 1
        if isinstance(self.runner, OnlineRunner):
            self.runner.release(r.pod, r.node, r.gpus)
        return r, r.pod.model_copy(update={"node": None, "gpu_indices": []})

    def evict(self, key: str, now: float) -> None:
        """Preempted: the pod goes back to the queue, and its work so far is lost unless
        evicted pods resume (resume_evicted)."""
        r, again = self.take_back(key)
        self.evictions += 1
        duration = self.given.get(key)
        if self.settings.resume_evicted and duration is not None:
            self.left[key] = max(0.0, duration - (now - r.started))
        else:
            self.lost_gpu_seconds += (now - r.started) * r.pod.milli_total / 1000
        self.enqueue(self.job_of[key], (again,), now)

    def moved(self, pod: Pod, cost: float, now: float) -> None:
        """A running pod moved: it keeps its finish time; the move's cost is lost work. One that
        hung on a GPU that failed unnoticed starts its run over where it moved to."""
        self.moves += 1
        self.move_times.append(now)
        self.lost_gpu_seconds += cost
        if self.hung_since.pop(pod.key, None) is not None:
            self.generation[pod.key] += 1
            duration = self.given.get(pod.key)
            if duration is not None:
                self.push(now + duration, _FINISH, (pod.key, self.generation[pod.key]))

    def _usable_gpu(self, node_name: str, gpu: int) -> int | None:
        """The node's index, if it has this GPU and the GPU has not failed."""
        node = self.ledger.node_index.get(node_name)
        if node is None or gpu >= self.ledger.nodes[node].gpus or not self.ledger.usable[node][gpu]:
            return None
        return node

    def alarm(self, node_name: str, gpu: int) -> bool:
        """A GPU turns degraded (proactive mode): whether a cycle should look."""
        node = self._usable_gpu(node_name, gpu)
        if node is None:
            return False
        self.alarms += 1
        self.ledger.degrade_gpu(node, gpu)
        return bool(self.ledger.on_gpu(node, gpu))

    def fail(self, node_name: str, gpu: int, now: float) -> bool:
        """A GPU fails: the jobs on it are killed (a gang whole) and queued again, from their
        last checkpoint where jobs checkpoint. Without migration nobody notices at once: the
        jobs hang, holding their GPUs, for hang_seconds first. Returns whether work was
        killed now."""
        node = self._usable_gpu(node_name, gpu)
        if node is None:
            return False
        self.failed_gpus += 1
        on_it = self.ledger.on_gpu(node, gpu)
        if self.settings.migration == "none" and on_it:
            for key in on_it:
                for p in self.job_of[key].pods:
                    if p.key in self.ledger.running:
                        self.generation[p.key] += 1  # no progress while it hangs
                        self.hung_since.setdefault(p.key, now)
            self.push(now + self.settings.hang_seconds, _KILL, (node, gpu))
            return False
        return self.kill(node, gpu, now)

    def kill(self, node: int, gpu: int, now: float) -> bool:
        on_it = self.ledger.on_gpu(node, gpu)
        for job in {self.job_of[k].name: self.job_of[k] for k in on_it}.values():
            again = []
            for p in job.pods:
                if p.key not in self.ledger.running:
                    continue
                # Work after the failure was no work (the job hung); work up to the last
                # checkpoint before it is kept.
                failed_at = self.hung_since.pop(p.key, now)
                r, pending = self.take_back(p.key)
                self.killed += 1
                kept = 0.0
                every = self.settings.checkpoint_seconds
                duration = self.given.get(p.key)
                if every and duration is not None:
                    kept = (max(0.0, failed_at - r.started) // every) * every
                    self.left[p.key] = max(0.0, duration - kept)
                self.lost_gpu_seconds += (now - r.started - kept) * p.milli_total / 1000
                again.append(pending)
            self.enqueue(job, tuple(again), now)
        self.ledger.fail_gpu(node, gpu)
        self.bound.lose_gpu(self.ledger.chain[node])
        if isinstance(self.runner, OnlineRunner):
            self.runner.arrays.fail_gpu(node, gpu)
        return bool(on_it)

    # -- scheduling ------------------------------------------------------------------------
    def online_pass(self, now: float, new: list[int], freed: bool) -> None:
        runner = self.runner
        assert isinstance(runner, OnlineRunner)
        ids = list(self.queue) if freed else [n for n in new if n in self.queue]
        if not ids:
            return
        t0 = self.clock()
        todo = [(q, q.shape()) for q in sorted((self.queue[n] for n in ids), key=_Queued.key)]
        shapes = {shape for _, shape in todo}
        failed: set[tuple] = set()
        # Capacity only shrinks during a pass: a shape that failed fails again, so it is skipped.
        for q, shape in todo:
            if shape in failed:
                continue
            starts = runner.place_job(q.pods)
            if starts is None:
                failed.add(shape)
                if len(failed) == len(shapes):
                    break
                continue
            for pod, node, gpus in starts:
                self.start(pod, node, gpus, now)
            self.dequeue(q)
        self.mark_tried()
        self.cycle_seconds.append(self.clock() - t0)

    def cycle(self, now: float) -> None:
        runner = self.runner
        assert isinstance(runner, CycleRunner)
        t0 = self.clock()
        todo = sorted(self.queue.values(), key=_Queued.key)
        pending = {p.key: p for q in todo for p in q.pods}
        # The operator reads a pod's wait from its creation time; here it is the queue time.
        # Only starvingGangSeconds reads it, and only for gangs.
        starves = runner.policy.starving_gang_seconds is not None
        waits = [
            p.model_copy(update={"waiting_seconds": now - q.since}) if starves and p.gang else p
            for q in todo
            for p in q.pods
        ]
        seen = self.ledger.snapshot(waits)
        if runner.policy.moves.per_hour is not None:
            while self.move_times and self.move_times[0] <= now - 3600:
                self.move_times.popleft()
            meta = seen.metadata.model_copy(update={"moves_last_hour": len(self.move_times)})
            seen = seen.model_copy(update={"metadata": meta})
        plan = runner.plan(seen)
        # The same steps, in the same phases, as the operator carries out (scheduler.execute).
        target = LedgerTarget(
            self.ledger,
            now,
            pending,
            evicted=lambda key: self.evict(key, now),
            bound=lambda pod, node, gpus: self.start(pod, node, gpus, now),
            moved=lambda pod, cost: self.moved(pod, cost, now),
            costs={m.pod: m.cost for m in plan.moves},
        )
        carry_out(plan, seen, target)
        bound = target.bound
        for q in todo:
            done = sum(p.key in bound for p in q.pods)
            if done == len(q.pods):
                self.dequeue(q)
            elif done:
                raise SimulationBug(f"job {q.job.name}: {done} of {len(q.pods)} pods bound")
        self.mark_tried()
        self.last_cycle = now
        self.cycle_seconds.append(self.clock() - t0)
        self._wake_when_starving(now)

    def _wake_when_starving(self, now: float) -> None:
        """A cycle when the next waiting gang starts to starve, as the operator's timer would
        run one: nothing else may happen then."""
        after = self.runner.policy.starving_gang_seconds  # type: ignore[union-attr]
        if after is None:
            return
        due = [q.since + after for q in self.queue.values() if q.pods[0].gang]
        due = [t for t in due if t > now]
        if due:
            self.push(min(due), _CYCLE, None)

    def snapshots_until(self, now: float, inclusive: bool = False) -> None:
        """Send the snapshots due before `now` (or at it, when inclusive)."""
        times, sink = self.snapshot_times, self.settings.on_snapshot
        while sink is not None and times and (times[0] < now or (inclusive and times[0] == now)):
            at = times.pop(0)
            queued = [(q.pods, q.since) for q in sorted(self.queue.values(), key=_Queued.key)]
            name = snapshot_name(self.ledger.inventory.metadata.name, self.scheduler, at)
            sink(self.scheduler, at, snapshot_at(self.ledger, queued, at, name))

    # -- the loop --------------------------------------------------------------------------
    def run(self, progress: Progress | None) -> None:
        for job in self.jobs:
            self.push(job.submit, _ARRIVE, job)
        for f in self.settings.failures:
            self.push(f.time, _FAIL, f)
        if self.settings.migration == "proactive":
            for a in self.settings.alarms:
                self.push(a.time, _ALARM, a)
        arrived = 0
        horizon = self.settings.horizon
        if horizon is None and self.jobs:
            horizon = self.jobs[-1].submit
        while self.events:
            now = self.events[0][0]
            if horizon is not None and now > horizon:
                break
            self.snapshots_until(now)
            self.meter.advance(now)
            new: list[int] = []
            freed = cycle_due = alarmed = False
            while self.events and self.events[0][0] == now:
                _, kind, _, payload = heapq.heappop(self.events)
                if kind == _FINISH:
                    key, gen = payload  # type: ignore[misc]
                    if key in self.ledger.running and gen == self.generation[key]:
                        self.finish(key)
                        freed = True
                elif kind == _FAIL:
                    f: GpuFailure = payload  # type: ignore[assignment]
                    freed = self.fail(f.node, f.gpu, now) or freed
                elif kind == _KILL:
                    node, gpu = payload  # type: ignore[misc]
                    freed = self.kill(node, gpu, now) or freed
                elif kind == _ALARM:
                    a: GpuAlarm = payload  # type: ignore[assignment]
                    alarmed = self.alarm(a.node, a.gpu) or alarmed
                elif kind == _ARRIVE:
                    job: TraceJob = payload  # type: ignore[assignment]
                    arrived += 1
                    if not all(self.fits_empty(p) for p in job.pods):
                        self.unplaceable += len(job.pods)
                        continue
                    self.job_sizes[job.milli] += 1
                    self.pods_left[job.name] = len(job.pods)
                    for p in job.pods:
                        self.job_of[p.key] = job
                        self.demand[p.kind] += p.milli_total
                    new.append(self.enqueue(job, job.pods, now))
                else:
                    cycle_due = True
            if isinstance(self.runner, OnlineRunner):
                if new or freed:
                    self.online_pass(now, new, freed)
            else:
                # Work on a GPU that turned degraded may move: a cycle looks, queue or not.
                if cycle_due:
                    self.cycle_at = None
                    if self.queue or self.alarmed_work:
                        self.alarmed_work = False
                        self.cycle(now)
                self.alarmed_work = self.alarmed_work or alarmed
                if (
                    (self.queue or self.alarmed_work)
                    and (new or freed or alarmed)
                    and self.cycle_at is None
                ):
                    self.cycle_at = max(now, self.last_cycle + self.settings.cycle_seconds)
                    if self.cycle_at == now:
                        self.cycle_at = None
                        self.alarmed_work = False
                        self.cycle(now)
                    else:
                        self.push(self.cycle_at, _CYCLE, None)
            bound = self.bound.milli(self.demand, self.job_sizes)
            self.meter.sample(now, self.waiting, self.blocked, bound)
            if progress is not None and new:
                progress(arrived, len(self.jobs))
        if horizon is not None:
            self.meter.advance(horizon)
        self.snapshots_until(horizon if horizon is not None else float("inf"), inclusive=True)

    def result(self, name: str, seconds: float) -> RunResult:
        m, lg = self.meter, self.ledger
        never: Counter[PodKind] = Counter(p.kind for q in self.queue.values() for p in q.pods)
        unstarted: dict[PodKind, list[float]] = {}
        for q in self.queue.values():
            for p in q.pods:
                if p.key not in self.first_start:
                    unstarted.setdefault(p.kind, []).append(m.last - q.job.submit)
        waiting = m.wait_s
        alloc_wait = m.share(m.alloc_wait_s, waiting)
        bound_wait = m.share(m.bound_wait_s, waiting)
        return RunResult(
            scheduler=name,
            jobs=len(self.jobs),
            pods=sum(len(j.pods) for j in self.jobs),
            unplaceable=self.unplaceable,
            gpu_failures=self.failed_gpus,
            pods_killed=self.killed,
            gpu_seconds_lost=self.lost_gpu_seconds,
            started=len(self.first_start),
            finished=self.finished,
            evictions=self.evictions,
            moves=self.moves,
            gpu_alarms=self.alarms,
            cycles=len(self.cycle_seconds),
            span_seconds=m.span,
            allocation=m.share(m.alloc_s, m.span),
            busy_gpus=m.share(m.busy_s, m.span),
            waiting_seconds=waiting,
            allocation_while_waiting=alloc_wait,
            share_at_90_while_waiting=m.share(m.at90_s, waiting),
            bound_while_waiting=bound_wait,
            of_bound_while_waiting=alloc_wait / bound_wait if bound_wait > 0 else 1.0,
            unallocated_gpus_while_waiting=m.share(m.unalloc_wait_s, waiting),
            idle_gpus_while_waiting=m.share(m.idle_wait_s, waiting),
            budget_violations=lg.violations,
            power=m.power(),
            waits=m.kind_waits(dict(never), unstarted),
            timeline=m.timeline(),
            timings=RunTimings(
                cycle_seconds=percentiles(self.cycle_seconds), total_seconds=seconds
            ),
        )


def replay(
    inventory: ClusterSnapshot,
    jobs: Sequence[TraceJob],
    scheduler: str,
    policy: PackingPolicy,
    settings: ReplaySettings = ReplaySettings(),
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> RunResult:
    """Replay the jobs on the inventory (its pods are ignored) with one scheduler."""
    t0 = clock()
    sim = _Replay(inventory, jobs, scheduler, policy, settings, clock)
    sim.run(progress)
    return sim.result(scheduler, clock() - t0)
