"""What a simulation reports: per-run metrics and timelines, and FGD-protocol curves.

Everything here is plain data, written as JSON and drawn as the HTML report. Wall-clock figures
live only under `timings`, so two runs with the same seed give the same report outside it.
"""

from __future__ import annotations

from pydantic import Field

from scheduler.model.base import Wire


class Percentiles(Wire):
    count: int = Field(description="How many values.")
    p50: float = Field(description="Median.")
    p95: float = Field(description="95th percentile.")
    max: float = Field(description="Largest value.")


class DomainPower(Wire):
    domain: str = Field(description="Power domain name.")
    budget_watts: int | None = Field(description="Its hard budget; null = none.")
    peak_watts: int = Field(description="Highest draw at any event.")
    mean_watts: float = Field(description="Time-weighted mean draw.")
    violations: int = Field(description="Events at which the draw exceeded the budget (must be 0).")


class KindWaits(Wire):
    kind: str = Field(description="training | fine-tuning | inference.")
    started: int = Field(description="Pods of this kind that started.")
    never_started: int = Field(description="Pods still waiting when the replay ended.")
    wait_seconds: Percentiles = Field(description="Queue wait from submit to start, seconds.")
    censored_wait_seconds: Percentiles | None = Field(
        default=None,
        description="Queue wait with each pod that never started counted as waiting until the "
        "replay ended (censored there: its real wait is longer), seconds; count - started = "
        "the pods that never started. null in reports written before it.",
    )


class Timeline(Wire):
    """Sampled at every event, thinned to at most a few thousand points for plotting."""

    t: list[float] = Field(description="Simulated seconds.")
    allocation: list[float] = Field(description="Allocated milli-GPU / usable capacity.")
    busy_gpus: list[float] = Field(description="Share of usable GPUs with any work.")
    bound: list[float] = Field(
        description="Power-feasible maximum allocation for the work present (running + waiting)."
    )
    queue: list[int] = Field(description="Pods waiting.")
    power: dict[str, list[int]] = Field(
        description="Watts per budgeted domain (the root and rows at most), by domain name."
    )


class RunTimings(Wire):
    cycle_seconds: Percentiles = Field(
        description="Wall time per scheduling cycle (wattpack) or per scheduling pass (baselines)."
    )
    total_seconds: float = Field(description="Wall time of the whole run.")


class RunResult(Wire):
    scheduler: str = Field(description="wattpack | spread | binpack | volcano-binpack | ...")
    jobs: int = Field(description="Jobs in the trace.")
    pods: int = Field(description="Pods in the trace.")
    unplaceable: int = Field(
        default=0,
        description="Pods that fit on no node even of the empty cluster; never queued, and "
        "not counted as waiting work.",
    )
    gpu_failures: int = Field(default=0, description="GPUs that failed (injected).")
    gpu_alarms: int = Field(
        default=0, description="GPUs that turned degraded before failing or as false alarms."
    )
    pods_killed: int = Field(
        default=0, description="Pods killed by a GPU failure (a gang whole) and queued again."
    )
    gpu_seconds_lost: float = Field(
        default=0.0,
        description="GPU-seconds of work lost: what the killed and evicted pods had done (no "
        "checkpoints: each restarts from the beginning), plus the planned cost of each move.",
    )
    started: int = Field(description="Pods that started.")
    finished: int = Field(description="Pods that ran to the end of their duration.")
    evictions: int = Field(description="Pods evicted by preemption (each re-queued).")
    moves: int = Field(
        default=0,
        description="Running pods moved (migration, defragmentation); each move's planned "
        "cost counts in gpuSecondsLost.",
    )
    cycles: int = Field(description="Scheduling cycles (wattpack) or passes (baselines).")
    span_seconds: float = Field(description="Simulated time from first arrival to last event.")
    allocation: float = Field(description="Time-weighted allocation over the span.")
    busy_gpus: float = Field(description="Time-weighted share of GPUs with any work.")
    waiting_seconds: float = Field(
        description="Simulated time during which work waited: pods the scheduler had tried and "
        "could not place (arrivals it has not looked at yet do not count)."
    )
    allocation_while_waiting: float = Field(
        description="Time-weighted allocation while work waited (null-safe: 0 if never)."
    )
    share_at_90_while_waiting: float = Field(
        description="Share of the waiting time with allocation at 90% or more."
    )
    bound_while_waiting: float = Field(
        description="Time-weighted power-feasible maximum allocation while work waited."
    )
    of_bound_while_waiting: float = Field(
        description="allocationWhileWaiting / boundWhileWaiting (1 when nothing waited)."
    )
    unallocated_gpus_while_waiting: float = Field(
        description="Mean unallocated GPU capacity, in GPUs, while work waited (at saturation)."
    )
    idle_gpus_while_waiting: float = Field(
        description="Mean number of GPUs with no work at all while work waited."
    )
    budget_violations: int = Field(description="Events with any domain over budget (must be 0).")
    power: list[DomainPower] = Field(description="Per budgeted domain (all of them).")
    waits: list[KindWaits] = Field(description="Queue waits per kind.")
    timeline: Timeline = Field(description="Series for the plots.")
    timings: RunTimings = Field(description="Wall-clock figures; the only non-reproducible part.")


class InflationCurve(Wire):
    """The FGD protocol for one scheduler: allocation as arrived demand grows, over seeds."""

    scheduler: str = Field(description="Scheduler name.")
    seeds: list[int] = Field(description="Random seeds, one run each.")
    demand: list[float] = Field(description="Arrived GPU requests / GPU capacity at each level.")
    milli: list[list[float]] = Field(description="Per seed, milli-GPU allocation at each level.")
    whole: list[list[float]] = Field(
        description="Per seed, share of GPUs with any work, at each level."
    )
    unallocated_gpus: list[float] = Field(
        description="Per seed, unallocated GPU capacity in GPUs at the last level."
    )
    moves: int = Field(default=0, description="Running pods moved, over every seed.")
    move_gpu_seconds: float = Field(
        default=0.0, description="The planned cost of those moves, in GPU-seconds."
    )
    timings: RunTimings = Field(description="Wall-clock figures; the only non-reproducible part.")


class SimReport(Wire):
    api_version: str = Field(default="wattpack.io/v1alpha1", description="Format version.")
    kind: str = Field(default="SimulationReport", description="Object kind.")
    trace: str = Field(description="What was replayed (files and options).")
    cluster: str = Field(description="The cluster: name, nodes, GPUs, budgets.")
    protocol: str = Field(description="replay | fgd")
    gpus: int = Field(description="Usable GPUs in the cluster.")
    settings: dict[str, str] = Field(description="Simulation settings, as given.")
    runs: list[RunResult] = Field(default_factory=list, description="Replay results.")
    curves: list[InflationCurve] = Field(default_factory=list, description="FGD-protocol curves.")
