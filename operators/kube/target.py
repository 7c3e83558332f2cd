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

Moves are not carried out by the operator yet (it plans without them): a stop or a start fails
loudly rather than being skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import structlog

from operators.kube.apply import Applier
from operators.timestamps import rfc3339
from scheduler.execute import Execution, Step, StepKind, UnknownStep, plan_steps
from scheduler.model import Binding, ClusterSnapshot, Eviction, PackingPolicy, Plan

log = structlog.get_logger(__name__)


@dataclass
class Reservation:
    run: Execution  # the plan's remaining steps: evictions under way, bindings waiting
    victims: dict[int, tuple[str, str]]  # eviction step -> (pod key, uid) it waits to see gone
    nodes: dict[str, str]  # pod key -> node, for the bindings it holds
    until: float  # monotonic seconds
    # Evictions not made yet: the victim was asked to checkpoint. Step -> (monotonic deadline,
    # the request's RFC 3339 stamp, which the acknowledgement must reach).
    checkpointing: dict[int, tuple[float, str]] = field(default_factory=dict)

    @property
    def held(self) -> set[str]:
        """Pods whose bindings are still to be made."""
        return {
            s.pod
            for i, s in self.run.steps.items()
            if s.kind == StepKind.BIND and i not in self.run.finished
        }


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
    reservation: Reservation | None = None  # what waits for evictions, for later cycles


class ApiTarget:
    def __init__(
        self,
        applier: Applier,
        uids: dict[str, str],
        carried: Carried,
        checkpoints: Collection[str] = (),
        stamp: str = "",
    ) -> None:
        self.applier, self.uids, self.carried = applier, uids, carried
        self.checkpoints, self.stamp = checkpoints, stamp

    def evict(self, step: Step) -> bool:
        if step.pod in self.checkpoints:
            # The handshake first: the eviction is made once the workload has saved its work
            # (or the policy's timeout passed), on a later cycle (resume).
            if self.applier.request_checkpoint(step.pod, self.uids.get(step.pod, ""), self.stamp):
                self.carried.checkpointing.append(step.pod)
            return False
        eviction = Eviction(pod=step.pod, node=step.node, reason=step.reason)
        if self.applier.evict(eviction, self.uids.get(step.pod, "")):
            self.carried.evicted.append(step.pod)
        return False  # under way until the pod is gone: what waits for it waits a cycle

    def stop(self, step: Step) -> bool:
        raise UnknownStep(f"the operator does not carry out moves yet: stop {step.pod}")

    def start(self, step: Step) -> bool:
        raise UnknownStep(f"the operator does not carry out moves yet: start {step.pod}")

    def bind(self, steps: list[Step]) -> bool:
        group = [Binding(pod=s.pod, node=s.node, gpu_indices=list(s.gpus)) for s in steps]
        outcome = self.applier.bind_group(group, self.uids)
        self.carried.bound += outcome.bound
        self.carried.failed.update(outcome.failed)
        return True


def carry_out(
    plan: Plan,
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    applier: Applier,
    uids: dict[str, str],
    now: float = 0.0,
    checkpoints: Collection[str] = (),
) -> Carried:
    """The plan's steps on the API server; what waits for evictions comes back as a
    reservation (`now`: monotonic seconds, for its expiry). `checkpoints`: the running pods
    that take part in the checkpoint handshake (training and fine-tuning pods that say so)."""
    carried = Carried()
    steps = plan_steps(plan, snapshot, policy)
    kept = _without_refused(steps, applier, uids, carried)
    run = Execution(kept)
    stamp = rfc3339()
    run.advance(ApiTarget(applier, uids, carried, checkpoints=checkpoints, stamp=stamp))
    # What waits for evictions is held for later cycles, but not a binding (with its gang)
    # that waits for an eviction the server did not take after all: that room never frees.
    begun = set(carried.evicted) | set(carried.checkpointing)
    lost = {s.id for s in kept if s.kind == StepKind.EVICT and s.pod not in begun}
    waiting = [s for s in kept if s.kind == StepKind.BIND and s.id not in run.finished]
    broken = {s.group or s.pod for s in waiting if lost & set(s.after)}
    waiting = [s for s in waiting if (s.group or s.pod) not in broken]
    carried.waiting = sorted(s.pod for s in waiting)
    if waiting:
        victims = sorted({a for s in waiting for a in s.after})
        held = Execution([run.steps[a] for a in victims] + waiting)
        held.under_way.update(victims)
        carried.reservation = Reservation(
            held,
            {a: (run.steps[a].pod, uids.get(run.steps[a].pod, "")) for a in victims},
            {s.pod: s.node for s in waiting},
            now + policy.reservation_seconds + policy.checkpoint_timeout_seconds,
            {
                a: (now + policy.checkpoint_timeout_seconds, stamp)
                for a in victims
                if run.steps[a].pod in carried.checkpointing
            },
        )
    return carried


def resume(
    reservation: Reservation,
    present: dict[str, str],
    applier: Applier,
    uids: dict[str, str],
    acks: Mapping[str, str] | None = None,
    now: float = 0.0,
) -> Carried:
    """One cycle of a reservation: victims asked to checkpoint are evicted once they say they
    have (`acks`: pod key -> its wattpack.io/checkpointed stamp) or their time is up; evictions
    whose pods are gone (`present`: pod key -> uid in the cluster now) are done; and the
    bindings that become ready are made."""
    run = reservation.run
    carried = Carried()
    for step_id, (deadline, stamp) in list(reservation.checkpointing.items()):
        key, uid = reservation.victims[step_id]
        if present.get(key) != uid:
            del reservation.checkpointing[step_id]  # gone on its own
            continue
        acked = (acks or {}).get(key, "") >= stamp
        if not acked and now < deadline:
            continue
        step = run.steps[step_id]
        log.info("checkpoint_done" if acked else "checkpoint_timed_out", pod=key)
        if applier.evict(Eviction(pod=key, node=step.node, reason=step.reason), uid):
            carried.evicted.append(key)
            del reservation.checkpointing[step_id]
    for step_id, (key, uid) in reservation.victims.items():
        if step_id in run.under_way and present.get(key) != uid:
            run.done(step_id)
    run.advance(ApiTarget(applier, uids, carried))
    return carried


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
