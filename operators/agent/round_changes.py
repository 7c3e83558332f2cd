"""What changed from one round to the next, in a few words per GPU: the running agent logs one
event per round with this list, not the whole round (telemetry that moves every round, such as
power and temperature, is the metrics' job)."""

from __future__ import annotations

from collections import Counter

import structlog

from operators.agent.rounds import AgentGpu, AgentRound

log = structlog.get_logger("wattpack.agent")


def changes(before: AgentRound | None, after: AgentRound) -> list[str]:
    old = {g.reading.index: g for g in before.gpus} if before is not None else {}
    out = []
    for gpu in after.gpus:
        i = gpu.reading.index
        prev = old.get(i)
        if prev is None:
            out.append(f"gpu {i}: found, {_state(gpu)}")
        else:
            out.extend(f"gpu {i}: {c}" for c in _gpu_changes(prev, gpu))
        out.extend(f"gpu {i}: XID {x}" for x in gpu.reading.xids)
    return out


def _gpu_changes(prev: AgentGpu, gpu: AgentGpu) -> list[str]:
    out = []
    if prev.reading.present != gpu.reading.present:
        out.append("answers again" if gpu.reading.present else "not reachable")
    if prev.health.state != gpu.health.state:
        out.append(f"{prev.health.state.value} -> {_state(gpu)}")
    before, now = prev.reading.power_limit_mw, gpu.reading.power_limit_mw
    if before is not None and now is not None and before != now:
        out.append(f"power limit {before / 1000:g} -> {now / 1000:g} W")
    if prev.pods != gpu.pods:
        out.append(f"pods {', '.join(gpu.pods) or 'none'}")
    return out


def _state(gpu: AgentGpu) -> str:
    reasons = "; ".join(gpu.health.reasons)
    return f"{gpu.health.state.value} ({reasons})" if reasons else gpu.health.state.value


class RoundLog:
    """One info event per round: the node, its GPUs by state, and what changed."""

    def __init__(self) -> None:
        self.last: AgentRound | None = None

    def log(self, round_: AgentRound) -> None:
        states = dict(Counter(g.health.state.value for g in round_.gpus))
        log.info("round", node=round_.node, gpus=states, changes=changes(self.last, round_))
        self.last = round_
