"""Checks across objects that types cannot express; each problem names object, field and fix."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.model.snapshot import ClusterSnapshot, Pod


def snapshot_problems(snap: ClusterSnapshot) -> list[str]:
    problems: list[str] = []
    problems += _model_problems(snap)
    problems += _domain_problems(snap)
    problems += _node_problems(snap)
    problems += _pod_problems(snap)
    problems += [
        f"disruptionBudgets[{d}]: defined twice; give each PodDisruptionBudget one entry"
        for d in _duplicates([b.key for b in snap.disruption_budgets])
    ]
    if not problems:
        problems += _placement_problems(snap)
        problems += _gang_problems(snap)
    return problems


def _duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    dup = []
    for n in names:
        if n in seen:
            dup.append(n)
        seen.add(n)
    return dup


def _model_problems(snap: ClusterSnapshot) -> list[str]:
    return [
        f"gpuModels[{d}]: defined twice; give each GPU model one entry"
        for d in _duplicates([m.name for m in snap.gpu_models])
    ]


def _domain_problems(snap: ClusterSnapshot) -> list[str]:
    problems = [
        f"powerDomains[{d}]: defined twice; give each power domain one entry"
        for d in _duplicates([d.name for d in snap.power_domains])
    ]
    parent = {d.name: d.parent for d in snap.power_domains}
    for d in snap.power_domains:
        if d.parent is not None and d.parent not in parent:
            problems.append(
                f"powerDomains[{d.name}].parent: unknown power domain '{d.parent}'; "
                "define it in powerDomains or set parent to null"
            )
    for start in parent:
        seen = [start]
        cur = parent[start]
        while cur is not None and cur in parent:
            if cur in seen:
                cycle = " -> ".join([*seen[seen.index(cur) :], cur])
                problems.append(
                    f"powerDomains[{start}].parent: cycle {cycle}; the domains must form a tree"
                )
                break
            seen.append(cur)
            cur = parent[cur]
        if problems and "cycle" in problems[-1]:
            break
    return problems


def _node_problems(snap: ClusterSnapshot) -> list[str]:
    models = {m.name for m in snap.gpu_models}
    domains = {d.name for d in snap.power_domains}
    problems = [
        f"nodes[{d}]: defined twice; give each node one entry"
        for d in _duplicates([n.name for n in snap.nodes])
    ]
    for n in snap.nodes:
        if n.gpu_model not in models:
            problems.append(
                f"nodes[{n.name}].gpuModel: unknown GPU model '{n.gpu_model}'; "
                f"add it to gpuModels (known: {', '.join(sorted(models)) or 'none'})"
            )
        if n.power_domain not in domains:
            problems.append(
                f"nodes[{n.name}].powerDomain: unknown power domain '{n.power_domain}'; "
                "add it to powerDomains"
            )
        for h in n.gpu_health:
            if h.index >= n.gpus:
                problems.append(
                    f"nodes[{n.name}].gpuHealth: GPU index {h.index} does not exist "
                    f"(node has {n.gpus} GPUs); use an index below {n.gpus}"
                )
        for d in _duplicates([str(h.index) for h in n.gpu_health]):
            problems.append(f"nodes[{n.name}].gpuHealth: GPU {d} listed twice; list it once")
    return problems


def _pod_problems(snap: ClusterSnapshot) -> list[str]:
    models = {m.name for m in snap.gpu_models}
    problems = [
        f"pods[{d}]: defined twice; give each pod one entry"
        for d in _duplicates([p.key for p in snap.pods])
    ]
    for p in snap.pods:
        where = f"pods[{p.key}]"
        if not 1 <= p.gpu_milli <= 1000:
            problems.append(
                f"{where}.gpuMilli: {p.gpu_milli} is outside 1..1000; use a share in 1..1000"
            )
        elif p.gpu_milli < 1000 and p.gpus != 1:
            problems.append(
                f"{where}.gpuMilli: a share of {p.gpu_milli} needs gpus 1 (got {p.gpus}); "
                "use gpuMilli 1000 for multi-GPU pods"
            )
        for m in p.gpu_models:
            if m not in models:
                problems.append(
                    f"{where}.gpuModels: unknown GPU model '{m}'; add it to gpuModels or remove it"
                )
        if p.max_per_node is not None and p.app is None:
            problems.append(
                f"{where}.maxPerNode: set without app; name the app the limit applies to"
            )
        if p.node is None and p.gpu_indices:
            problems.append(
                f"{where}.gpuIndices: set on a pending pod; leave it empty when node is null"
            )
    return problems


def _placement_problems(snap: ClusterSnapshot) -> list[str]:
    nodes = {n.name: n for n in snap.nodes}
    problems: list[str] = []
    milli_used: dict[tuple[str, int], int] = defaultdict(int)
    whole_owner: dict[tuple[str, int], str] = {}
    for p in snap.pods:
        if p.node is None:
            continue
        where = f"pods[{p.key}]"
        node = nodes.get(p.node)
        if node is None:
            problems.append(f"{where}.node: unknown node '{p.node}'; use a node from nodes or null")
            continue
        want = 0 if p.gpus == 0 else p.gpus
        if len(p.gpu_indices) != want or len(set(p.gpu_indices)) != want:
            problems.append(
                f"{where}.gpuIndices: {p.gpu_indices} does not hold {want} distinct GPUs; "
                f"list the {want} GPU indices the pod uses"
            )
            continue
        for i in p.gpu_indices:
            if not 0 <= i < node.gpus:
                problems.append(
                    f"{where}.gpuIndices: GPU {i} does not exist on node {node.name} "
                    f"({node.gpus} GPUs); use an index below {node.gpus}"
                )
                continue
            milli_used[(node.name, i)] += p.gpu_milli if p.fractional else 1000
            if not p.fractional:
                if (node.name, i) in whole_owner:
                    problems.append(_overcommit(where, node.name, i, whole_owner[(node.name, i)]))
                whole_owner[(node.name, i)] = p.key
    for (node_name, i), used in sorted(milli_used.items()):
        if used > 1000:
            problems.append(
                f"nodes[{node_name}].gpus[{i}]: overcommitted, current pods use {used} milli-GPU "
                "of 1000; fix the placements in pods[].node/gpuIndices"
            )
    return problems


def _overcommit(where: str, node: str, index: int, other: str) -> str:
    return (
        f"{where}.gpuIndices: GPU {index} on node {node} is already held whole by {other}; "
        "fix the placements so each whole GPU has one pod"
    )


def _gang_problems(snap: ClusterSnapshot) -> list[str]:
    members: dict[str, list[Pod]] = defaultdict(list)
    for p in snap.pods:
        if p.gang_key is not None:
            members[p.gang_key].append(p)
    problems = []
    for key, pods in sorted(members.items()):
        sizes = {p.gang.size for p in pods if p.gang is not None}
        if len(sizes) > 1:
            problems.append(
                f"pods[{pods[0].key}].gang.size: members of gang {key} disagree on size "
                f"({sorted(sizes)}); give every member the same size"
            )
        elif len(pods) != next(iter(sizes)):
            problems.append(
                f"pods[{pods[0].key}].gang.size: gang {key} declares size {next(iter(sizes))} "
                f"but has {len(pods)} members; list every member or fix the size"
            )
    return problems
