"""The cluster snapshot (v1alpha1): what `wattpack export` writes and `plan` reads.

Field names and meanings follow docs/snapshot-format.md; every field carries a description so that
`wattpack schema snapshot` documents the contract.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, model_validator

from scheduler.model import limits as lim
from scheduler.model.base import Wire
from scheduler.model.consistency import snapshot_problems
from scheduler.model.node_rules import HostPort, PreferredTerm, SelectorTerm, Taint, Toleration
from scheduler.model.pod_rules import PodAffinityTerm, SpreadConstraint

# Resources other than GPUs, CPU and memory, in their base unit.
Resources = dict[str, Annotated[int, Field(ge=0, le=lim.MAX_RESOURCE)]]


class PodKind(StrEnum):
    TRAINING = "training"
    FINE_TUNING = "fine-tuning"
    INFERENCE = "inference"


class MoveBy(StrEnum):
    """How a running pod can move, by what recreates it."""

    SURGE = "surge"  # a replica starts first; the old copy stops once it runs
    RESTART = "restart"  # it stops (after a checkpoint) and starts again elsewhere
    NONE = "none"  # nothing would recreate it: it never moves


class HealthState(StrEnum):
    HEALTHY = "healthy"
    SUSPECT = "suspect"
    DEGRADED = "degraded"
    FAILED = "failed"


class GpuModel(Wire):
    name: str = Field(description="GPU model name that nodes and pods refer to, e.g. H100-SXM.")
    tdp_watts: int = Field(
        gt=0, le=lim.MAX_GPU_WATTS, description="Board power at full load (TDP), in watts."
    )
    idle_watts: int = Field(
        ge=0,
        le=lim.MAX_GPU_WATTS,
        description="Power drawn by the GPU with no work on it, in watts.",
    )
    memory_mi_b: int = Field(
        default=0,
        ge=0,
        le=lim.MAX_MEMORY_MIB,
        alias="memoryMiB",
        description="GPU memory in MiB (informational).",
    )

    @model_validator(mode="after")
    def _idle_below_tdp(self) -> GpuModel:
        if self.idle_watts > self.tdp_watts:
            raise ValueError(
                f"gpuModels[{self.name}].idleWatts {self.idle_watts} exceeds tdpWatts "
                f"{self.tdp_watts}; idle power must be at most the TDP"
            )
        return self


class PowerDomain(Wire):
    name: str = Field(description="Unique domain name (facility, row, rack, ...).")
    parent: str | None = Field(default=None, description="Parent domain; null for a root.")
    budget_watts: int | None = Field(
        default=None,
        ge=0,
        le=lim.MAX_BUDGET_WATTS,
        description="Hard power budget of everything below this domain, in watts; null = none.",
    )


class GpuHealth(Wire):
    index: int = Field(ge=0, lt=lim.MAX_GPUS_PER_NODE, description="GPU index on the node.")
    state: HealthState = Field(description="healthy | suspect | degraded | failed.")
    reasons: list[str] = Field(default_factory=list, description="Why the GPU is in this state.")


class Node(Wire):
    name: str = Field(description="Node name.")
    power_domain: str = Field(description="The leaf power domain the node's GPUs count against.")
    gpu_model: str = Field(description="Model of every GPU on this node (a name in gpuModels).")
    gpus: int = Field(ge=0, le=lim.MAX_GPUS_PER_NODE, description="Number of GPUs on the node.")
    cpu_milli: int = Field(ge=0, le=lim.MAX_CPU_MILLI, description="Allocatable CPU in millicores.")
    memory_mi_b: int = Field(
        ge=0, le=lim.MAX_MEMORY_MIB, alias="memoryMiB", description="Allocatable memory in MiB."
    )
    schedulable: bool = Field(default=True, description="false = cordoned: takes no new work.")
    gpu_health: list[GpuHealth] = Field(
        default_factory=list, description="Per-GPU health; GPUs not listed are healthy."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Node labels (node selectors and affinity read them)."
    )
    resources: Resources = Field(
        default_factory=dict,
        description="Allocatable resources other than GPUs, CPU and memory, in the resource's "
        "base unit (bytes for ephemeral-storage and hugepages-*, a count for extended "
        "resources such as rdma/hca): a resource it does not list, it has none of.",
    )
    taints: list[Taint] = Field(
        default_factory=list,
        description="Taints: a pod that does not tolerate a NoSchedule or NoExecute one does not "
        "go here (a cordoned node has node.kubernetes.io/unschedulable:NoSchedule).",
    )

    def health_of(self, index: int) -> HealthState:
        for entry in self.gpu_health:
            if entry.index == index:
                return entry.state
        return HealthState.HEALTHY


class Gang(Wire):
    name: str = Field(description="Gang name, unique within the namespace.")
    size: int = Field(
        ge=1, le=lim.MAX_PODS, description="Number of member pods; all run or none does."
    )


class Pod(Wire):
    name: str = Field(description="Pod name.")
    namespace: str = Field(default="default", description="Pod namespace.")
    kind: PodKind = Field(description="training | fine-tuning | inference.")
    priority: int = Field(
        default=0,
        ge=lim.MIN_PRIORITY,
        le=lim.MAX_PRIORITY,
        description="Scheduling priority; higher wins (Kubernetes' int32 range).",
    )
    gpus: int = Field(
        default=1,
        ge=0,
        le=lim.MAX_GPUS_PER_NODE,
        description="Whole GPUs; with gpus 1 and gpuMilli < 1000, a share of one.",
    )
    gpu_milli: int = Field(
        default=1000,
        description="Thousandths of each GPU (1..1000); below 1000 only with gpus 1.",
    )
    gpu_models: list[str] = Field(
        default_factory=list, description="Acceptable GPU models; empty = any."
    )
    cpu_milli: int = Field(
        default=0, ge=0, le=lim.MAX_CPU_MILLI, description="CPU request in millicores."
    )
    memory_mi_b: int = Field(
        default=0,
        ge=0,
        le=lim.MAX_MEMORY_MIB,
        alias="memoryMiB",
        description="Memory request in MiB.",
    )
    gang: Gang | None = Field(default=None, description="All-or-nothing group; null for none.")
    app: str | None = Field(
        default=None, description="Pods with the same app spread by maxPerNode."
    )
    max_per_node: int | None = Field(
        default=None,
        ge=1,
        le=lim.MAX_PODS,
        description="At most this many pods of the same app on one node.",
    )
    preemptible: bool = Field(default=True, description="May be evicted for higher priority work.")
    move_by: MoveBy | None = Field(
        default=None,
        description="How it may move: surge (a replica runs first; the owner allows a surge), "
        "restart, or none (nothing recreates it, so it never moves); null: by kind, an "
        "inference pod outside a gang surges and any other restarts.",
    )
    power_watts_per_gpu: int | None = Field(
        default=None,
        ge=0,
        le=lim.MAX_GPU_WATTS,
        description="Overrides the power model: watts per GPU (whole GPU).",
    )
    node: str | None = Field(default=None, description="Current node; null = pending.")
    gpu_indices: list[int] = Field(default_factory=list, description="GPUs the pod holds now.")
    seconds_since_checkpoint: float | None = Field(
        default=None,
        ge=0,
        le=lim.MAX_SECONDS,
        description="A running pod's work since its last checkpoint, in seconds: what a failure "
        "of its GPU would lose; null = the policy's moves.sinceCheckpointSeconds.",
    )
    resources: Resources = Field(
        default_factory=dict,
        description="Requests of resources other than GPUs, CPU and memory, in the resource's "
        "base unit (NodeResourcesFit: a node must have them free).",
    )
    host_ports: list[HostPort] = Field(
        default_factory=list, description="Ports it binds on its node (NodePorts)."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the pod tolerates."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels a node must have (nodeSelector)."
    )
    node_affinity: list[SelectorTerm] | None = Field(
        default=None,
        description="Required node affinity: a node matching any of the terms; null = any.",
    )
    preferred_node_affinity: list[PreferredTerm] = Field(
        default_factory=list,
        description="Preferred node affinity: where a plan can choose among nodes at no cost "
        "to what it places, it takes the one these weigh highest.",
    )
    waiting_seconds: float | None = Field(
        default=None,
        ge=0,
        le=lim.MAX_SECONDS,
        description="How long a pending pod has waited, as of the snapshot (the policy's "
        "starvingGangSeconds reads it); null = not known.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Pod labels (other pods' affinity terms and spread constraints read them).",
    )
    pod_affinity: list[PodAffinityTerm] = Field(
        default_factory=list,
        description="Required pod affinity: each term's pods run in the node's domain.",
    )
    pod_anti_affinity: list[PodAffinityTerm] = Field(
        default_factory=list,
        description="Required pod anti-affinity: no term's pod runs in the node's domain.",
    )
    topology_spread: list[SpreadConstraint] = Field(
        default_factory=list,
        description="Topology spread constraints with whenUnsatisfiable DoNotSchedule.",
    )

    @cached_property
    def key(self) -> str:
        # Cached: planners look pods up by key hundreds of thousands of times a cycle.
        return f"{self.namespace}/{self.name}"

    def model_copy(self, *, update=None, deep: bool = False):  # type: ignore[no-untyped-def]
        copy = super().model_copy(update=update, deep=deep)
        # model_copy copies the instance dict, cached keys included: the names may have changed.
        copy.__dict__.pop("key", None)
        copy.__dict__.pop("gang_key", None)
        copy.__dict__.pop("rules_key", None)
        return copy

    @cached_property
    def rules_key(self) -> str:
        """What kube-scheduler's node filters read of the pod (tolerations, nodeSelector,
        required node affinity) as one string, '' for nothing: pods alike in it are alike to
        the filters. Cached: asked for every node a look-up considers."""
        if not self.tolerations and not self.node_selector and self.node_affinity is None:
            return ""

        def reqs(rs: list) -> tuple:  # type: ignore[type-arg]
            return tuple((r.key, r.operator, tuple(r.values)) for r in rs)

        tolerations = tuple(
            (t.key, t.operator, t.value, None if t.effect is None else str(t.effect))
            for t in self.tolerations
        )
        affinity = (
            None
            if self.node_affinity is None
            else tuple(
                (reqs(t.match_expressions), reqs(t.match_fields)) for t in self.node_affinity
            )
        )
        return repr((tolerations, tuple(sorted(self.node_selector.items())), affinity))

    @cached_property
    def gang_key(self) -> str | None:
        return f"{self.namespace}/{self.gang.name}" if self.gang else None

    @property
    def neighbour_rules(self) -> bool:
        """Whether where it may go depends on other pods (inter-pod affinity, spread)."""
        return bool(self.pod_affinity or self.pod_anti_affinity or self.topology_spread)

    @property
    def movable(self) -> bool:
        """Whether a plan may move it: preemptible, and something recreates it."""
        return self.preemptible and self.move_by != MoveBy.NONE

    @property
    def fractional(self) -> bool:
        return self.gpus == 1 and self.gpu_milli < 1000

    @property
    def milli_total(self) -> int:
        """GPU capacity the pod takes, in milli-GPU (whole GPUs x 1000, or its share)."""
        return self.gpu_milli if self.fractional else self.gpus * 1000


class DisruptionBudget(Wire):
    """A PodDisruptionBudget as the planner needs it: the pods it covers (its selector, resolved
    when the snapshot is made) and how many of them may be disrupted now."""

    name: str = Field(description="The budget's name.")
    namespace: str = Field(default="default", description="The budget's namespace.")
    pods: list[str] = Field(
        default_factory=list,
        description="Keys (namespace/name) of the pods it covers; pods not in the snapshot are "
        "ignored.",
    )
    disruptions_allowed: int = Field(
        default=0,
        ge=0,
        le=lim.MAX_PODS,
        description="How many covered pods may be evicted or moved now (the budget's "
        "status.disruptionsAllowed; 0 while the budget has not been observed).",
    )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class SnapshotMeta(Wire):
    name: str = Field(default="snapshot", description="Cluster or snapshot name.")
    exported_at: str | None = Field(default=None, description="When it was exported (RFC 3339).")
    moves_last_hour: int = Field(
        default=0,
        ge=0,
        le=lim.MAX_PODS,
        description="Running pods the scheduler moved in the hour before the snapshot: they "
        "count against the policy's moves.perHour.",
    )


class ClusterSnapshot(Wire):
    api_version: Literal["wattpack.io/v1alpha1"] = Field(
        default="wattpack.io/v1alpha1", description="Format version."
    )
    kind: Literal["ClusterSnapshot"] = Field(default="ClusterSnapshot", description="Object kind.")
    metadata: SnapshotMeta = Field(default_factory=SnapshotMeta, description="Snapshot metadata.")
    gpu_models: list[GpuModel] = Field(description="GPU models present in the cluster.")
    power_domains: list[PowerDomain] = Field(
        default_factory=list,
        description="Power-domain tree; every GPU counts against all ancestors.",
    )
    nodes: list[Node] = Field(max_length=lim.MAX_NODES, description="GPU nodes.")
    pods: list[Pod] = Field(
        default_factory=list, max_length=lim.MAX_PODS, description="Running and pending pods."
    )
    namespace_labels: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Labels of namespaces, by name (affinity terms' namespaceSelector reads "
        "them); a namespace not listed has none.",
    )
    disruption_budgets: list[DisruptionBudget] = Field(
        default_factory=list,
        description="PodDisruptionBudgets: no plan evicts or moves more of a budget's pods than "
        "it allows.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSnapshot:
        problems = snapshot_problems(self)
        if problems:
            raise ValueError(problems[0])
        return self
