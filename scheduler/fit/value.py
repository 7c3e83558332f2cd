"""What a placed pod is worth in the objective: priority-weighted GPU allocation."""

from __future__ import annotations

from scheduler.model import PackingPolicy, Pod


def pod_value(pod: Pod, policy: PackingPolicy) -> int:
    """milli-GPU x kind weight x (priorityBase + priority), at least 1 per milli; 0 for CPU-only."""
    if pod.gpus == 0:
        return 0
    return (
        pod.milli_total
        * policy.kind_weights.of(pod.kind)
        * max(1, policy.priority_base + pod.priority)
    )
