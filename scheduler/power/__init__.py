"""The power model: watts per GPU by model, kind and share; sums per power domain.

A GPU with no work draws idleWatts; running a pod it draws idle + (tdp - idle) x kindFactor x share.
Watts are integers and a pod's draw is rounded up, so a plan that fits in integer watts also fits
in real ones.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from scheduler.model import ClusterSnapshot, GpuModel, Node, PackingPolicy, Pod


def pod_watts(pod: Pod, model: GpuModel, policy: PackingPolicy) -> int:
    """Watts the pod adds above idle on a GPU of this model (all its GPUs together)."""
    if pod.gpus == 0:
        return 0
    if pod.power_watts_per_gpu is not None:
        per_gpu = max(0, pod.power_watts_per_gpu - model.idle_watts)
    else:
        per_gpu = (model.tdp_watts - model.idle_watts) * policy.power_factors.of(pod.kind)
    share = pod.gpu_milli / 1000 if pod.fractional else pod.gpus
    return math.ceil(per_gpu * share - 1e-9)


def domain_chain(snapshot: ClusterSnapshot) -> dict[str, list[str]]:
    """For every domain, itself and its ancestors up to the root."""
    parent = {d.name: d.parent for d in snapshot.power_domains}
    chains: dict[str, list[str]] = {}
    for name in parent:
        chain = [name]
        while parent[chain[-1]] is not None:
            chain.append(parent[chain[-1]])  # type: ignore[arg-type]
        chains[name] = chain
    return chains


def budgets(snapshot: ClusterSnapshot) -> dict[str, int]:
    return {d.name: d.budget_watts for d in snapshot.power_domains if d.budget_watts is not None}


def idle_watts_by_domain(snapshot: ClusterSnapshot) -> dict[str, int]:
    models = {m.name: m for m in snapshot.gpu_models}
    chains = domain_chain(snapshot)
    total: dict[str, int] = defaultdict(int)
    for d in chains:
        total[d] += 0
    for node in snapshot.nodes:
        for d in chains[node.power_domain]:
            total[d] += node.gpus * models[node.gpu_model].idle_watts
    return dict(total)


def domain_power(
    snapshot: ClusterSnapshot,
    placement: Iterable[tuple[Pod, str]],
    policy: PackingPolicy,
) -> dict[str, int]:
    """Power per domain when the given (pod, node name) pairs run: idle of every GPU plus work."""
    models = {m.name: m for m in snapshot.gpu_models}
    nodes: Mapping[str, Node] = {n.name: n for n in snapshot.nodes}
    chains = domain_chain(snapshot)
    total = idle_watts_by_domain(snapshot)
    for pod, node_name in placement:
        node = nodes[node_name]
        watts = pod_watts(pod, models[node.gpu_model], policy)
        for d in chains[node.power_domain]:
            total[d] += watts
    return total
