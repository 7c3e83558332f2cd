"""PackingPolicy: how the planner trades work kinds, priorities, power and solver effort.

Every field has a default, so no policy file is needed; a YAML file overrides any subset.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from scheduler.model import limits as lim
from scheduler.model.base import ByKind, Wire
from scheduler.model.health_rules import HealthRules
from scheduler.model.move_rules import MoveRules
from scheduler.model.snapshot import HealthState, Node, Pod, PodKind


class KindWeights(ByKind):
    training: int = Field(
        default=10,
        ge=0,
        le=lim.MAX_KIND_WEIGHT,
        description="Objective weight per milli-GPU of training.",
    )
    fine_tuning: int = Field(
        default=10,
        ge=0,
        le=lim.MAX_KIND_WEIGHT,
        alias="fine-tuning",
        description="Weight per milli-GPU of fine-tuning.",
    )
    inference: int = Field(
        default=10, ge=0, le=lim.MAX_KIND_WEIGHT, description="Weight per milli-GPU of inference."
    )


class KindPowerFactors(ByKind):
    training: float = Field(default=1.0, ge=0, le=1, description="Share of (TDP - idle) drawn.")
    fine_tuning: float = Field(
        default=0.85, ge=0, le=1, alias="fine-tuning", description="Share of (TDP - idle) drawn."
    )
    inference: float = Field(default=0.6, ge=0, le=1, description="Share of (TDP - idle) drawn.")


class SolverSettings(Wire):
    time_limit_seconds: float = Field(
        default=10.0,
        gt=0,
        le=lim.MAX_TIME_LIMIT_SECONDS,
        description="Wall-clock limit for the solve (LP relaxation, then CP-SAT).",
    )
    workers: int = Field(
        default=0,
        ge=0,
        le=lim.MAX_SOLVER_WORKERS,
        description="CP-SAT search workers; 0 lets the solver use every core.",
    )
    seed: int = Field(
        default=0, ge=0, le=lim.MAX_SEED, description="Random seed, for reproducible plans."
    )
    relative_gap: float = Field(
        default=0.001, ge=0, le=1, description="Stop once the proven gap is at most this."
    )
    deterministic: bool = Field(
        default=False,
        description="Reproducible plans whatever the machine's load: CP-SAT runs one worker and "
        "stops on deterministic time (timeLimitSeconds becomes that budget), and the LP's wall "
        "time never decides whether CP-SAT runs. Simulations set it.",
    )


class PackingPolicy(Wire):
    api_version: str = Field(default="wattpack.io/v1alpha1", description="Format version.")
    kind: str = Field(default="PackingPolicy", description="Object kind.")
    kind_weights: KindWeights = Field(
        default_factory=KindWeights, description="Objective weight per kind (per milli-GPU)."
    )
    priority_base: int = Field(
        default=1000,
        ge=1,
        le=lim.MAX_PRIORITY_BASE,
        description="A pod's value per milli-GPU is kindWeight x (priorityBase + priority), at "
        "least 1; a larger base makes priority matter less against allocation.",
    )
    power_factors: KindPowerFactors = Field(
        default_factory=KindPowerFactors, description="Power model factor per kind."
    )
    new_work_on: list[HealthState] = Field(
        default_factory=lambda: [HealthState.HEALTHY],
        description="GPU health states that take new work (degraded and failed never do); "
        "healthy must be one.",
    )
    inference_max_per_node: int | None = Field(
        default=None,
        ge=1,
        le=lim.MAX_PODS,
        description="Spread inference: at most this many pods of one app per node, for inference "
        "pods with an app and no maxPerNode of their own.",
    )
    preemption: bool = Field(
        default=True, description="Evict lower-priority preemptible pods to place higher ones."
    )
    preempt_inference: bool = Field(
        default=False, description="Allow preempting inference pods (off: serving is protected)."
    )
    starving_gang_seconds: float | None = Field(
        default=None,
        gt=0,
        le=lim.MAX_SECONDS,
        description="A gang pending at least this long (its pods' waitingSeconds) may preempt "
        "preemptible lone pods of its own priority, as if it ranked one higher: backfill "
        "otherwise keeps taking the room a big gang waits for. For workloads that checkpoint. "
        "null = off.",
    )
    broken_gang_release_seconds: float | None = Field(
        default=600.0,
        ge=0,
        le=lim.MAX_SECONDS,
        description="A running gang missing members (partly bound) whose missing members have "
        "waited this long and still do not fit is released: its running members are evicted so "
        "the gang is queued whole. null = never (the running members wait for the rest).",
    )
    checkpoint_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=lim.MAX_SECONDS,
        description="Operator: before it evicts a training or fine-tuning pod that takes part in "
        'the checkpoint handshake (annotation wattpack.io/checkpoints: "true"), it asks for '
        "a checkpoint and waits for the acknowledgement (wattpack.io/checkpointed) at most "
        "this long.",
    )
    reservation_seconds: float = Field(
        default=120.0,
        gt=0,
        le=lim.MAX_SECONDS,
        description="Room freed for a pod by evicting its victims is held for it this long (the "
        "operator binds it once they are gone, and plans nothing else onto that room); after "
        "that, the pod is planned again.",
    )
    health: HealthRules = Field(
        default_factory=HealthRules, description="GPU health rules: signals to states."
    )
    moves: MoveRules = Field(
        default_factory=MoveRules,
        description="Moving running pods: off failing GPUs, how many a cycle, at what cost.",
    )
    solver: SolverSettings = Field(
        default_factory=SolverSettings, description="CP-SAT effort and reproducibility."
    )

    @field_validator("new_work_on")
    @classmethod
    def _healthy_takes_work(cls, states: list[HealthState]) -> list[HealthState]:
        if HealthState.HEALTHY not in states:
            raise ValueError(
                f"newWorkOn {[str(s) for s in states]} leaves out healthy GPUs, so no GPU "
                "could ever take new work; list healthy (and suspect, to use suspect GPUs too)"
            )
        return states

    def spread_limit(self, pod: Pod) -> int | None:
        """Most pods of the pod's app on one node: its maxPerNode, or for inference the policy's
        inferenceMaxPerNode; None = no limit. Every pod's limit binds its whole app."""
        if pod.app is None:
            return None
        if pod.max_per_node is not None:
            return pod.max_per_node
        return self.inference_max_per_node if pod.kind == PodKind.INFERENCE else None

    def takes_new_work(self, state: HealthState) -> bool:
        if state in (HealthState.DEGRADED, HealthState.FAILED):
            return False
        return state in self.new_work_on

    def gpus_taking_work(self, node: Node) -> list[bool]:
        """takes_new_work for each of the node's GPUs by index (its health alone; cordoning
        is the caller's). Most nodes list no health: their GPUs are answered at once."""
        if not node.gpu_health:
            return [self.takes_new_work(HealthState.HEALTHY)] * node.gpus
        return [self.takes_new_work(node.health_of(g)) for g in range(node.gpus)]
