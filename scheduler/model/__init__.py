"""Frozen, plain data types shared by every room: the snapshot, the policy and the plan."""

from scheduler.model.plan import Binding, Eviction, Move, Plan, PlanSummary, Shortfall, Unplaced
from scheduler.model.policy import PackingPolicy
from scheduler.model.snapshot import (
    ClusterSnapshot,
    DisruptionBudget,
    Gang,
    GpuHealth,
    GpuModel,
    HealthState,
    MoveBy,
    Node,
    Pod,
    PodKind,
    PowerDomain,
    SnapshotMeta,
)

__all__ = [
    "Binding",
    "ClusterSnapshot",
    "DisruptionBudget",
    "Eviction",
    "Gang",
    "GpuHealth",
    "GpuModel",
    "HealthState",
    "Move",
    "MoveBy",
    "Node",
    "PackingPolicy",
    "Plan",
    "PlanSummary",
    "Pod",
    "PodKind",
    "PowerDomain",
    "Shortfall",
    "SnapshotMeta",
    "Unplaced",
]
