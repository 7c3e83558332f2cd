"""What every scheduling cycle starts from: pending pods, victims, node classes, free capacity."""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.fit.classes import node_classes
from scheduler.fit.state import ClusterState
from scheduler.model import ClusterSnapshot, PackingPolicy, Pod, PodKind


@dataclass
class Cycle:
    snapshot: ClusterSnapshot
    policy: PackingPolicy
    pending: list[Pod]
    victims: list[Pod]  # running pods that preemption may evict
    state: ClusterState
    # What each pending pod is worth and the GPU milli it takes, by key (fit.value.pending_values
    # fills it): shared by the copies, since every candidate of a cycle sums it over thousands.
    values: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    def copy(self) -> Cycle:
        """The same cycle with a state of its own, as it stands (see ClusterState.copy)."""
        return Cycle(
            self.snapshot, self.policy, self.pending, self.victims, self.state.copy(), self.values
        )


def evictable(snapshot: ClusterSnapshot, policy: PackingPolicy, pending: list[Pod]) -> list[Pod]:
    if not policy.preemption or not pending:
        return []
    top = max(p.priority for p in pending if p.gpus > 0) if any(p.gpus for p in pending) else None
    if top is None:
        return []
    # Evicting from a cordoned node frees nothing that new work may use.
    cordoned = {n.name for n in snapshot.nodes if not n.schedulable}
    return [
        p
        for p in snapshot.pods
        if p.node is not None
        and p.node not in cordoned
        and p.preemptible
        and p.priority < top
        and (policy.preempt_inference or p.kind != PodKind.INFERENCE)
        and p.gang is None  # evicting a gang member would leave a partial gang running
    ]


def starving(pod: Pod, policy: PackingPolicy) -> bool:
    """A pending gang member that has waited starvingGangSeconds or more. Only gangs starve:
    a lone pod takes the first room that frees, while a gang needs room on several nodes at
    once, which backfill keeps taking. Gang members are never victims (see evictable), so two
    starving gangs cannot preempt each other in turn."""
    after = policy.starving_gang_seconds
    return (
        after is not None
        and pod.gang is not None
        and pod.node is None
        and pod.waiting_seconds is not None
        and pod.waiting_seconds >= after
    )


def _gang_waits(pending: list[Pod]) -> list[Pod]:
    """Gang members as waiting as long as their most recent member: a gang starves whole or
    not at all (members created a moment apart must not straddle the threshold)."""
    least: dict[str, float | None] = {}
    for p in pending:
        if p.gang_key is not None:
            w = p.waiting_seconds
            seen = least.get(p.gang_key, w)
            least[p.gang_key] = None if w is None or seen is None else min(w, seen)
    return [
        p.model_copy(update={"waiting_seconds": least[p.gang_key]})
        if p.gang_key is not None and p.waiting_seconds != least[p.gang_key]
        else p
        for p in pending
    ]


def start_cycle(
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    *,
    singleton_classes: bool = False,
    state: ClusterState | None = None,
) -> Cycle:
    """state: the cluster as this snapshot has it, already read in by the cycle (the moves'
    ClusterState.unclassed, with the moves placed): it gets the snapshot's classes instead of
    a second read."""
    # A starving gang ranks one above its priority for this cycle: preemption then lets it
    # evict lone pods of its own priority (fit.value: where it places more than they held).
    pending = [p for p in snapshot.pods if p.node is None]
    if policy.starving_gang_seconds is not None:
        pending = [
            p.model_copy(update={"priority": p.priority + 1}) if starving(p, policy) else p
            for p in _gang_waits(pending)
        ]
    victims = evictable(snapshot, policy, pending)
    classes, class_of = node_classes(
        snapshot, policy, {v.key for v in victims}, singleton=singleton_classes
    )
    if state is None:
        state = ClusterState(snapshot, policy, classes, class_of)
    else:
        state = state.reclassed(snapshot, classes, class_of)
    return Cycle(snapshot, policy, pending, victims, state)
