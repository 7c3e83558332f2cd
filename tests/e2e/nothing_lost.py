"""What every fault test asserts once the fault is over, read from the API server itself (not
from the operator's cache or log): no GPU given twice, no budget exceeded, no gang half bound,
no pod bound to a node that is gone, and no pod lost on the way."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Any

from kube import Cluster

from operators.kube.convert import GANG, GANG_SIZE, gpus_held, holds_resources
from operators.kube.source import read_once
from scheduler.power import budgets, domain_power


def problems(cluster: Cluster, ns: str = "ml", bound_names: Collection[str] = ()) -> list[str]:
    """Everything wrong with the cluster now; `bound_names`: pods that must exist, not being
    deleted, and be bound (the work pending before the fault)."""
    out: list[str] = []
    raw = cluster.pods(ns)
    live = [p for p in raw if not p["metadata"].get("deletionTimestamp")]
    nodes = {n.metadata.name: n for n in cluster.core.list_node().items}

    milli: dict[tuple[str, int], int] = defaultdict(int)
    for p in raw:
        if not holds_resources(p):
            continue
        node, name = p["spec"]["nodeName"], p["metadata"]["name"]
        if node not in nodes:
            out.append(f"{name} bound to {node}, which does not exist")
            continue
        capacity = int((nodes[node].status.allocatable or {}).get("nvidia.com/gpu", "0"))
        for g, m in gpus_held(p).items():
            milli[(node, g)] += m
            if g >= capacity:
                out.append(f"{name} given GPU {g} of {node}, which has {capacity}")
    out += [f"GPU {g} of {n} given {m} milli" for (n, g), m in sorted(milli.items()) if m > 1000]

    gangs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in live:
        gang = (p["metadata"].get("labels") or {}).get(GANG)
        if gang:
            gangs[gang].append(p)
    for gang, members in sorted(gangs.items()):
        size = int((members[0]["metadata"].get("annotations") or {}).get(GANG_SIZE, "0"))
        on = [p for p in members if p["spec"].get("nodeName")]
        if on and (len(on) != len(members) or len(members) < size):
            out.append(f"gang {gang} half bound: {len(on)} of {size} members")

    by_name = {p["metadata"]["name"]: p for p in live}
    for name in sorted(bound_names):
        if name not in by_name:
            out.append(f"{name} is gone")
        elif not by_name[name]["spec"].get("nodeName"):
            out.append(f"{name} is not bound")

    conv, policy = read_once(cluster.api)
    snap = conv.snapshot
    draw = domain_power(snap, [(p, p.node) for p in snap.pods if p.node is not None], policy)
    for d, budget in budgets(snap).items():
        if draw[d] > budget:
            out.append(f"{d} draws {draw[d]} W over its {budget} W")
    return out


def all_bound(cluster: Cluster, names: Collection[str], ns: str = "ml") -> bool:
    """For wait_until: every named pod exists and is bound."""
    pods = {p["metadata"]["name"]: p for p in cluster.pods(ns)}
    return all(pods.get(n, {}).get("spec", {}).get("nodeName") for n in names)


def budget_for(all_gpus: int, training_gpus: int) -> int:
    """A budget (W) that the given whole-GPU training pods fit, on H100s, with less than one
    more GPU's work to spare: one pod more than that would exceed it."""
    from kube import H100

    from scheduler.model import PackingPolicy, PodKind

    per_gpu = (H100["tdpWatts"] - H100["idleWatts"]) * PackingPolicy().power_factors.of(
        PodKind.TRAINING
    )
    return int(all_gpus * H100["idleWatts"] + training_gpus * per_gpu + per_gpu / 2)
