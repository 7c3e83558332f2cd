"""The most milli-GPU any packing of a pod multiset can hold, solved exactly on a relaxation.

The configuration LP (patterns.py) bounds a batch; this is its integer version, small enough to
solve to optimality because it drops everything but the GPUs' own packing: the GPUs of a node
type are one pool, each GPU a path of shares from 0 to 1000 milli (Valerio de Carvalho's arc-flow
model, exact for bin packing), CPU and memory summed over the type's nodes, and a k-GPU pod k
whole GPUs of a type with at least k a node. Every real packing maps onto a solution of it, so
its optimum bounds every run whose end state holds the `held` pods; it answers questions such as
"can any scheduler that placed every pod up to 95% demand pass 96.5% at 130%?".

Its size is (1000 / gcd of the share sizes) x sizes x node types arc variables: openb's shares,
multiples of 10 milli, make about 1,000 a type.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from ortools.sat.python import cp_model

GPU_MILLI = 1000


@dataclass(frozen=True)
class NodeType:
    gpus: int
    cpu_milli: int
    memory_mi_b: int
    count: int
    model: str = ""


@dataclass(frozen=True)
class PodType:
    gpus: int
    gpu_milli: int
    cpu_milli: int
    memory_mi_b: int
    held: int  # this many must be placed
    available: int  # at most this many may be
    models: tuple[str, ...] = ()  # empty: any


@dataclass(frozen=True)
class PackingBound:
    feasible: bool  # False: the held pods cannot all be placed, even in the relaxation
    optimal: bool
    best_milli: int  # a packing of the relaxation that holds every held pod
    bound_milli: int  # no packing, real or relaxed, holds more
    capacity_milli: int


def _fits(pod: PodType, node: NodeType) -> bool:
    return (
        pod.gpus <= node.gpus
        and pod.cpu_milli <= node.cpu_milli
        and pod.memory_mi_b <= node.memory_mi_b
        and (not pod.models or node.model in pod.models)
    )


def _gpu_paths(
    model: cp_model.CpModel, sizes: list[int], gpus: int
) -> dict[int, cp_model.LinearExpr]:
    """Arc-flow over one pool of `gpus` GPUs: how many shares of each size they hold."""
    step = math.gcd(GPU_MILLI, *sizes)
    top = GPU_MILLI // step
    into: dict[int, list[cp_model.IntVar]] = defaultdict(list)
    out: dict[int, list[cp_model.IntVar]] = defaultdict(list)
    of_size: dict[int, list[cp_model.IntVar]] = defaultdict(list)
    reached = {0}
    for at in range(top + 1):
        if at not in reached:
            continue
        for size in sizes:
            to = at + size // step
            if to > top:
                continue
            arc = model.new_int_var(0, gpus * (GPU_MILLI // size), f"a{at}_{size}")
            out[at].append(arc)
            into[to].append(arc)
            of_size[size].append(arc)
            reached.add(to)
    for at in reached:
        # A GPU's path may stop anywhere: the room after its last share stays free.
        stop = model.new_int_var(0, gpus, f"stop{at}")
        if at == 0:
            model.add(sum(out[at]) + stop == gpus)
        else:
            model.add(sum(into[at]) == sum(out[at]) + stop)
    return {size: sum(of_size[size]) for size in sizes}


def packing_bound(
    nodes: list[NodeType],
    pods: list[PodType],
    *,
    time_limit: float,
    workers: int = 1,
    seed: int = 0,
) -> PackingBound:
    if any(p.gpu_milli < GPU_MILLI and p.gpus != 1 for p in pods):
        raise ValueError("a share (gpu_milli below 1000) is of one GPU, as in a snapshot")
    capacity = sum(n.gpus * n.count * GPU_MILLI for n in nodes)
    sizes = sorted({p.gpu_milli for p in pods if p.gpus})
    model = cp_model.CpModel()
    placed: dict[int, list[cp_model.IntVar]] = defaultdict(list)  # pod type -> per node type
    worth = []
    for i, node in enumerate(nodes):
        taken = {
            j: model.new_int_var(0, p.available, f"x{i}_{j}")
            for j, p in enumerate(pods)
            if _fits(p, node)
        }
        for j, x in taken.items():
            placed[j].append(x)
        if sizes:
            shares = _gpu_paths(model, sizes, node.gpus * node.count)
            for size in sizes:
                # A whole pod of k GPUs is k paths of one 1000-milli share each (a share is
                # of one GPU: gpus is 1).
                model.add(
                    shares[size]
                    == sum(
                        x * pods[j].gpus
                        for j, x in taken.items()
                        if pods[j].gpus and pods[j].gpu_milli == size
                    )
                )
                worth.append(size * shares[size])
        model.add(
            sum(x * pods[j].cpu_milli for j, x in taken.items()) <= node.cpu_milli * node.count
        )
        model.add(
            sum(x * pods[j].memory_mi_b for j, x in taken.items()) <= node.memory_mi_b * node.count
        )
    for j, pod in enumerate(pods):
        model.add(sum(placed[j]) >= pod.held)
        model.add(sum(placed[j]) <= pod.available)
    model.maximize(sum(worth))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        proven = status == cp_model.INFEASIBLE
        return PackingBound(not proven, False, 0, 0 if proven else capacity, capacity)
    return PackingBound(
        True,
        status == cp_model.OPTIMAL,
        round(solver.objective_value),
        math.floor(solver.best_objective_bound + 1e-6),
        capacity,
    )
