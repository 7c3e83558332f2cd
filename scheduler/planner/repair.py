"""Repair a plan where CPU or memory, not GPUs, left a pod pending.

A realisation strands GPUs: a node keeps a free GPU but not the CPU to feed it, while another
node has CPU to spare beside full GPUs. The pods this cycle placed are not running yet, so any
of them may still go elsewhere: for each pod left pending (most valuable first), find a node whose
GPUs take it, move one of this cycle's pods off that node to wherever it fits, and put the
pending pod in the room it leaves. Every step places one more pod and unplaces none, so a
repaired plan is never worth less.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from scheduler.fit.classes import fit_shape
from scheduler.fit.cycle import Cycle
from scheduler.fit.greedy import unit_order
from scheduler.fit.state import Placement
from scheduler.model import Pod

_NODES_TRIED = 48  # nodes whose GPUs take the pod, tried per pending pod
_MOVERS_TRIED = 6  # of this cycle's pods on such a node, tried per node
_SPARE_TRIED = 32  # nodes with CPU to spare a swap looks at


def _gpu_room(cycle: Cycle, pod: Pod, node: int) -> bool:
    state = cycle.state
    return (
        state.class_of[node] >= 0
        and state.model_ok(pod, node)
        and (state.gpus_for(pod, node) is not None)
    )


def repair(
    cycle: Cycle, placed: dict[str, Placement], stop: Callable[[], bool] | None = None
) -> int:
    """Moves this cycle's pods to make room for pending ones; returns how many it placed."""
    by_key = {p.key: p for p in cycle.pending}
    on_node: dict[int, list[str]] = defaultdict(list)
    for key, (node, _) in placed.items():
        if not by_key[key].gang_key:
            on_node[node].append(key)
    waiting = [[p] for p in cycle.pending if p.key not in placed and p.gpus and not p.gang_key]
    hopeless: set[tuple] = set()
    done = 0
    for (pod,) in unit_order(waiting, cycle.policy):
        if stop is not None and stop():
            break
        shape = fit_shape(pod)
        if shape in hopeless:
            continue
        if _repair_one(cycle, pod, placed, on_node, by_key):
            done += 1
        else:
            hopeless.add(shape)
    return done


def _repair_one(
    cycle: Cycle,
    pod: Pod,
    placed: dict[str, Placement],
    on_node: dict[int, list[str]],
    by_key: dict[str, Pod],
) -> bool:
    state = cycle.state
    where = state.find(pod)
    if where is not None:
        state.place(pod, *where)
        placed[pod.key] = where
        on_node[where[0]].append(pod.key)
        return True
    if (
        not pod.fractional
        and pod.gpus == 1
        and _consolidate_for(cycle, pod, placed, on_node, by_key)
    ):
        return True
    # Nodes whose GPUs take the pod, the least short of CPU and memory first.
    nodes = sorted(
        (n for n, keys in on_node.items() if keys and _gpu_room(cycle, pod, n)),
        key=lambda n: (
            max(0, pod.cpu_milli - state.cpu[n]) / max(1, pod.cpu_milli)
            + max(0, pod.memory_mi_b - state.mem[n]) / max(1, pod.memory_mi_b),
            n,
        ),
    )
    spare = None
    for node in nodes[:_NODES_TRIED]:
        short_cpu = pod.cpu_milli - state.cpu[node]
        short_mem = pod.memory_mi_b - state.mem[node]
        movers = sorted(
            (k for k in on_node[node] if by_key[k].cpu_milli >= short_cpu),
            key=lambda k: (-by_key[k].cpu_milli, k),
        )
        for key in movers[:_MOVERS_TRIED]:
            mover = by_key[key]
            if mover.memory_mi_b < short_mem:
                continue
            _, gpus = placed[key]
            state.remove(mover, node, gpus)
            target = state.gpus_for(pod, node)
            if target is not None and state.host_ok(pod, node) and state.power_ok(pod, node):
                state.place(pod, node, target)
                elsewhere = state.find(mover)
                if elsewhere is not None and elsewhere[0] != node:
                    state.place(mover, *elsewhere)
                    placed[key] = elsewhere
                    on_node[node].remove(key)
                    on_node[elsewhere[0]].append(key)
                    placed[pod.key] = (node, target)
                    on_node[node].append(pod.key)
                    return True
                state.remove(pod, node, target)
            state.place(mover, node, gpus)
        if spare is None:
            spare = _spare_cpu_nodes(cycle, on_node)
        if _swap_for(cycle, pod, node, placed, on_node, by_key, spare):
            return True
    return False


def _spare_cpu_nodes(cycle: Cycle, on_node: dict[int, list[str]]) -> list[int]:
    """Nodes holding this cycle's pods, the most CPU to spare first."""
    state = cycle.state
    return sorted((n for n, keys in on_node.items() if keys), key=lambda n: (-state.cpu[n], n))[
        :_SPARE_TRIED
    ]


