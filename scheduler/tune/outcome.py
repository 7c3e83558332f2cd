"""What a tuning run reports: the Pareto front with each policy's scores on the tuning slice and
on the holdout, the default policy's scores beside them, and the policy chosen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from scheduler.model.base import Wire
from scheduler.traces.workload import TraceJob
from scheduler.tune.search import OBJECTIVES, Scores


class Scored(Wire):
    allocation_while_waiting: float = Field(description="Time-weighted, while work waited.")
    inference_p95_wait_seconds: float = Field(description="95th percentile inference wait.")
    lost_gpu_hours: float = Field(description="Work lost to evictions, failures and moves.")
    budget_violations: int = Field(description="Events over a power budget (must be 0).")

    @classmethod
    def of(cls, s: Scores) -> Scored:
        return cls(
            allocation_while_waiting=round(s.allocation_while_waiting, 6),
            inference_p95_wait_seconds=round(s.inference_p95_wait_seconds, 3),
            lost_gpu_hours=round(s.lost_gpu_hours, 4),
            budget_violations=s.budget_violations,
        )

    def scores(self) -> Scores:
        return Scores(
            self.allocation_while_waiting,
            self.inference_p95_wait_seconds,
            self.lost_gpu_hours,
            self.budget_violations,
        )


class Entry(Wire):
    label: str = Field(description="'default', or 'trial N' of the study.")
    params: dict[str, Any] = Field(description="The searched values (empty for the default).")
    tuning: Scored = Field(description="Scores on the tuning slice.")
    holdout: Scored | None = Field(description="Scores on the holdout; null if not scored.")


class TuneReport(Wire):
    api_version: str = Field(default="wattpack.io/v1alpha1")
    kind: str = Field(default="TuningReport")
    study: str = Field(description="Study name.")
    storage: str = Field(description="Where the study lives (password hidden).")
    trace: str = Field(description="What was replayed, and how it was split.")
    objectives: list[str] = Field(default=list(OBJECTIVES))
    trials: int = Field(description="Finished trials in the study.")
    infeasible: int = Field(description="Trials that broke a power budget (or failed).")
    default: Entry = Field(description="The base policy, scored the same way.")
    front: list[Entry] = Field(description="Feasible Pareto-best trials, best allocation first.")
    chosen: str = Field(description="The entry written as the chosen policy.")
    why: str = Field(description="Why that one.")
    importances: dict[str, float] = Field(
        default_factory=dict, description="Parameter importance for the allocation objective."
    )


def choose(default: Entry, front: Sequence[Entry]) -> tuple[str, str]:
    """The front entry that beats the default on the holdout on at least one objective and
    loses on none, best holdout allocation first; else the default."""
    if default.holdout is None:
        return default.label, "nothing was scored on a holdout"
    base = default.holdout.scores()
    good = []
    for e in front:
        if e.holdout is None or e.holdout.budget_violations:
            continue
        better, worse = e.holdout.scores().beats(base)
        if better and not worse:
            good.append(e)
    if not good:
        return default.label, (
            "no policy on the front beat the default on the holdout without losing on another "
            "objective (overfitting to the tuning slice, or the default is already on the front)"
        )
    best = max(good, key=lambda e: (e.holdout.allocation_while_waiting, -front.index(e)))  # type: ignore[union-attr]
    return best.label, "beats the default on the holdout on at least one objective, loses on none"


def split(jobs: Sequence[TraceJob], holdout: float) -> tuple[list[TraceJob], list[TraceJob]]:
    """The trace cut in time: the first (1 - holdout) of its arrivals to tune on, the later
    ones to check against (a later slice: what the tuned policy meets next)."""
    ordered = sorted(jobs, key=lambda j: (j.submit, j.name))
    cut = round(len(ordered) * (1 - holdout))
    return ordered[:cut], ordered[cut:]
