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
from scheduler.fit.statement import Statement
from scheduler.model import Pod

_NODES_TRIED = 48  # nodes whose GPUs take the pod, tried per pending pod
_MOVERS_TRIED = 6  # of this cycle's pods on such a node, tried per node
_SPARE_TRIED = 32  # nodes with CPU to spare a swap looks at


def repair(
    cycle: Cycle, placed: dict[str, Placement], stop: Callable[[], bool] | None = None
) -> int:
    """Moves this cycle's pods to make room for pending ones; returns how many it placed."""
    return _Repair(cycle, placed, stop).run()


class _Repair:
    """One repair pass: the cycle's state, the plan's placements, and which of this cycle's
    pods (gang members aside: a gang moves whole or not at all) sit on each node."""

    def __init__(
        self, cycle: Cycle, placed: dict[str, Placement], stop: Callable[[], bool] | None
    ) -> None:
        self.cycle, self.state, self.placed = cycle, cycle.state, placed
        # Asked between pods and between the nodes tried for one: a pod's search alone can
        # take a second at thousands of nodes.
        self.stopped = stop or (lambda: False)
        self.by_key = {p.key: p for p in cycle.pending}
        self.on_node: dict[int, list[str]] = defaultdict(list)
        for key, (node, _) in placed.items():
            if not self.by_key[key].gang_key:
                self.on_node[node].append(key)

    def run(self) -> int:
        cycle = self.cycle
        waiting = [
            [p] for p in cycle.pending if p.key not in self.placed and p.gpus and not p.gang_key
        ]
        hopeless: set[tuple] = set()
        done = 0
        for (pod,) in unit_order(waiting, cycle.policy):
            if self.stopped():
                break
            shape = fit_shape(pod)
            if shape in hopeless:
                continue
            if self._repair_one(pod):
                done += 1
            else:
                hopeless.add(shape)
        return done

    def _record(self, key: str, where: Placement) -> None:
        """The plan now puts the pod at `where` (off the node it had, if any)."""
        before = self.placed.get(key)
        if before is not None:
            self.on_node[before[0]].remove(key)
        self.placed[key] = where
        self.on_node[where[0]].append(key)

    def _gpu_room(self, pod: Pod, node: int) -> bool:
        state = self.state
        return (
            state.class_of[node] >= 0
            and state.model_ok(pod, node)
            and state.gpus_for(pod, node) is not None
        )

    def _repair_one(self, pod: Pod) -> bool:
        state, by_key = self.state, self.by_key
        where = state.find(pod)
        if where is not None:
            state.place(pod, *where)
            self._record(pod.key, where)
            return True
        if not pod.fractional and pod.gpus == 1 and self._consolidate_for(pod):
            return True
        # Nodes whose GPUs take the pod, the least short of CPU and memory first.
        nodes = sorted(
            (n for n, keys in self.on_node.items() if keys and self._gpu_room(pod, n)),
            key=lambda n: (
                max(0, pod.cpu_milli - state.cpu[n]) / max(1, pod.cpu_milli)
                + max(0, pod.memory_mi_b - state.mem[n]) / max(1, pod.memory_mi_b),
                n,
            ),
        )
        spare = None
        for node in nodes[:_NODES_TRIED]:
            if self.stopped():
                return False
            short_cpu = pod.cpu_milli - state.cpu[node]
            short_mem = pod.memory_mi_b - state.mem[node]
            movers = sorted(
                (k for k in self.on_node[node] if by_key[k].cpu_milli >= short_cpu),
                key=lambda k: (-by_key[k].cpu_milli, k),
            )
            for key in movers[:_MOVERS_TRIED]:
                mover = by_key[key]
                if mover.memory_mi_b < short_mem:
                    continue
                _, gpus = self.placed[key]
                trial = Statement(state)
                trial.remove(mover, node, gpus)
                target = state.gpus_for(pod, node)
                if target is not None and state.host_ok(pod, node) and state.power_ok(pod, node):
                    trial.place(pod, node, target)
                    elsewhere = state.find(mover)
                    if elsewhere is not None and elsewhere[0] != node:
                        trial.place(mover, *elsewhere)
                        trial.commit()
                        self._record(key, elsewhere)
                        self._record(pod.key, (node, target))
                        return True
                trial.discard()
            if spare is None:
                spare = self._spare_cpu_nodes()
            if self._swap_for(pod, node, spare):
                return True
        return False

    def _spare_cpu_nodes(self) -> list[int]:
        """Nodes holding this cycle's pods, the most CPU to spare first."""
        cpu = self.state.cpu
        held = (n for n, keys in self.on_node.items() if keys)
        return sorted(held, key=lambda n: (-cpu[n], n))[:_SPARE_TRIED]

    def _swap_for(self, pod: Pod, node: int, spare: list[int]) -> bool:
        """Make CPU and memory room for `pod` on `node` by swapping one of this cycle's pods
        there (q) with a lighter one of the same GPU shape (r) on a node with CPU to spare: q and
        r trade GPUs, so only CPU and memory move, towards the node that can feed them."""
        state, by_key = self.state, self.by_key
        short_cpu = pod.cpu_milli - state.cpu[node]
        short_mem = pod.memory_mi_b - state.mem[node]
        for qk in sorted(self.on_node[node], key=lambda k: (-by_key[k].cpu_milli, k))[
            :_MOVERS_TRIED
        ]:
            q = by_key[qk]
            for other in spare:
                if other == node or not state.model_ok(q, other):
                    continue
                for rk in self.on_node[other]:
                    r = by_key[rk]
                    if (
                        (r.gpus, r.gpu_milli) != (q.gpus, q.gpu_milli)
                        or r.cpu_milli > q.cpu_milli - short_cpu
                        or r.memory_mi_b > q.memory_mi_b - short_mem
                        or state.cpu[other] + r.cpu_milli < q.cpu_milli
                        or state.mem[other] + r.memory_mi_b < q.memory_mi_b
                        or not state.model_ok(r, node)
                    ):
                        continue
                    if self._trade(pod, node, q, r, other):
                        return True
        return False

    def _trade(self, pod: Pod, node: int, q: Pod, r: Pod, other: int) -> bool:
        state = self.state
        q_gpus, r_gpus = self.placed[q.key][1], self.placed[r.key][1]
        trial = Statement(state)
        trial.remove(q, node, q_gpus)
        trial.remove(r, other, r_gpus)
        done: list[tuple[Pod, Placement]] = []
        for p, where in ((r, (node, q_gpus)), (q, (other, r_gpus))):
            if not (state.host_ok(p, where[0]) and state.power_ok(p, where[0])):
                break
            trial.place(p, *where)
            done.append((p, where))
        target = state.gpus_for(pod, node) if len(done) == 2 else None
        if target is not None and state.host_ok(pod, node) and state.power_ok(pod, node):
            trial.place(pod, node, target)
            trial.commit()
            for p, where in done:
                self._record(p.key, where)
            self._record(pod.key, (node, target))
            return True
        trial.discard()
        return False

    def _consolidate_for(self, pod: Pod) -> bool:
        """Free a whole GPU for a one-GPU pod: a GPU that only this cycle's shares hold gives
        them up to partly used GPUs elsewhere (never to a fresh one, which would only move the
        gap)."""
        state, by_key = self.state, self.by_key
        tried = 0
        for node, keys in self.on_node.items():
            if not keys or not state.model_ok(pod, node) or state.class_of[node] < 0:
                continue
            tenants: dict[int, list[str]] = defaultdict(list)
            for k in keys:
                if by_key[k].fractional:
                    tenants[self.placed[k][1][0]].append(k)
            for g, ks in tenants.items():
                if state.res[node][g] + sum(by_key[k].gpu_milli for k in ks) != 1000:
                    continue  # a running pod shares the GPU too
                tried += 1
                if tried > _NODES_TRIED or self.stopped():
                    return False
                if self._empty_gpu(pod, node, g, [by_key[k] for k in ks]):
                    return True
        return False

    def _empty_gpu(self, pod: Pod, node: int, g: int, shares: list[Pod]) -> bool:
        state = self.state
        trial = Statement(state)
        for p in shares:
            trial.remove(p, node, (g,))
        if state.host_ok(pod, node) and state.power_ok(pod, node):
            trial.place(pod, node, (g,))
            moved: list[tuple[Pod, Placement]] = []
            for p in sorted(shares, key=lambda p: -p.gpu_milli):
                where = state.find(p)
                if where is None or state.res[where[0]][where[1][0]] == 1000:
                    break
                trial.place(p, *where)
                moved.append((p, where))
            if len(moved) == len(shares):
                trial.commit()
                self._record(pod.key, (node, (g,)))
                for p, where in moved:
                    self._record(p.key, where)
                return True
        trial.discard()
        return False