def _swap_for(
    cycle: Cycle,
    pod: Pod,
    node: int,
    placed: dict[str, Placement],
    on_node: dict[int, list[str]],
    by_key: dict[str, Pod],
    spare: list[int],
) -> bool:
    """Make CPU and memory room for `pod` on `node` by swapping one of this cycle's pods there
    (q) with a lighter one of the same GPU shape (r) on a node with CPU to spare: q and r trade
    GPUs, so only CPU and memory move, towards the node that can feed them."""
    state = cycle.state
    short_cpu = pod.cpu_milli - state.cpu[node]
    short_mem = pod.memory_mi_b - state.mem[node]
    for qk in sorted(on_node[node], key=lambda k: (-by_key[k].cpu_milli, k))[:_MOVERS_TRIED]:
        q = by_key[qk]
        gpu_shape = (q.gpus, q.gpu_milli)
        for other in spare:
            if other == node or not state.model_ok(q, other):
                continue
            for rk in on_node[other]:
                r = by_key[rk]
                if (
                    (r.gpus, r.gpu_milli) != gpu_shape
                    or r.cpu_milli > q.cpu_milli - short_cpu
                    or r.memory_mi_b > q.memory_mi_b - short_mem
                    or state.cpu[other] + r.cpu_milli < q.cpu_milli
                    or state.mem[other] + r.memory_mi_b < q.memory_mi_b
                    or not state.model_ok(r, node)
                ):
                    continue
                if _trade(cycle, pod, node, (qk, q), (rk, r), other, placed, on_node):
                    return True
    return False


def _trade(cycle, pod, node, qq, rr, other, placed, on_node) -> bool:
    state = cycle.state
    (qk, q), (rk, r) = qq, rr
    q_gpus, r_gpus = placed[qk][1], placed[rk][1]
    state.remove(q, node, q_gpus)
    state.remove(r, other, r_gpus)
    steps = [(r, node, q_gpus), (q, other, r_gpus)]
    done = []
    for p, n, g in steps:
        if not (state.host_ok(p, n) and state.power_ok(p, n)):
            break
        state.place(p, n, g)
        done.append((p, n, g))
    target = state.gpus_for(pod, node) if len(done) == 2 else None
    if target is not None and state.host_ok(pod, node) and state.power_ok(pod, node):
        state.place(pod, node, target)
        placed[rk], placed[qk], placed[pod.key] = (node, q_gpus), (other, r_gpus), (node, target)
        on_node[node].remove(qk)
        on_node[other].remove(rk)
        on_node[node] += [rk, pod.key]
        on_node[other].append(qk)
        return True
    for p, n, g in reversed(done):
        state.remove(p, n, g)
    state.place(r, other, r_gpus)
    state.place(q, node, q_gpus)
    return False


def _consolidate_for(
    cycle: Cycle,
    pod: Pod,
    placed: dict[str, Placement],
    on_node: dict[int, list[str]],
    by_key: dict[str, Pod],
) -> bool:
    """Free a whole GPU for a one-GPU pod: a GPU that only this cycle's shares hold gives them
    up to partly used GPUs elsewhere (never to a fresh one, which would only move the gap)."""
    state = cycle.state
    tried = 0
    for node, keys in on_node.items():
        if not keys or not state.model_ok(pod, node) or state.class_of[node] < 0:
            continue
        tenants: dict[int, list[str]] = defaultdict(list)
        for k in keys:
            if by_key[k].fractional:
                tenants[placed[k][1][0]].append(k)
        for g, ks in tenants.items():
            if state.res[node][g] + sum(by_key[k].gpu_milli for k in ks) != 1000:
                continue  # a running pod shares the GPU too
            tried += 1
            if tried > _NODES_TRIED:
                return False
            if _empty_gpu(cycle, pod, node, g, ks, placed, on_node, by_key):
                return True
    return False


def _empty_gpu(cycle, pod, node, g, keys, placed, on_node, by_key) -> bool:
    state = cycle.state
    shares = [by_key[k] for k in keys]
    for p in shares:
        state.remove(p, node, (g,))
    if not (state.host_ok(pod, node) and state.power_ok(pod, node)):
        for p in shares:
            state.place(p, node, (g,))
        return False
    state.place(pod, node, (g,))
    moved: list[tuple[Pod, Placement]] = []
    for p in sorted(shares, key=lambda p: -p.gpu_milli):
        where = state.find(p)
        if where is None or state.res[where[0]][where[1][0]] == 1000:
            break
        state.place(p, *where)
        moved.append((p, where))
    if len(moved) == len(shares):
        placed[pod.key] = (node, (g,))
        on_node[node].append(pod.key)
        for p, where in moved:
            placed[p.key] = where
            on_node[node].remove(p.key)
            on_node[where[0]].append(p.key)
        return True
    for p, where in reversed(moved):
        state.remove(p, *where)
    state.remove(pod, node, (g,))
    for p in shares:
        state.place(p, node, (g,))
    return False
