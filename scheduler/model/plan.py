"""The plan: what a scheduling cycle decides. A dry run prints it; the operator applies it."""

from __future__ import annotations

from pydantic import Field

from scheduler.model.base import Wire


class Binding(Wire):
    pod: str = Field(description="namespace/name of a pending pod.")
    node: str = Field(description="Node it goes to.")
    gpu_indices: list[int] = Field(
        description="GPUs it gets (a fractional pod: the one it shares)."
    )


class Eviction(Wire):
    pod: str = Field(description="namespace/name of a running pod to evict.")
    node: str = Field(description="Node it runs on now.")
    reason: str = Field(description="Why, e.g. which pod preempted it.")


class Move(Wire):
    """A running pod relocated (checkpoint, stop, start elsewhere): defragmentation or migration."""

    pod: str = Field(description="namespace/name of a running pod.")
    from_node: str = Field(description="Node it runs on now.")
    to_node: str = Field(description="Node it moves to.")
    gpu_indices: list[int] = Field(description="GPUs it gets on to_node.")
    cost: float = Field(ge=0, description="Cost of the move (e.g. GPU-seconds of lost work).")
    restart: bool = Field(
        default=False,
        description="The pod stops before it starts again on to_node, whatever its kind (a "
        "repack that trades places); false: an inference pod surges (its replica first), any "
        "other restarts.",
    )
    reason: str = Field(
        description="Why it moves: 'failure: GPU node/i failed', or 'migration: GPU node/i "
        "degraded (risk R > cost C GPU-seconds)'."
    )


class Shortfall(Wire):
    resource: str = Field(description="gpu | gpuMilli | cpuMilli | memoryMiB | power | model | ...")
    domain: str = Field(description="Where it runs short: a node, a power domain or 'cluster'.")
    amount: int = Field(
        description="By how much (in the resource's unit) the best place falls short."
    )


class Unplaced(Wire):
    pod: str = Field(description="namespace/name of a pod that stays pending.")
    reason: str = Field(description="One readable line: which resource, where, by how much.")
    shortfalls: list[Shortfall] = Field(
        default_factory=list, description="The same, structured (best candidate first)."
    )


class PlanSummary(Wire):
    status: str = Field(
        description="OPTIMAL (meets the proven bound) | FEASIBLE (CP-SAT counts) | "
        "LP_ROUNDED (the LP relaxation's decisions realised) | GREEDY (a greedy plan, best fit "
        "or stranding-aware, was the best candidate) | "
        "TRIVIAL (nothing pending)."
    )
    solve_seconds: float = Field(description="Wall time of the whole planning cycle.")
    gpu_allocation_before: float = Field(description="GPU allocation before the plan (0..1).")
    gpu_allocation: float = Field(
        description="Capacity in use after the plan over the capacity that can take work."
    )
    objective: float = Field(description="Priority-weighted GPU allocation the plan achieves.")
    bound: float = Field(description="Proven upper bound on that objective.")
    gap: float = Field(description="(bound - objective) / bound; 0 = proven optimal.")
    power_watts: dict[str, int] = Field(description="Power per domain after the plan, in watts.")
    power_budget_watts: dict[str, int] = Field(
        default_factory=dict, description="Budget per domain that has one, in watts."
    )
    placed_pods: int = Field(default=0, description="Pending pods bound by this plan.")
    pending_pods: int = Field(default=0, description="Pods pending before the plan.")
    degraded: bool = Field(
        default=False,
        description="true when the plan was made under a condition it cannot fix (a domain over "
        "budget before the plan, a budget below idle draw, a model with no solution, the time "
        "limit reached before the model); notes say which.",
    )
    notes: list[str] = Field(
        default_factory=list, description="One line per such condition: what, where, what to do."
    )


class Plan(Wire):
    bindings: list[Binding] = Field(default_factory=list, description="New placements.")
    evictions: list[Eviction] = Field(default_factory=list, description="Preempted pods.")
    moves: list[Move] = Field(
        default_factory=list,
        description="Running pods relocated, in the order they are carried out: a later move "
        "may use room an earlier one left (scheduler.execute).",
    )
    unplaced: list[Unplaced] = Field(
        default_factory=list, description="Pods left pending, with why."
    )
    summary: PlanSummary = Field(description="Totals, solver status, bound and gap.")
