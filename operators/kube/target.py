"""The API server as a target of the plan-execution contract (scheduler.execute).

The plan's steps and their waits are the simulator's (plan_steps). Before anything is written,
each binding's victims (the evictions its step waits for) are asked with a server-side dry run,
all of them: where one would be refused (a PodDisruptionBudget's 429, a victim gone), that
binding is not made and none of its victims is evicted, since evicting the others would free room
for nothing. Then the steps run in their order: an eviction is under way until the pod is gone,
so the bindings that wait for it are left to a later cycle's plan, and every binding that waits
for nothing is made now, whatever else in the plan was refused.

What waits is a reservation: the steps still to do, carried from cycle to cycle. Each cycle an
eviction is done once its pod is gone (or replaced), and the bindings then ready are made (the
binder checks the pod is still pending and its GPUs free on the server, as for any binding:
where they are not, the pod is planned again); meanwhile the pods a reservation
holds are kept out of planning (so no second plan evicts for them), their `nominatedNodeName`
says where they will go, and victims being deleted are never victims again (convert), so no
other plan is given the room. A reservation ends when its bindings are made or at
`reservationSeconds`; then what it still holds is planned again.

Moves. A pod moves by what recreates it (operators.kube.owners): its old copy is evicted (after
the checkpoint handshake, for a workload that takes part) and its controller makes a new pod,
the replacement, which the reservation binds to the planned GPUs; a gang's replacements are
bound together once all of them exist. A surge (an inference replica whose Deployment allows
one) goes the other way round: the Deployment is scaled up by one, the new replica is bound to
the planned GPUs, and only once it runs is the old copy evicted and the Deployment scaled down
again. Until a replacement is bound its planned GPUs are held (`slots`), its controller's
pending pods are not planned elsewhere (`owners`), and the pods being moved are not moved or
evicted by another plan (`moving`). Each replacement is a new pod of the moved pod's
controller that was not there when the move began.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from operators.kube.apply import Applier
from operators.kube.convert import GANG, is_pending, pod_key
from operators.kube.owners import Scaler, controller_uid
from operators.timestamps import rfc3339
from scheduler.execute import Execution, Step, StepKind, plan_steps
from scheduler.model import Binding, ClusterSnapshot, Eviction, MoveBy, PackingPolicy, Plan, Pod

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Seen:
    """The pods as this cycle read them, as carrying out a plan needs them."""

    uids: dict[str, str]  # pod key -> uid, every pod
    owners: dict[str, str]  # pod key -> its controller's uid
    pending: frozenset[str]  # pods waiting to be bound
    ready: frozenset[str]  # pods Running with the Ready condition True
    gangs: dict[str, str]  # pod key -> its gang's name
    scalers: dict[str, Scaler] = field(default_factory=dict)  # surging pod -> its Deployment
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)  # pod key -> the pod as read

    @classmethod
    def of(cls, raw_pods: Collection[dict[str, Any]], scalers: Mapping[str, Scaler] = {}) -> Seen:
        uids, owners, gangs, by_key = {}, {}, {}, {}
        pending, ready = set(), set()
        for raw in raw_pods:
            key, md = pod_key(raw), raw["metadata"]
            by_key[key] = raw
            uids[key] = str(md.get("uid") or "")
            owner = controller_uid(raw)
            if owner is not None:
                owners[key] = owner
            gang = (md.get("labels") or {}).get(GANG)
            if gang is not None:
                gangs[key] = gang
            if is_pending(raw):
                pending.add(key)
            elif _ready(raw):
                ready.add(key)
        return cls(uids, owners, frozenset(pending), frozenset(ready), gangs, dict(scalers), by_key)


@dataclass
class Replacement:
    """What a moved pod's start waits for: a new pod of its controller."""

    moved: Pod  # the moved pod as planned: what its planned GPUs hold until the replacement binds
    owner: str  # the controller's uid
    gang: str | None
    before: frozenset[str]  # uids of the controller's pods when the move began: none of them
    pod: str | None = None  # the replacement, once it exists
    bound: bool = False


