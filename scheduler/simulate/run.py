"""One simulation: a trace, a cluster, a policy and the schedulers to compare, into a report."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from scheduler.errors import UserError
from scheduler.model import ClusterSnapshot, PackingPolicy
from scheduler.simulate.cluster import describe
from scheduler.simulate.inflation import InflationSettings, inflate
from scheduler.simulate.replay import ReplaySettings, replay
from scheduler.simulate.result import SimReport
from scheduler.simulate.runners import SCHEDULERS
from scheduler.traces.workload import TraceJob

PROTOCOLS = ("replay", "fgd")

# (scheduler, done, total) -> None, for a progress bar
Progress = Callable[[str, int, int], None]


def simulation_policy(policy: PackingPolicy) -> PackingPolicy:
    """The policy with reproducible solving: the same seed must give the same report."""
    solver = policy.solver.model_copy(update={"deterministic": True})
    return policy.model_copy(update={"solver": solver})


def check_trace(jobs: Sequence[TraceJob], inventory: ClusterSnapshot, trace: str) -> None:
    """Trace problems only the cluster reveals: a GPU model it does not have."""
    known = {m.name for m in inventory.gpu_models}
    for job in jobs:
        for pod in job.pods:
            unknown = [m for m in pod.gpu_models if m not in known]
            if unknown:
                raise UserError(
                    f"{trace} line {job.source_line}, column 'gpu_models': unknown GPU model "
                    f"'{unknown[0]}' (the cluster has: {', '.join(sorted(known))})",
                    "fix the row, or simulate on a cluster that has that model",
                )


def _settings(settings: ReplaySettings | InflationSettings) -> dict[str, str]:
    skip = ("failures", "alarms", "snapshot_at", "on_snapshot")  # counted, or output
    out = {to_camel(k): _plain(v) for k, v in asdict(settings).items() if k not in skip}
    if isinstance(settings, ReplaySettings):
        out["gpuFailures"] = str(len(settings.failures))
        out["gpuAlarms"] = str(len(settings.alarms))
    else:
        out["preemption"] = "off (the FGD protocol has no evictions)"
    return out


def _plain(value: object) -> str:
    """A setting as a document writes it (null, true, [0, 1]), not as Python prints it."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, mode="json")
    return json.dumps(value, default=str)


def simulate(
    inventory: ClusterSnapshot,
    jobs: Sequence[TraceJob],
    schedulers: Sequence[str],
    policy: PackingPolicy,
    *,
    trace: str,
    protocol: str = "replay",
    replay_settings: ReplaySettings | None = None,
    inflation_settings: InflationSettings | None = None,
    progress: Progress | None = None,
) -> SimReport:
    replay_settings = replay_settings or ReplaySettings()
    inflation_settings = inflation_settings or InflationSettings()
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol '{protocol}'", f"use one of: {', '.join(PROTOCOLS)}")
    for name in schedulers:
        if name not in SCHEDULERS:
            raise UserError(f"unknown scheduler '{name}'", f"use one of: {', '.join(SCHEDULERS)}")
    if not jobs:
        raise UserError(f"{trace} has no jobs", "give a trace with at least one row")
    if inventory.pods:
        raise UserError(
            "the cluster spec lists pods", "give a cluster with no pods: the trace brings them"
        )
    check_trace(jobs, inventory, trace)
    policy = simulation_policy(policy)
    report = SimReport(
        trace=trace,
        cluster=describe(inventory),
        protocol=protocol,
        gpus=sum(
            1
            for n in inventory.nodes
            for g in range(n.gpus)
            if n.schedulable and policy.takes_new_work(n.health_of(g))
        ),
        settings=_settings(replay_settings if protocol == "replay" else inflation_settings)
        | {"solverTimeLimitSeconds": str(policy.solver.time_limit_seconds)},
    )
    runs, curves = [], []
    for name in schedulers:

        def tick(done: int, total: int, name: str = name) -> None:
            if progress is not None:
                progress(name, done, total)

        if protocol == "replay":
            runs.append(replay(inventory, jobs, name, policy, replay_settings, tick))
        else:
            curves.append(inflate(inventory, jobs, name, policy, inflation_settings, tick))
    return report.model_copy(update={"runs": runs, "curves": curves})
