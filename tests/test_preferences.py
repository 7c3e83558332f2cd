"""Soft preferences (preferred node affinity, PreferNoSchedule taints): honoured where they cost
no placement (scheduler.planner.preferences)."""

from __future__ import annotations

from typing import Any

from builders import node, pod, policy, snapshot

from scheduler.planner.cycle import plan
from scheduler.verify.feasibility import check_plan


def _labelled(name: str, gpus: int = 4, **labels: str) -> dict[str, Any]:
    return {**node(name, gpus), "labels": labels}


def _prefers(p: dict[str, Any], weight: int, key: str, *values: str) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": key, "operator": "In", "values": list(values)}]}
    return {**p, "preferredNodeAffinity": [{"weight": weight, "preference": term}]}


def _where(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {b.pod.split("/")[1]: b.node for b in result.bindings}


def test_preferred_node_affinity_is_taken_where_there_is_room_and_never_costs_a_pod():
    nodes = [_labelled("plain-0"), _labelled("plain-1"), _labelled("fast", 4, disk="nvme")]
    pods = [_prefers(pod(f"p{i}"), 50, "disk", "nvme") for i in range(3)]
    snap = snapshot(nodes, pods)
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    assert set(_where(result).values()) == {"fast"}
    # More than the preferred node holds: all still placed, the rest elsewhere.
    pods = [_prefers(pod(f"p{i}", gpus=2), 50, "disk", "nvme") for i in range(5)]
    snap = snapshot(nodes, pods)
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    where = _where(result)
    assert len(where) == 5 and list(where.values()).count("fast") == 2


def test_a_prefer_no_schedule_taint_keeps_pods_off_while_other_nodes_have_room():
    # Best fit alone would fill the tainted node first: it has the fewest free GPUs.
    tainted = {**node("spot", 4), "taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}
    nodes = [tainted, node("a", 8)]
    snap = snapshot(nodes, [pod(f"p{i}") for i in range(4)])
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    assert set(_where(result).values()) == {"a"}
    # A soft taint never keeps a pod waiting: twelve pods fill both nodes.
    snap = snapshot(nodes, [pod(f"p{i}") for i in range(12)])
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    assert len(_where(result)) == 12
