"""Running gangs missing members: repaired where the rest fit, released where they have waited.

A gang whose members are partly bound (its scheduler died between two binds, or a member was
made again by its controller) holds GPUs that do no work: every member is needed. The cycle
places the missing members where they fit, as it places any gang's members (the repair). Where
they have waited policy.brokenGangReleaseSeconds and the plan still does not place them, the
running members are evicted, so the gang goes back to the queue whole and is placed together
once there is room. Members that are not preemptible, or that the plan moves, are never
released.
"""

from __future__ import annotations

from collections import defaultdict

from scheduler.model import ClusterSnapshot, Eviction, PackingPolicy, Plan, Pod


def release_broken_gangs(snapshot: ClusterSnapshot, plan: Plan, policy: PackingPolicy) -> Plan:
    """The plan with the evictions that release broken gangs added."""
    after = policy.broken_gang_release_seconds
    if after is None:
        return plan
    members: dict[str, list[Pod]] = defaultdict(list)
    for p in snapshot.pods:
        if p.gang_key is not None:
            members[p.gang_key].append(p)
    bound = {b.pod for b in plan.bindings}
    touched = bound | {m.pod for m in plan.moves} | {e.pod for e in plan.evictions}
    released: list[Eviction] = []
    for key, pods in sorted(members.items()):
        running = [p for p in pods if p.node is not None]
        waiting = [p for p in pods if p.node is None]
        if not running or not waiting or any(p.key in touched for p in pods):
            continue
        waited = [p.waiting_seconds for p in waiting]
        if any(w is None for w in waited) or min(waited) < after:  # type: ignore[type-var]
            continue
        if any(not p.preemptible for p in running):
            continue
        why = (
            f"releases broken gang {key}: {len(running)} of {len(pods)} members run, the other "
            f"{len(waiting)} waited {min(waited):.0f} s and do not fit; the gang is queued whole"  # type: ignore[type-var]
        )
        released += [Eviction(pod=p.key, node=p.node, reason=why) for p in running]  # type: ignore[arg-type]
    if not released:
        return plan
    return plan.model_copy(update={"evictions": [*plan.evictions, *released]})
