"""The room a running pod leaves on its node when it is taken off: evicted now, moved once moves
exist. One definition, so that every capacity row of the model that counts freed room (GPUs,
share slots, GPU milli, CPU, memory) counts it alike."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.fit.classes import usable_held
from scheduler.model import Pod


@dataclass(frozen=True)
class Room:
    gpus: int = 0  # whole GPUs that take new work
    slots: int = 0  # share slots: GPUs a share of new work may join
    milli: int = 0  # GPU milli that takes new work
    cpu: int = 0
    mem: int = 0

    def __add__(self, other: Room) -> Room:
        return Room(
            self.gpus + other.gpus,
            self.slots + other.slots,
            self.milli + other.milli,
            self.cpu + other.cpu,
            self.mem + other.mem,
        )

    def times(self, k: int) -> Room:
        return Room(k * self.gpus, k * self.slots, k * self.milli, k * self.cpu, k * self.mem)


def freed_by(signature: tuple, pod: Pod) -> Room:
    """What taking the pod (victim signature `signature`, fit.classes) off its node frees for new
    work. Its GPUs that take no new work stay unusable once freed. A share on a usable GPU may be
    its GPU's only tenant, so it counts as freeing a whole GPU as well as its share slot:
    optimistic, which keeps the model a relaxation (the milli count, used where shares are
    freed, counts the share once)."""
    usable = usable_held(signature)
    share = pod.fractional and usable > 0
    gpus = min(usable, 1) if pod.fractional else usable
    return Room(
        gpus=gpus,
        slots=1 if share else 0,
        milli=pod.gpu_milli if share else 1000 * gpus,
        cpu=pod.cpu_milli,
        mem=pod.memory_mi_b,
    )
