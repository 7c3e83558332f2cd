"""What a placed pod is worth in the objective: priority-weighted GPU allocation."""

from __future__ import annotations

from collections.abc import Container, Iterable

from scheduler.errors import UserError
from scheduler.fit.cycle import Cycle, starving
from scheduler.model import PackingPolicy, Pod
from scheduler.model.limits import MAX_TOTAL_VALUE


def pod_value(pod: Pod, policy: PackingPolicy) -> int:
    """milli-GPU x kind weight x (priorityBase + priority), at least 1 per milli; 0 for CPU-only.

    A starving gang ranks one above its priority (fit.cycle.start_cycle) but is worth what its
    own priority says: evicting lone pods of that priority for it then pays only where it
    places more than they held, never for a swap, which would only churn."""
    if pod.gpus == 0:
        return 0
    worth = pod.priority - starving(pod, policy)
    return pod.milli_total * policy.kind_weights.of(pod.kind) * max(1, policy.priority_base + worth)


def check_total_value(pods: Iterable[Pod], policy: PackingPolicy) -> None:
    """Each field is bounded (scheduler.model.limits), but the solver's objective adds every
    pod's value up in int64: refuse a cluster whose sum would not stay exact there."""
    total = sum(pod_value(p, policy) for p in pods)
    if total > MAX_TOTAL_VALUE:
        raise UserError(
            f"the pods' values (milli-GPU x kindWeights x (priorityBase + priority)) add up to "
            f"{total:.3g}, above the {MAX_TOTAL_VALUE:.3g} the solver's integers hold",
            "lower the policy's priorityBase or kindWeights, or the pods' priorities",
        )


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
