"""When running work moves, as data: which GPU states send pods elsewhere, how many moves a
cycle may make, and what a move and a failure cost. Part of the PackingPolicy (`moves`).

A move is made only where it pays: the GPU-seconds a failure would cost (its chance in the GPU's
state times the work since the pod's last checkpoint and its restart) must exceed the move's own
cost (the restart, or an inference replica's warm-up beside its old copy). Pods on a failed GPU
always move: their work is lost already, and they run nowhere until they do.
"""

from __future__ import annotations

from pydantic import Field

from scheduler.model import limits as lim
from scheduler.model.base import ByKind, Wire
from scheduler.model.snapshot import HealthState, Pod


class KindSeconds(ByKind):
    training: float = Field(
        default=300.0, ge=0, le=lim.MAX_SECONDS, description="Seconds, for training pods."
    )
    fine_tuning: float = Field(
        default=120.0,
        ge=0,
        le=lim.MAX_SECONDS,
        alias="fine-tuning",
        description="Seconds, for fine-tuning pods.",
    )
    inference: float = Field(
        default=60.0, ge=0, le=lim.MAX_SECONDS, description="Seconds, for inference pods."
    )


class FailChances(Wire):
    suspect: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Chance that a suspect GPU fails while its pods still run (warnings are "
        "often false alarms: docs/power-and-health.md).",
    )
    degraded: float = Field(
        default=0.6, ge=0, le=1, description="Chance that a degraded GPU fails while they run."
    )

    def of(self, state: HealthState) -> float:
        if state == HealthState.FAILED:
            return 1.0
        if state == HealthState.DEGRADED:
            return self.degraded
        if state == HealthState.SUSPECT:
            return self.suspect
        return 0.0


class MoveRules(Wire):
    migrate_on: list[HealthState] = Field(
        default_factory=lambda: [HealthState.DEGRADED],
        description="GPU states whose pods are moved to healthy GPUs where that pays (pods on "
        "a failed GPU always move).",
    )
    per_cycle: int = Field(
        default=16,
        ge=0,
        le=lim.MAX_PODS,
        description="Most pods one plan moves (a gang counts each member).",
    )
    per_hour: int | None = Field(
        default=None,
        ge=0,
        le=lim.MAX_PODS,
        description="If set, at most this many moves in any hour: a plan moves no more than "
        "what the snapshot's metadata.movesLastHour leaves.",
    )
    max_in_flight: int = Field(
        default=4,
        ge=0,
        le=lim.MAX_PODS,
        description="Most moves the operator has under way at once (begun, the replacement not "
        "yet in place): a cycle moves no more than what is left. The simulator's moves finish "
        "within their cycle.",
    )
    per_cycle_share: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="If set, a plan also moves at most this share of the running pods "
        "(rounded down): a budget that grows with the cluster.",
    )
    restart_seconds: KindSeconds = Field(
        default_factory=KindSeconds,
        description="Per kind, the seconds a moved pod's GPUs do no work: checkpoint and "
        "restart, or an inference replica's warm-up beside its old copy.",
    )
    since_checkpoint_seconds: float = Field(
        default=1800.0,
        ge=0,
        le=lim.MAX_SECONDS,
        description="Work since the last checkpoint, for a pod that does not say "
        "(secondsSinceCheckpoint): what a failure of its GPU loses.",
    )
    fail_chance: FailChances = Field(
        default_factory=FailChances, description="Chance of failure by GPU state."
    )
    worth_seconds: float = Field(
        default=3600.0,
        ge=0,
        le=lim.MAX_SECONDS,
        description="Defragmentation: what placing a waiting pod now is worth, in seconds of "
        "its GPUs (the wait it saves); moves are made for it only while they cost less.",
    )
    replace_gang_member: bool = Field(
        default=False,
        description="Move only a gang's member on the bad GPU (the job tolerates a replaced "
        "member); false: the whole gang restarts, each member on healthy GPUs.",
    )

    def restart_cost(self, pod: Pod) -> float:
        """GPU-seconds moving the pod costs: its GPUs idle for its kind's restart."""
        return pod.milli_total / 1000 * self.restart_seconds.of(pod.kind)

    def budget(self, running: int, moved_last_hour: int = 0) -> int:
        """Most pods one plan may move, with this many pods running and this many moved in
        the hour before."""
        most = self.per_cycle
        if self.per_cycle_share is not None:
            most = min(most, int(self.per_cycle_share * running))
        if self.per_hour is not None:
            most = min(most, max(0, self.per_hour - moved_last_hour))
        return most
