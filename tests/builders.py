"""Fixture builders, so that a test reads as a scenario: a few nodes, a few pods, a policy.

Builders return plain camelCase dicts (the wire format) until `snapshot` validates them, so a test
can tweak any field the builders do not name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scheduler.fit.cycle import Cycle, start_cycle
from scheduler.model import Binding, ClusterSnapshot, Eviction, Move, PackingPolicy, Plan

H100 = {"name": "H100", "tdpWatts": 700, "idleWatts": 100}
L40 = {"name": "L40", "tdpWatts": 300, "idleWatts": 50}


def domain(name: str, budget: int | None = None, parent: str | None = None) -> dict[str, Any]:
    return {"name": name, "parent": parent, "budgetWatts": budget}


def node(
    name: str,
    gpus: int = 4,
    *,
    model: str = "H100",
    domain: str = "rack",
    cpu: int = 64_000,
    mem: int = 262_144,
    cordoned: bool = False,
    health: dict[int, str] | None = None,
) -> dict[str, Any]:
    """A node; `health` maps a GPU index to its state (others are healthy)."""
    return {
        "name": name,
        "powerDomain": domain,
        "gpuModel": model,
        "gpus": gpus,
        "cpuMilli": cpu,
        "memoryMiB": mem,
        "schedulable": not cordoned,
        "gpuHealth": [{"index": i, "state": s} for i, s in sorted((health or {}).items())],
    }


def pod(
    name: str,
    kind: str = "training",
    gpus: int = 1,
    *,
    milli: int = 1000,
    priority: int = 0,
    models: tuple[str, ...] = (),
    cpu: int = 0,
    mem: int = 0,
    gang: tuple[str, int] | None = None,
    app: str | None = None,
    max_per_node: int | None = None,
    preemptible: bool = True,
    on: tuple[str, list[int]] | None = None,
) -> dict[str, Any]:
    """A pod in namespace default; `on=(node, indices)` makes it a running one."""
    return {
        "name": name,
        "kind": kind,
        "priority": priority,
        "gpus": gpus,
        "gpuMilli": milli,
        "gpuModels": list(models),
        "cpuMilli": cpu,
        "memoryMiB": mem,
        "gang": {"name": gang[0], "size": gang[1]} if gang else None,
        "app": app,
        "maxPerNode": max_per_node,
        "preemptible": preemptible,
        "node": on[0] if on else None,
        "gpuIndices": list(on[1]) if on else [],
    }


def gang(name: str, size: int, kind: str = "training", gpus: int = 1, **kw: Any) -> list[dict]:
    """The members name-0 .. name-(size-1) of one gang."""
    return [pod(f"{name}-{i}", kind, gpus, gang=(name, size), **kw) for i in range(size)]


def snapshot(
    nodes: list[dict[str, Any]],
    pods: Sequence[dict[str, Any]] = (),
    *,
    models: list[dict[str, Any]] | None = None,
    domains: list[dict[str, Any]] | None = None,
) -> ClusterSnapshot:
    """A snapshot with one H100 model and one unbudgeted domain `rack` unless told otherwise."""
    return ClusterSnapshot.model_validate(
        {
            "gpuModels": models if models is not None else [H100],
            "powerDomains": domains if domains is not None else [domain("rack")],
            "nodes": nodes,
            "pods": list(pods),
        }
    )


def policy(**fields: Any) -> PackingPolicy:
    """The default policy with a short, reproducible solve, plus any overrides (wire names)."""
    solver = {"timeLimitSeconds": 2, "workers": 1, "seed": 0, **fields.pop("solver", {})}
    return PackingPolicy.model_validate({"solver": solver, **fields})


def _key(name: str) -> str:
    return name if "/" in name else f"default/{name}"


def bind(pod_name: str, node_name: str, *indices: int) -> Binding:
    return Binding(pod=_key(pod_name), node=node_name, gpu_indices=list(indices))


def evict(pod_name: str, node_name: str) -> Eviction:
    return Eviction(pod=_key(pod_name), node=node_name, reason="test")


def move(pod_name: str, from_node: str, to_node: str, *indices: int) -> Move:
    return Move(
        pod=_key(pod_name),
        from_node=from_node,
        to_node=to_node,
        gpu_indices=list(indices),
        cost=0,
        reason="test",
    )


def plan_of(
    bindings: Sequence[Binding] = (),
    evictions: Sequence[Eviction] = (),
    moves: Sequence[Move] = (),
) -> Plan:
    """A hand-made plan; the summary is a placeholder the checker never reads."""
    summary = {
        "status": "FEASIBLE",
        "solveSeconds": 0,
        "gpuAllocationBefore": 0,
        "gpuAllocation": 0,
        "objective": 0,
        "bound": 0,
        "gap": 0,
        "powerWatts": {},
    }
    return Plan.model_validate(
        {
            "bindings": list(bindings),
            "evictions": list(evictions),
            "moves": list(moves),
            "summary": summary,
        }
    )


def cycle_with(
    snap: ClusterSnapshot, placements: dict[str, tuple[str, list[int]]]
) -> tuple[Cycle, dict[str, tuple[int, tuple[int, ...]]]]:
    """A cycle of the default test policy in which this cycle already put pods (name ->
    (node, GPUs)), and its placements by pod key, as a candidate plan holds them."""
    cycle = start_cycle(snap, policy())
    state, by_key = cycle.state, {p.key: p for p in cycle.pending}
    placed = {}
    for name, (node_name, gpus) in placements.items():
        where = (state.node_index[node_name], tuple(gpus))
        state.place(by_key[_key(name)], *where)
        placed[_key(name)] = where
    return cycle, placed
