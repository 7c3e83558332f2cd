"""Power limits from the GPUNode's spec.powerLimits onto the GPUs.

`cap_changes` is the decision (pure): which GPUs need a set, and to what, clamped to the
limits the GPU allows. `PowerCaps` carries it out through the backend each round; a failed set
is logged and tried again next round, never fatal.

A GPU may enforce something other than what was set (another limit binds, or the driver rounds
the value). Setting it again each round would change nothing, so once a set has been made, the
limit the GPU then shows is accepted for that ask until the GPU shows a different one (a reset
that restored the default, someone else's `nvidia-smi -pl`) or the ask changes. When an ask
is removed from spec.powerLimits, the GPU goes back to its default limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from operators.agent.rounds import AgentRound
from operators.nvml.reading import GpuReading

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CapChange:
    index: int
    asked: int  # watts, as spec.powerLimits says
    target: int  # watts, clamped to what the GPU allows
    current: int  # watts the GPU enforces now


def clamp(watts: int, reading: GpuReading) -> int:
    """`watts` within the GPU's settable range; the bounds are rounded inwards to whole watts
    so that the result is always settable."""
    out = watts
    if reading.power_limit_max_mw is not None:
        out = min(out, reading.power_limit_max_mw // 1000)
    if reading.power_limit_min_mw is not None:
        out = max(out, math.ceil(reading.power_limit_min_mw / 1000))
    return out


def cap_changes(
    readings: Iterable[GpuReading],
    desired: Mapping[int, int],
    settled: Mapping[int, tuple[int, int]] | None = None,
) -> list[CapChange]:
    """The sets to make, by GPU index. `settled` maps a GPU to (target, limit it showed after
    that target was set): such a GPU is left alone while both still hold. A GPU that is not
    present, or whose limit cannot be read, is skipped: a set would fail or could not be
    checked."""
    settled = settled or {}
    by_index = {r.index: r for r in readings}
    out = []
    for index, asked in sorted(desired.items()):
        r = by_index.get(index)
        if r is None or not r.present or r.power_limit_mw is None:
            continue
        target = clamp(asked, r)
        current = r.power_limit_mw // 1000
        if current == target or settled.get(index) == (target, current):
            continue
        out.append(CapChange(index=index, asked=asked, target=target, current=current))
    return out


class CapBackend(Protocol):
    def set_power_limit(self, index: int, watts: int) -> int: ...


class PowerCaps:
    def __init__(self, backend: CapBackend, node: str) -> None:
        self.backend = backend
        self.node = node
        self._settled: dict[int, tuple[int, int]] = {}
        self._just_set: dict[int, int] = {}  # index -> target set last round
        self._unknown: set[tuple[int, int]] = set()  # asks for GPUs this node lacks, logged
        self._capped: set[int] = set()  # GPUs with an ask, until their default is back

    def apply(self, round_: AgentRound, desired: Mapping[int, int]) -> dict[int, int]:
        """Make the sets this round's readings call for; the enforced watts per GPU set."""
        readings = [g.reading for g in round_.gpus]
        by_index = {r.index: r for r in readings}
        for index, target in self._just_set.items():
            r = by_index.get(index)
            if r is not None and r.power_limit_mw is not None:
                self._settled[index] = (target, r.power_limit_mw // 1000)
        self._just_set = {}
        for index, watts in desired.items():
            if index not in by_index and (index, watts) not in self._unknown:
                self._unknown.add((index, watts))
                log.warning("power_limit_for_unknown_gpu", node=self.node, gpu=index, watts=watts)
        effective = dict(desired)
        # A GPU whose ask was removed goes back to its default limit, once; then it is not ours.
        for index in sorted(self._capped - set(desired)):
            r = by_index.get(index)
            if r is None or r.power_limit_default_mw is None or r.power_limit_mw is None:
                continue
            default = r.power_limit_default_mw // 1000
            if r.power_limit_mw // 1000 == default:
                self._capped.discard(index)
                self._settled.pop(index, None)
                log.info("power_limit_lifted", node=self.node, gpu=index, watts=default)
            else:
                effective[index] = default
        self._capped |= set(desired)
        enforced: dict[int, int] = {}
        for ch in cap_changes(readings, effective, self._settled):
            try:
                enforced[ch.index] = self.backend.set_power_limit(ch.index, ch.target)
            except Exception as e:  # one GPU refusing never stops the others or the agent
                log.error(
                    "power_limit_set_failed",
                    node=self.node,
                    gpu=ch.index,
                    watts=ch.target,
                    error=str(e),
                )
                continue
            self._just_set[ch.index] = ch.target
            log.info(
                "power_limit_set",
                node=self.node,
                gpu=ch.index,
                asked_w=ch.asked,
                target_w=ch.target,
                was_w=ch.current,
                enforced_w=enforced[ch.index],
            )
        return enforced
