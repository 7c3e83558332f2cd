"""Clusters to simulate on: generated homogeneous ones, and power budgets set as fractions.

A trace without an inventory (Microsoft ITP) runs on a cluster spec, which is a snapshot file
with no pods; `make_cluster` writes such a spec for the common case of identical GPU nodes.
"""

from __future__ import annotations

import math

from scheduler.errors import UserError
from scheduler.model import ClusterSnapshot, GpuModel, Node, PowerDomain, SnapshotMeta


def make_cluster(
    *,
    nodes: int,
    gpus_per_node: int = 8,
    model: str = "H100-SXM",
    tdp_watts: int = 700,
    idle_watts: int = 75,
    cpu_milli: int = 128_000,
    memory_mib: int = 2_097_152,
    nodes_per_rack: int = 4,
    racks_per_row: int = 8,
    name: str = "generated",
) -> ClusterSnapshot:
    """Identical GPU nodes in racks and rows under one facility, with no budgets yet."""
    if nodes < 1 or gpus_per_node < 1 or nodes_per_rack < 1 or racks_per_row < 1:
        raise UserError(
            "nodes, GPUs per node, nodes per rack and racks per row must be >= 1",
            "pass positive values",
        )
    racks = math.ceil(nodes / nodes_per_rack)
    rows = math.ceil(racks / racks_per_row)
    domains = [PowerDomain(name="facility")]
    domains += [PowerDomain(name=f"row-{w:02d}", parent="facility") for w in range(rows)]
    domains += [
        PowerDomain(name=f"rack-{r:03d}", parent=f"row-{r // racks_per_row:02d}")
        for r in range(racks)
    ]
    return ClusterSnapshot(
        metadata=SnapshotMeta(name=name),
        gpu_models=[GpuModel(name=model, tdp_watts=tdp_watts, idle_watts=idle_watts)],
        power_domains=domains,
        nodes=[
            Node(
                name=f"node-{i:04d}",
                power_domain=f"rack-{i // nodes_per_rack:03d}",
                gpu_model=model,
                gpus=gpus_per_node,
                cpu_milli=cpu_milli,
                memory_mi_b=memory_mib,
            )
            for i in range(nodes)
        ],
    )


def nameplate(snapshot: ClusterSnapshot) -> dict[str, int]:
    """Summed GPU TDP below each domain, in watts."""
    tdp = {m.name: m.tdp_watts for m in snapshot.gpu_models}
    parent = {d.name: d.parent for d in snapshot.power_domains}
    total = dict.fromkeys(parent, 0)
    for n in snapshot.nodes:
        d: str | None = n.power_domain
        while d is not None:
            total[d] += n.gpus * tdp[n.gpu_model]
            d = parent[d]
    return total


def with_budgets(
    snapshot: ClusterSnapshot,
    *,
    facility: float | None = None,
    leaf: float | None = None,
) -> ClusterSnapshot:
    """Budgets as fractions of GPU nameplate: `facility` on every root, `leaf` on every domain
    that has no children (racks). A fraction given replaces that level's budgets; None keeps
    them."""
    for what, f in (("facility", facility), ("rack", leaf)):
        if f is not None and not f > 0:
            raise UserError(f"{what} budget fraction {f} is not positive", "use a value > 0")
    plate = nameplate(snapshot)
    parents = {d.parent for d in snapshot.power_domains}
    domains = []
    for d in snapshot.power_domains:
        f = facility if d.parent is None else (leaf if d.name not in parents else None)
        if f is not None:
            d = d.model_copy(update={"budget_watts": math.floor(f * plate[d.name])})
        domains.append(d)
    return snapshot.model_copy(update={"power_domains": domains})


def describe(snapshot: ClusterSnapshot) -> str:
    gpus = sum(n.gpus for n in snapshot.nodes)
    budgeted = [d for d in snapshot.power_domains if d.budget_watts is not None]
    plate = nameplate(snapshot)
    roots = [d for d in budgeted if d.parent is None]
    parts = [f"{snapshot.metadata.name}: {len(snapshot.nodes)} nodes, {gpus} GPUs"]
    for d in roots:
        share = d.budget_watts / plate[d.name] if plate[d.name] else 0  # type: ignore[operator]
        parts.append(f"{d.name} budget {d.budget_watts} W ({share:.0%} of GPU nameplate)")
    if len(budgeted) > len(roots):
        parts.append(f"{len(budgeted) - len(roots)} more budgeted domains")
    return ", ".join(parts)


def every_kth_node(snapshot: ClusterSnapshot, k: int) -> ClusterSnapshot:
    """Every k-th node, each in its own power domain as before: a smaller cluster of the same
    make-up, for replaying a trace that would never fill the whole inventory."""
    if k < 1:
        raise UserError(f"node sample step {k} is below 1", "pass 1 (all nodes) or more")
    return snapshot.model_copy(update={"nodes": snapshot.nodes[::k]})