@dataclass
class Reservation:
    run: Execution  # the plan's remaining steps: evictions and moves under way, bindings waiting
    gone: dict[int, tuple[str, str]]  # evict or stop step -> (pod key, uid) it waits to see gone
    nodes: dict[str, str]  # pod key -> node, for the bindings it holds
    until: float  # monotonic seconds
    # Evictions not made yet: the victim was asked to checkpoint. Step -> (monotonic deadline,
    # the request's RFC 3339 stamp, which the acknowledgement must reach).
    checkpointing: dict[int, tuple[float, str]] = field(default_factory=dict)
    replacements: dict[int, Replacement] = field(default_factory=dict)  # start step -> its own
    scaled: dict[int, Scaler] = field(default_factory=dict)  # surge start -> Deployment scaled up
    moved: dict[str, Pod] = field(default_factory=dict)  # the plan's moved pods, as planned
    patience: float = 0.0  # seconds a reservation waits for its next step (extended on progress)
    unscale: list[Scaler] = field(default_factory=list)  # scale-downs the server did not take yet
    checkpoint_seconds: float = 0.0  # the policy's checkpointTimeoutSeconds

    @property
    def held(self) -> set[str]:
        """Pods whose bindings are still to be made."""
        return {
            s.pod
            for i, s in self.run.steps.items()
            if s.kind == StepKind.BIND and i not in self.run.finished
        }

    def start_of(self, pod: str) -> int:
        """The step that starts the moved pod's replacement."""
        return next(
            i for i, s in self.run.steps.items() if s.kind == StepKind.START and s.pod == pod
        )

    @property
    def done(self) -> bool:
        """Every step done, and every Deployment a surge scaled back to its size."""
        return self.run.complete and not self.unscale and not self.scaled

    @property
    def moving(self) -> set[str]:
        """Pods being moved or evicted whose old copy has not gone yet."""
        return {
            s.pod
            for i, s in self.run.steps.items()
            if s.kind in (StepKind.STOP, StepKind.EVICT) and i not in self.run.finished
        }

    @property
    def owners(self) -> set[str]:
        """Controllers whose next pending pod is a replacement this reservation binds."""
        return {
            r.owner
            for i, r in self.replacements.items()
            if i not in self.run.finished and not r.bound
        }

    @property
    def slots(self) -> list[Pod]:
        """Planned GPUs held for replacements not bound yet, from the moment the move began
        (the old copy may take a while to leave): as pods that run there."""
        out = []
        for i, r in self.replacements.items():
            if i not in self.run.finished and not r.bound:
                step = self.run.steps[i]
                out.append(
                    r.moved.model_copy(
                        update={
                            "name": f"{r.moved.name}~moving",
                            "node": step.node,
                            "gpu_indices": list(step.gpus),
                            "preemptible": False,
                            "move_by": MoveBy.NONE,
                        }
                    )
                )
        return out

    @property
    def moves_in_flight(self) -> int:
        return sum(
            1
            for i, s in self.run.steps.items()
            if s.kind == StepKind.START and i not in self.run.finished
        )


@dataclass
class Carried:
    """What a cycle's plan came to on the API server."""

    bound: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # victim -> why the server refuses
    held_back: dict[str, str] = field(default_factory=dict)  # binding -> the refused victim
    waiting: list[str] = field(default_factory=list)  # bindings that wait for evictions
    failed: dict[str, str] = field(default_factory=dict)  # bindings the server refused
    checkpointing: list[str] = field(default_factory=list)  # victims asked to checkpoint first
    moves_begun: dict[str, str] = field(default_factory=dict)  # moved pod -> why, move begun
    moved: list[str] = field(default_factory=list)  # moved pods whose replacement is in place
    placed: dict[str, tuple[str, list[int]]] = field(default_factory=dict)  # bound: node, GPUs
    steps: Counter[str] = field(default_factory=Counter)  # steps begun, by kind
    reservation: Reservation | None = None  # what waits for evictions, for later cycles


