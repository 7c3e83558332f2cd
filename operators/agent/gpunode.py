"""A round as the status of the node's GPUNode resource (manifests/crds): what the agent will
publish with server-side apply. Pure: data in, a status dict out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from operators.agent.rounds import AgentRound
from operators.timestamps import rfc3339
from scheduler.model import HealthState


def gpunode_status(r: AgentRound, observed: datetime | None = None) -> dict[str, Any]:
    gpus = []
    for g in r.gpus:
        rd = g.reading
        entry: dict[str, Any] = {
            "index": rd.index,
            "health": g.health.state.value,
            "reasons": list(g.health.reasons),
            "unsupported": list(rd.unsupported),
        }
        optional = {
            "uuid": rd.uuid,
            "model": rd.name,
            "powerWatts": None if rd.power_mw is None else round(rd.power_mw / 1000),
            "powerLimitWatts": None if rd.power_limit_mw is None else rd.power_limit_mw // 1000,
            "energyMillijoules": rd.energy_mj,
            "temperatureC": rd.temperature_c,
            "utilizationPct": rd.utilization_gpu_pct,
        }
        entry.update({k: v for k, v in optional.items() if v is not None})
        if g.pods:
            entry["pods"] = list(g.pods)
        gpus.append(entry)
    return {
        "observedAt": rfc3339(observed),
        "gpuCount": len(gpus),
        "healthyCount": sum(1 for g in r.gpus if g.health.state == HealthState.HEALTHY),
        "powerWatts": sum(g.get("powerWatts", 0) for g in gpus),
        "gpus": gpus,
    }
