"""What a placed pod is worth in the objective: priority-weighted GPU allocation."""

from __future__ import annotations

from collections.abc import Container, Iterable

from scheduler.fit.cycle import Cycle, starving
from scheduler.model import PackingPolicy, Pod


def pod_value(pod: Pod, policy: PackingPolicy) -> int:
    """milli-GPU x kind weight x (priorityBase + priority), at least 1 per milli; 0 for CPU-only.

    A starving gang ranks one above its priority (fit.cycle.start_cycle) but is worth what its
    own priority says: evicting lone pods of that priority for it then pays only where it
    places more than they held, never for a swap, which would only churn."""
    if pod.gpus == 0:
        return 0
    worth = pod.priority - starving(pod, policy)
    return pod.milli_total * policy.kind_weights.of(pod.kind) * max(1, policy.priority_base + worth)


def plan_value(
    pending: Iterable[Pod],
    placed: Container[str],
    evicted: Iterable[Pod],
    policy: PackingPolicy,
) -> int:
    """What a cycle adds: the value of the pods it places minus that of the pods it preempts."""
    gained = sum(pod_value(p, policy) for p in pending if p.key in placed)
    return gained - sum(pod_value(v, policy) for v in evicted)


def pending_values(cycle: Cycle) -> dict[str, tuple[int, int]]:
    """pod_value and GPU milli of every pending pod of the cycle, by key, worked out once."""
    if not cycle.values and cycle.pending:
        cycle.values.update(
            (p.key, (pod_value(p, cycle.policy), p.milli_total)) for p in cycle.pending
        )
    return cycle.values