class ApiTarget:
    def __init__(
        self,
        applier: Applier,
        seen: Seen,
        carried: Carried,
        reservation: Reservation,
        checkpoints: Collection[str] = (),
        now: float = 0.0,
    ) -> None:
        self.applier, self.seen, self.carried = applier, seen, carried
        self.reservation, self.checkpoints = reservation, checkpoints
        self.now, self.stamp = now, rfc3339()
        self.retry: set[int] = set()  # steps that did not begin: tried again next cycle
        self.binds: list[list[Step]] = []  # groups to bind at the next flush

    def _leave(self, step: Step, event: str | None) -> None:
        """The pod leaves: asked to checkpoint first where it takes part, else evicted."""
        uid = self.seen.uids.get(step.pod, "")
        self.reservation.gone[step.id] = (step.pod, uid)
        if step.pod in self.checkpoints:
            # The handshake first: the eviction is made once the workload has saved its work
            # (or the policy's timeout passed), on a later cycle (resume).
            if self.applier.request_checkpoint(step.pod, uid, self.stamp):
                self.carried.checkpointing.append(step.pod)
                self.reservation.checkpointing[step.id] = (
                    self.now + self.reservation.checkpoint_seconds,
                    self.stamp,
                )
            else:
                self.retry.add(step.id)
            return
        eviction = Eviction(pod=step.pod, node=step.node, reason=step.reason)
        if self.applier.evict(eviction, uid, event):
            self.carried.evicted.append(step.pod)
        else:
            self.retry.add(step.id)

    def evict(self, step: Step) -> bool:
        self.carried.steps[step.kind.value] += 1
        self._leave(step, "Preempted")
        return False  # under way until the pod is gone: what waits for it waits a cycle

    def _expect(self, step: Step) -> bool:
        """The move begins: its replacement is a pod of the same controller that is not there
        now (read before the old copy goes, since its controller recreates it at once)."""
        start = self.reservation.start_of(step.pod)
        pod = self.reservation.moved.get(step.pod)
        owner = self.seen.owners.get(step.pod)
        if pod is None or owner is None:
            log.error("move_without_controller", pod=step.pod)  # the planner never moves one
            self.retry.add(step.id)
            return False
        if start not in self.reservation.replacements:
            before = frozenset(self.seen.uids[k] for k, o in self.seen.owners.items() if o == owner)
            self.reservation.replacements[start] = Replacement(
                pod, owner, self.seen.gangs.get(step.pod), before
            )
            self.carried.moves_begun[step.pod] = step.reason
            self.applier.moving(step.pod, self.seen.uids.get(step.pod, ""), step.reason)
        return True

    def stop(self, step: Step) -> bool:
        self.carried.steps[step.kind.value] += 1
        if not step.surge:
            if self._expect(step):
                self._leave(step, None)
            return False
        # The replacement runs: the old copy goes, and its Deployment back to its size.
        before = len(self.carried.evicted)
        self._leave(step, None)
        start = self.reservation.start_of(step.pod)
        scaler = self.reservation.scaled.pop(start, None)
        if len(self.carried.evicted) > before and scaler is not None:
            if not self.applier.scale(scaler, -1):
                self.reservation.unscale.append(scaler)  # tried again each cycle
        elif scaler is not None:
            self.reservation.scaled[start] = scaler
        return False

    def start(self, step: Step) -> bool:
        self.carried.steps[step.kind.value] += 1
        if not step.surge:
            return False  # under way until the replacement (expected at the stop) is bound
        if not self._expect(step):
            return False
        scaler = self.seen.scalers.get(step.pod)
        if scaler is None or not self.applier.scale(scaler, +1):
            self.retry.add(step.id)  # tried again next cycle; the move has begun already
            return False
        self.reservation.scaled[step.id] = scaler
        return False  # under way until the replica is bound and runs

    def bind(self, steps: list[Step]) -> bool:
        # Made at the flush, all of the round's at once: no step waits for a binding (they
        # are the plan's last phase), so none begins before it is made.
        self.carried.steps[StepKind.BIND.value] += len(steps)
        self.binds.append(steps)
        return True

    def advance(self, run: Execution) -> None:
        """Begin what can begin of `run`, then make the bindings that took."""
        run.advance(self)
        self.flush()

    def flush(self) -> None:
        """Make the bindings `bind` took, several at once."""
        groups = [
            [Binding(pod=s.pod, node=s.node, gpu_indices=list(s.gpus)) for s in steps]
            for steps in self.binds
        ]
        outcomes = self.applier.bind_groups(groups, self.seen.uids, self.seen.raw)
        for steps, outcome in zip(self.binds, outcomes, strict=True):
            self.carried.bound += outcome.bound
            self.carried.failed.update(outcome.failed)
            for s in steps:
                if s.pod in outcome.bound:
                    self.carried.placed[s.pod] = (s.node, list(s.gpus))
        self.binds = []


