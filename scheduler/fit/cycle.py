"""What every scheduling cycle starts from: pending pods, victims, node classes, free capacity."""

from __future__ import annotations

from dataclasses import dataclass

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


def start_cycle(
    snapshot: ClusterSnapshot, policy: PackingPolicy, *, singleton_classes: bool = False
) -> Cycle:
    pending = [p for p in snapshot.pods if p.node is None]
    victims = evictable(snapshot, policy, pending)
    classes, class_of = node_classes(
        snapshot, policy, {v.key for v in victims}, singleton=singleton_classes
    )
    state = ClusterState(snapshot, policy, classes, class_of)
    return Cycle(snapshot, policy, pending, victims, state)
