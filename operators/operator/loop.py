"""The operator: caches of the cluster, a planning cycle on change (debounced) and on a timer,
and the plan carried out.

One cycle: the cached objects (plus pods this process bound that the cache has not shown yet)
become a snapshot through the same conversion `wattpack export` uses, the core plans it, and the
plan is carried out step by step (operators.kube.target): bindings that wait for nothing are
made at once, those that wait for evictions or moves on a later cycle, when their victims are
gone, so no GPU is ever promised twice. Moves are guarded: at most moves.maxInFlight under way
and moves.perHour in any hour (the snapshot's movesLastHour is what this process moved).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

import structlog

from operators.endpoints import Heartbeat
from operators.kube.apply import Applier
from operators.kube.cache import Informer, wait_synced
from operators.kube.convert import (
    CHECKPOINTED,
    CHECKPOINTS,
    GPU_INDICES,
    Conversion,
    pod_key,
)
from operators.kube.owners import Scaler, surged
from operators.kube.source import config_of, listers, snapshot_of
from operators.kube.target import Carried, Reservation, Seen, abandon, carry_out, resume
from operators.operator.metrics import OperatorMetrics
from scheduler.errors import UserError
from scheduler.model import GpuModel, PackingPolicy, Plan, PodKind

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Settings:
    namespace: str
    config_map: str
    dry_run: bool = False
    interval: float = 30.0  # a cycle at least this often, changes or not
    debounce: float = 0.5  # wait until changes stop for this long ...
    max_delay: float = 3.0  # ... but no longer than this after the first one
    assume_for: float = 60.0  # how long a pod we bound counts as bound before the cache shows it
    cluster_name: str = "cluster"
    stuck_after: float = 300.0  # /healthz fails once a cycle runs longer than this


class Operator:
    def __init__(
        self,
        api: Any,  # kubernetes.client.ApiClient: only operators.kube touches the client
        settings: Settings,
        metrics: OperatorMetrics,
        identity: str,
        out=None,  # type: ignore[no-untyped-def]  # where dry-run plans are printed
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        # A replica that lost its lease is stopped (operators.kube.leader) before another can
        # take it: from then on the cycle in flight writes nothing.
        self.applier = Applier(
            api, settings.dry_run, identity, may_write=lambda: not self._stop.is_set()
        )
        self.out = out
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self.heartbeat = Heartbeat(settings.stuck_after)
        self._running = False  # run() began: this replica leads (or there is no election)
        self.informers = {
            kind: Informer(kind, lister, self._changed)
            for kind, lister in listers(api, settings.namespace, settings.config_map).items()
        }
        self._assumed: dict[str, tuple[str, list[int], float]] = {}  # key -> node, GPUs, until
        self._reservations: list[Reservation] = []  # bindings waiting for their victims to go
        self._moves: deque[float] = deque()  # when each move of the last hour began (monotonic)
        self._good: tuple[PackingPolicy, list[GpuModel]] | None = None
        self._config_error: str | None = None
        self._notes: list[str] = []

    def _changed(self, kind: str) -> None:
        self._dirty.set()

    # -- running ------------------------------------------------------------------------------

    def run(self) -> None:
        """Until stop(): start the caches, then cycle on change and on the timer."""
        self._running = True
        for i in self.informers.values():
            i.start()
        self.heartbeat.beat(10)
        while not wait_synced(list(self.informers.values()), 10) and not self._stop.is_set():
            log.warning("caches_not_synced_yet", missing=self._unsynced())
            self.heartbeat.beat(10)
        log.info("caches_synced", dry_run=self.settings.dry_run)
        while not self._stop.is_set():
            s = self.settings
            # Idle: the wait ends after the interval, and a burst of changes after max_delay.
            self.heartbeat.beat(s.interval + s.max_delay)
            self._wait_for_change()
            if self._stop.is_set():
                break
            self.heartbeat.beat()  # busy: a cycle longer than stuck_after fails /healthz
            try:
                self.cycle()
            except Exception:  # a cycle that breaks is logged and retried, never fatal
                self.metrics.errors.inc()
                log.exception("cycle_failed")
                self.heartbeat.beat(1.0)
                self._stop.wait(1.0)

    def not_ready(self) -> str | None:
        """/readyz: the caches are synced. A standby (run() not begun: it waits for the lease)
        is ready too: it has nothing to sync until it leads."""
        missing = self._unsynced() if self._running else []
        return f"caches not synced yet: {', '.join(missing)}" if missing else None

    def _unsynced(self) -> list[str]:
        return [kind for kind, i in self.informers.items() if not i.synced.is_set()]

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        for i in self.informers.values():
            i.stop()

    def _wait_for_change(self) -> None:
        s = self.settings
        self._dirty.wait(s.interval)
        first = time.monotonic()
        # Debounce: a burst of pod creations becomes one cycle, not one per pod.
        while not self._stop.is_set():
            self._dirty.clear()
            left = s.max_delay - (time.monotonic() - first)
            if left <= 0 or not self._dirty.wait(min(s.debounce, left)):
                return

    # -- one cycle ----------------------------------------------------------------------------

    def cycle(self) -> Plan | None:
        from scheduler.planner import plan as make_plan

        started = time.perf_counter()
        items = {kind: inf.items() for kind, inf in self.informers.items()}
        cached_pods = items["pods"]
        items["pods"] = self._with_assumed(cached_pods)
        config = self._config(items)
        if config is None:
            return None
        policy, models = config
        conv = snapshot_of(items, models, self.settings.cluster_name)
        seen = Seen.of(cached_pods, conv.scalers)
        # Who takes part in the checkpoint handshake, for this cycle's plan and reservations.
        checkpoints = _checkpoints(conv, cached_pods)
        if self._reservations and self._resume(seen, cached_pods, checkpoints):
            items["pods"] = self._with_assumed(cached_pods)  # what the reservations bound
            conv = snapshot_of(items, models, self.settings.cluster_name)
        self._release_orphaned_surges(items.get("deployments", []))
        conv = self._without_held(conv)
        policy = self._move_guard(policy)
        if conv.notes != self._notes:  # what is left out is said when it changes, not every cycle
            for note in conv.notes:
                log.warning("object_left_out", note=note)
            self._notes = conv.notes
        plan = make_plan(conv.snapshot, policy)
        raw_pods = {pod_key(p): p for p in items["pods"]}
        carried = self._carry_out(plan, conv, raw_pods, policy, seen, checkpoints)
        pending = [p for p in conv.snapshot.pods if p.node is None]
        placed = set(carried.bound)
        by_kind: dict[Any, int] = defaultdict(int)
        for p in pending:
            if p.key not in placed:
                by_kind[p.kind] += 1
        self.applier.domain_power(plan.summary.power_watts, plan.summary.power_budget_watts)
        self.metrics.observe(plan, by_kind)
        self.metrics.domains(conv.snapshot.power_domains)
        self.metrics.cycle.observe(time.perf_counter() - started)
        s = plan.summary
        log.info(
            "cycle_done",
            pending=len(pending),
            bound=len(placed),
            evicted=len(carried.evicted),
            moves_begun=len(carried.moves_begun),
            waiting_for_evictions=len(carried.waiting),
            refused=len(carried.refused),
            unplaced=len(plan.unplaced),
            status=s.status,
            gap=round(s.gap, 4),
            allocation=round(s.gpu_allocation, 4),
            seconds=round(time.perf_counter() - started, 3),
        )
        if self.settings.dry_run and self.out is not None:
            self.out.write(json.dumps(plan.model_dump(by_alias=True, mode="json")) + "\n")
            self.out.flush()
        return plan

    def _config(self, items):  # type: ignore[no-untyped-def]
        """The ConfigMap's policy and models; while it is malformed, the last good ones."""
        try:
            good = config_of(items, self.settings.namespace, self.settings.config_map)
            if good != self._good:
                policy, models = good
                log.info(
                    "config_loaded",
                    models=[m.name for m in models],
                    policy=policy.model_dump(by_alias=True, mode="json", exclude_defaults=True),
                )
                if policy.solver.time_limit_seconds >= self.settings.stuck_after:
                    # /healthz would fail while the solver works, and the leader be restarted.
                    log.warning(
                        "solver_time_limit_above_stuck_after",
                        time_limit_seconds=policy.solver.time_limit_seconds,
                        stuck_after=self.settings.stuck_after,
                        todo="raise --stuck-after above the solver's time limit",
                    )
            self._good = good
            self._config_error = None
        except UserError as e:
            if e.line() != self._config_error:  # once per distinct problem, not every cycle
                log.error("config_invalid", error=e.line(), using="the last good config")
                self._config_error = e.line()
        return self._good

    def _carry_out(
        self,
        plan: Plan,
        conv: Conversion,
        raw_pods: dict[str, dict],
        policy: PackingPolicy,
        seen: Seen,
        checkpoints: set[str],
    ) -> Carried:
        uids = conv.uids
        # The plan's steps in their order (operators.kube.target): a binding that waits for
        # nothing is made now; one that waits for evictions or moves is left to a later cycle,
        # when its victims are gone; one whose victims the server would refuse is not made,
        # and none of its victims is evicted.
        now = time.monotonic()
        carried = carry_out(plan, conv.snapshot, policy, self.applier, seen, now, checkpoints)
        self._count(carried, plan, now)
        # A dry run writes nothing, so nothing it planned is under way: nothing to follow.
        if carried.reservation is not None and not self.settings.dry_run:
            self._reservations.append(carried.reservation)
            for key, node in carried.reservation.nodes.items():
                self.applier.nominate(key, node)
        self._gauges()
        bindings = {b.pod: b for b in plan.bindings}
        for key, victim in carried.held_back.items():
            why = (
                f"would fit on {bindings[key].node} by preempting {victim}, but the API server "
                f"refuses to evict it now: {carried.refused[victim]}"
            )
            self.applier.unschedulable(key, uids.get(key, ""), why, raw_pods.get(key))
        for u in plan.unplaced:
            self.applier.unschedulable(u.pod, uids.get(u.pod, ""), u.reason, raw_pods.get(u.pod))
        for p in conv.problems:
            raw = raw_pods.get(p.pod)
            self.applier.unschedulable(p.pod, p.uid, p.reason, raw)
        live = {
            str(p["metadata"].get("uid"))
            for p in raw_pods.values()
            if not p["spec"].get("nodeName")
        }
        self.applier.forget(live)
        return carried

    def _count(self, carried: Carried, plan: Plan | None, now: float) -> None:
        """Metrics of what a cycle's steps did, and the bindings assumed until the cache
        shows them."""
        self.metrics.evictions.inc(len(carried.evicted))
        self.metrics.bindings.inc(len(carried.bound))
        self.metrics.refused.inc(len(carried.refused))
        for reason in carried.moves_begun.values():
            if not self.settings.dry_run:  # a dry run moves nothing: no budget spent
                self._moves.append(now)
            self.metrics.moves.labels(reason.split(":", 1)[0]).inc()
        for kind, n in carried.steps.items():
            self.metrics.steps.labels(kind).inc(n)
        for key, (node, gpus) in carried.placed.items():
            self._assumed[key] = (node, gpus, now + self.settings.assume_for)

    def _gauges(self) -> None:
        self.metrics.reserved.set(sum(len(r.held) for r in self._reservations))
        self.metrics.moves_in_flight.set(sum(r.moves_in_flight for r in self._reservations))

    def _release_orphaned_surges(self, deployments: list[dict[str, Any]]) -> None:
        """Replicas a surge added that no reservation of this process follows (its leader died
        mid-surge, or it expired here) are taken back: the Deployment returns to its size."""
        if self.settings.dry_run:
            return
        now = time.monotonic()
        mine: dict[tuple[str, str], int] = defaultdict(int)
        for r in self._reservations:
            for s in [*r.scaled.values(), *r.unscale]:
                mine[(s.namespace, s.name)] += 1
        for d in deployments:
            key = (d["metadata"].get("namespace") or "default", d["metadata"]["name"])
            extra = surged(d) - mine[key]
            # What this process scaled lately may not be in its cache yet: not an orphan.
            if (
                extra > 0
                and now - self.applier.scaled_at.get(key, -1e18) > self.settings.assume_for
            ):
                log.warning("surge_orphaned", deployment=f"{key[0]}/{key[1]}", replicas=extra)
                self.applier.scale(Scaler(*key), -extra)

    def _move_guard(self, policy: PackingPolicy) -> PackingPolicy:
        """The policy with this cycle's move budget: no more than moves.maxInFlight under way."""
        rules = policy.moves
        in_flight = sum(r.moves_in_flight for r in self._reservations)
        most = max(0, min(rules.per_cycle, rules.max_in_flight - in_flight))
        return policy.model_copy(update={"moves": rules.model_copy(update={"per_cycle": most})})

    def _resume(self, seen: Seen, cached_pods: list[dict[str, Any]], checkpoints: set[str]) -> bool:
        """Carry the reservations on: evict what has checkpointed, bind what their victims'
        leaving has made ready and the replacements that have appeared (the binder checks the
        GPUs on the server); let go of expired ones. Whether anything was bound."""
        now = time.monotonic()
        acks = {pod_key(p): _annotation(p, CHECKPOINTED) for p in cached_pods}
        bound = False
        kept = []
        for r in self._reservations:
            if r.until < now:
                log.warning("reservation_expired", pods=sorted(r.held), moving=sorted(r.moving))
                abandon(r, self.applier)
                for key in r.held:
                    self.applier.nominate(key, None)
                continue
            carried = resume(r, seen, self.applier, acks, now, checkpoints)
            self._count(carried, None, now)
            bound = bound or bool(carried.bound)
            if not r.done:
                kept.append(r)
            else:
                log.info("reservation_done", moved=len(r.replacements))
        self._reservations = kept
        self._gauges()
        return bound

    def _without_held(self, conv: Conversion) -> Conversion:
        """What the reservations hold, as the planner must see it: the pods they will bind and
        the replacements they wait for are not planned elsewhere, the pods they move or evict
        are not moved or evicted again, and the GPUs held for replacements are taken."""
        now = time.monotonic()
        while self._moves and self._moves[0] < now - 3600:
            self._moves.popleft()
        meta = conv.snapshot.metadata.model_copy(update={"moves_last_hour": len(self._moves)})
        if not self._reservations:
            return dataclasses.replace(
                conv, snapshot=conv.snapshot.model_copy(update={"metadata": meta})
            )
        held = set().union(*(r.held for r in self._reservations))
        owners = set().union(*(r.owners for r in self._reservations))
        moving = set().union(*(r.moving for r in self._reservations))
        slots = _fitting(conv.snapshot, [p for r in self._reservations for p in r.slots])
        pods = [
            p.model_copy(update={"preemptible": False}) if p.key in moving else p
            for p in conv.snapshot.pods
            if p.node is not None or (p.key not in held and conv.owners.get(p.key) not in owners)
        ]
        snap = conv.snapshot.model_copy(update={"pods": pods + slots, "metadata": meta})
        return dataclasses.replace(conv, snapshot=snap)

    def _with_assumed(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pods this process bound but the cache still shows pending count as bound, until the
        cache catches up or the assumption expires."""
        if not self._assumed:
            return pods
        now = time.monotonic()
        out = []
        seen = set()
        for p in pods:
            key = pod_key(p)
            seen.add(key)
            a = self._assumed.get(key)
            if a is None:
                out.append(p)
                continue
            if p["spec"].get("nodeName") or a[2] < now:
                del self._assumed[key]
                out.append(p)
                continue
            q = copy.deepcopy(p)
            q["spec"]["nodeName"] = a[0]
            q["metadata"].setdefault("annotations", {})[GPU_INDICES] = ",".join(map(str, a[1]))
            out.append(q)
        for key in set(self._assumed) - seen:
            del self._assumed[key]
        return out


def _checkpoints(conv: Conversion, pods: list[dict[str, Any]]) -> set[str]:
    """Running training and fine-tuning pods that take part in the checkpoint handshake."""
    raw = {pod_key(p): p for p in pods}
    return {
        p.key
        for p in conv.snapshot.pods
        if p.node is not None
        and p.kind in (PodKind.TRAINING, PodKind.FINE_TUNING)
        and _annotation(raw.get(p.key), CHECKPOINTS) == "true"
    }


def _fitting(snapshot: Any, slots: list[Any]) -> list[Any]:
    """The held GPUs that are free now: where a pod still leaves (a move that trades places),
    it holds them itself until it is gone, and counting both would fill the GPU twice."""
    used: dict[tuple[str, int], int] = defaultdict(int)
    for p in snapshot.pods:
        for g in p.gpu_indices if p.node is not None else ():
            used[(p.node, g)] += p.gpu_milli if p.fractional else 1000
    out = []
    for s in slots:
        share = s.gpu_milli if s.fractional else 1000
        if all(used[(s.node, g)] + share <= 1000 for g in s.gpu_indices):
            for g in s.gpu_indices:
                used[(s.node, g)] += share
            out.append(s)
    return out


def _annotation(raw: dict[str, Any] | None, name: str) -> str:
    if raw is None:
        return ""
    return str((raw["metadata"].get("annotations") or {}).get(name, ""))