def carry_out(
    plan: Plan,
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    applier: Applier,
    seen: Seen,
    now: float = 0.0,
    checkpoints: Collection[str] = (),
) -> Carried:
    """The plan's steps on the API server; what waits (for evictions, checkpoints and
    replacements) comes back as a reservation (`now`: monotonic seconds, for its expiry).
    `checkpoints`: the running pods that take part in the checkpoint handshake (training and
    fine-tuning pods that say so)."""
    carried = Carried()
    steps = plan_steps(plan, snapshot, policy)
    kept = _without_refused(steps, applier, seen.uids, carried)
    run = Execution(kept)
    pods = {p.key: p for p in snapshot.pods}
    patience = policy.reservation_seconds + policy.checkpoint_timeout_seconds
    reservation = Reservation(
        run,
        {},
        {},
        now + patience,
        moved={m.pod: pods[m.pod] for m in plan.moves if m.pod in pods},
        patience=patience,
        checkpoint_seconds=policy.checkpoint_timeout_seconds,
    )
    target = ApiTarget(applier, seen, carried, reservation, checkpoints, now)
    target.advance(run)
    # What waits for evictions is held for later cycles, but not a binding (with its gang)
    # that waits for an eviction the server did not take after all: that room never frees.
    # A move's step that did not begin is tried again on the next cycle.
    lost = {i for i in target.retry if run.steps[i].kind == StepKind.EVICT}
    waiting = [s for s in kept if s.kind == StepKind.BIND and s.id not in run.finished]
    broken = {s.group or s.pod for s in waiting if lost & set(s.after)}
    for s in kept:
        if s.id in lost or (s.kind == StepKind.BIND and (s.group or s.pod) in broken):
            del run.steps[s.id]
            run.under_way.discard(s.id)
    _retry(run, target.retry)
    carried.waiting = sorted(s.pod for s in waiting if (s.group or s.pod) not in broken)
    # Evictions that nothing waits for any more are not followed.
    if not run.complete and any(
        s.kind != StepKind.EVICT for i, s in run.steps.items() if i not in run.finished
    ):
        reservation.nodes = {
            s.pod: s.node
            for i, s in run.steps.items()
            if s.kind == StepKind.BIND and i not in run.finished
        }
        carried.reservation = reservation
    return carried


def _retry(run: Execution, steps: Collection[int]) -> None:
    for i in steps:
        if i in run.steps:
            run.under_way.discard(i)


def resume(
    reservation: Reservation,
    seen: Seen,
    applier: Applier,
    acks: Mapping[str, str] | None = None,
    now: float = 0.0,
    checkpoints: Collection[str] = (),
) -> Carried:
    """One cycle of a reservation: victims asked to checkpoint are evicted once they say they
    have (`acks`: pod key -> its wattpack.io/checkpointed stamp) or their time is up; evictions
    and stops whose pods are gone are done; replacements that have appeared are bound (a
    gang's together), and a surge's is done once it runs; and the steps then ready begin."""
    run = reservation.run
    carried = Carried()
    finished = len(run.finished)
    reservation.unscale = [s for s in reservation.unscale if not applier.scale(s, -1)]
    for step_id, (deadline, stamp) in list(reservation.checkpointing.items()):
        key, uid = reservation.gone[step_id]
        if seen.uids.get(key) != uid:
            del reservation.checkpointing[step_id]  # gone on its own
            continue
        acked = (acks or {}).get(key, "") >= stamp
        if not acked and now < deadline:
            continue
        step = run.steps[step_id]
        log.info("checkpoint_done" if acked else "checkpoint_timed_out", pod=key)
        event = "Preempted" if step.kind == StepKind.EVICT else None
        if applier.evict(Eviction(pod=key, node=step.node, reason=step.reason), uid, event):
            carried.evicted.append(key)
            del reservation.checkpointing[step_id]
    for step_id, (key, uid) in reservation.gone.items():
        if step_id in run.under_way and seen.uids.get(key) != uid:
            run.done(step_id)
    _place_replacements(reservation, seen, applier, carried)
    target = ApiTarget(applier, seen, carried, reservation, checkpoints, now)
    target.advance(run)
    _retry(run, target.retry)
    # Starts that just began: their replacements are usually there already (a controller
    # recreates a pod as soon as it is evicted), so they are bound in this same cycle.
    _place_replacements(reservation, seen, applier, carried)
    target.advance(run)
    _retry(run, target.retry)
    if len(run.finished) > finished:  # progress: the steps left get their time again
        reservation.until = max(reservation.until, now + reservation.patience)
    return carried


