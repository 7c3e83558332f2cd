"""GPU failures to inject into a replay: a fixed list, or a seeded random schedule.

A failed GPU stays failed for the rest of the replay (repair is not modelled). The work on it is
killed and queued again from the start: what a failure costs without a checkpoint, and what
migration off degrading GPUs will save.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from scheduler.errors import UserError
from scheduler.model import ClusterSnapshot


@dataclass(frozen=True)
class GpuFailure:
    time: float  # simulated seconds (after arrival scaling)
    node: str
    gpu: int


def random_failures(
    inventory: ClusterSnapshot, per_1000_gpu_days: float, start: float, end: float, seed: int
) -> tuple[GpuFailure, ...]:
    """Failures as a Poisson process over all GPUs at the given rate; each GPU fails once."""
    if per_1000_gpu_days < 0:
        raise UserError(
            f"GPU failure rate {per_1000_gpu_days} is negative", "give a rate of 0 or more"
        )
    gpus = [(n.name, g) for n in inventory.nodes for g in range(n.gpus)]
    rate = per_1000_gpu_days / 1000 * len(gpus) / 86_400  # cluster-wide, per second
    rng = random.Random(seed)
    rng.shuffle(gpus)
    out: list[GpuFailure] = []
    t = start
    while rate > 0 and gpus:
        t += rng.expovariate(rate)
        if t > end:
            break
        node, gpu = gpus.pop()
        out.append(GpuFailure(t, node, gpu))
    return tuple(out)
