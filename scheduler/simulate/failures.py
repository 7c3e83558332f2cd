"""GPU failures to inject into a replay: a fixed list, or a seeded random schedule; and the
alarms that come before some of them.

A failed GPU stays failed for the rest of the replay (repair is not modelled). The work on it is
killed and queued again, from its last checkpoint where the replay has checkpoints, else from
the start. An alarm turns a GPU degraded: it takes no new work, and a scheduler that migrates
moves its pods off before it fails. The degradation model (docs/power-and-health.md: warnings
are often false alarms, some failures give none, the lead is hours) has three settings, each a
field of Degradation.
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


@dataclass(frozen=True)
class GpuAlarm:
    time: float  # the GPU turns degraded
    node: str
    gpu: int


@dataclass(frozen=True)
class Degradation:
    warned_share: float = 0.7  # failures that raise an alarm first (XID 79 or GSP: none)
    mean_lead_seconds: float = 6 * 3600.0  # first alarm to failure: exponential, this mean
    false_alarms: float = 0.5  # GPUs that degrade and never fail, per failure
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.warned_share <= 1:
            raise UserError(
                f"warned share {self.warned_share} is not in [0, 1]", "give a share of failures"
            )
        if self.mean_lead_seconds < 0 or self.false_alarms < 0:
            raise UserError(
                "lead time and false alarms may not be negative", "give values of 0 or more"
            )


def alarms_for(
    inventory: ClusterSnapshot,
    failures: tuple[GpuFailure, ...],
    model: Degradation,
    start: float,
    end: float,
) -> tuple[GpuAlarm, ...]:
    """Alarms before a share of the failures (a lead drawn for each; not before `start`), and
    false alarms on GPUs that never fail, at uniform times in [start, end]."""
    rng = random.Random(model.seed)
    out = [
        GpuAlarm(max(start, f.time - rng.expovariate(1 / model.mean_lead_seconds)), f.node, f.gpu)
        if model.mean_lead_seconds > 0
        else GpuAlarm(f.time, f.node, f.gpu)
        for f in failures
        if rng.random() < model.warned_share
    ]
    failing = {(f.node, f.gpu) for f in failures}
    healthy = [(n.name, g) for n in inventory.nodes for g in range(n.gpus)]
    healthy = [ng for ng in healthy if ng not in failing]
    rng.shuffle(healthy)
    for node, gpu in healthy[: round(model.false_alarms * len(failures))]:
        out.append(GpuAlarm(rng.uniform(start, end), node, gpu))
    return tuple(sorted(out, key=lambda a: (a.time, a.node, a.gpu)))