def _place_replacements(
    reservation: Reservation, seen: Seen, applier: Applier, carried: Carried
) -> None:
    run = reservation.run
    waiting = {i: r for i, r in reservation.replacements.items() if i in run.under_way}
    taken = {r.pod for r in reservation.replacements.values() if r.pod is not None}
    for _, r in sorted(waiting.items()):
        if r.pod is not None and not r.bound and r.pod not in seen.pending:
            taken.discard(r.pod)
            r.pod = None  # deleted (or bound by someone else) before we bound it: another one
        if r.pod is not None:
            continue
        found = sorted(
            k
            for k in seen.pending
            if seen.owners.get(k) == r.owner
            and seen.uids[k] not in r.before
            and k not in taken
            and seen.gangs.get(k) == r.gang
        )
        if found:
            r.pod = found[0]
            taken.add(found[0])
    # Bind: a gang's replacements together once all exist, any other alone.
    units: dict[str, list[int]] = defaultdict(list)
    for i, r in waiting.items():
        if not r.bound:
            units[run.steps[i].group or run.steps[i].pod].append(i)
    ready = [ids for ids in units.values() if all(waiting[i].pod is not None for i in ids)]
    groups = [
        [
            Binding(
                pod=waiting[i].pod,  # type: ignore[arg-type]
                node=run.steps[i].node,
                gpu_indices=list(run.steps[i].gpus),
            )
            for i in ids
        ]
        for ids in ready
    ]
    outcomes = applier.bind_groups(groups, seen.uids, seen.raw) if groups else []
    for ids, group, outcome in zip(ready, groups, outcomes, strict=True):
        carried.bound += outcome.bound
        carried.failed.update(outcome.failed)
        if len(outcome.bound) != len(group):
            for i in ids:
                waiting[i].pod = None  # looked for again next cycle
            continue
        for i, b in zip(ids, group, strict=True):
            step = run.steps[i]
            waiting[i].bound = True
            carried.placed[b.pod] = (b.node, b.gpu_indices)
            applier.moved(b.pod, seen.uids.get(b.pod, ""), step.pod, step.reason)
            if not step.surge:
                run.done(i)
                carried.moved.append(step.pod)
    for i, r in waiting.items():
        step = run.steps[i]
        if step.surge and r.bound and r.pod in seen.ready:
            run.done(i)  # the replica serves: its old copy may go
            carried.moved.append(step.pod)
        elif r.bound and r.pod not in seen.uids:
            r.pod, r.bound = None, False  # gone before it served (scaled down, deleted)


def _ready(raw: dict[str, Any]) -> bool:
    status = raw.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def abandon(reservation: Reservation, applier: Applier) -> None:
    """An expired reservation: a Deployment scaled up for a surge that did not finish goes
    back to its size (its controller removes the pod it ranks lowest: a replica not bound)."""
    for step_id, scaler in reservation.scaled.items():
        log.warning("surge_abandoned", pod=reservation.run.steps[step_id].pod)
        applier.scale(scaler, -1)
    reservation.scaled.clear()
    for scaler in reservation.unscale:
        applier.scale(scaler, -1)
    reservation.unscale.clear()


def _without_refused(
    steps: list[Step], applier: Applier, uids: dict[str, str], carried: Carried
) -> list[Step]:
    """The steps less every binding unit (a pod, or a gang's members) one of whose victims the
    server would refuse, and less the evictions that only such units waited for."""
    by_id = {s.id: s for s in steps}
    units: dict[str, list[Step]] = defaultdict(list)
    for s in steps:
        if s.kind == StepKind.BIND:
            units[s.group or s.pod].append(s)
    verdict: dict[int, str | None] = {}

    def refused(e: Step) -> str | None:
        if e.id not in verdict:
            why = applier.refuses(
                Eviction(pod=e.pod, node=e.node, reason=e.reason), uids.get(e.pod, "")
            )
            verdict[e.id] = why
            if why is not None:
                carried.refused[e.pod] = why
                log.warning("eviction_refused", pod=e.pod, why=why)
        return verdict[e.id]

    dropped: set[int] = set()
    needed: set[int] = set()
    for members in units.values():
        victims = sorted({a for s in members for a in s.after if by_id[a].kind == StepKind.EVICT})
        bad = next((by_id[a] for a in victims if refused(by_id[a]) is not None), None)
        if bad is None:
            needed.update(victims)
            continue
        dropped.update(s.id for s in members)
        for s in members:
            carried.held_back[s.pod] = bad.pod
    waited_for = {a for members in units.values() for s in members for a in s.after}
    for s in steps:
        # An eviction that no binding waits for is the plan's to make, if the server allows.
        if (
            s.kind == StepKind.EVICT
            and s.id not in needed
            and (s.id in waited_for or refused(s) is not None)
        ):
            dropped.add(s.id)
    return [s for s in steps if s.id not in dropped]
