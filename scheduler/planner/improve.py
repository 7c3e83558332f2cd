"""Improve the chosen plan by repacking a few nodes at a time, exactly, with pods that wait.

After the realisation and the repair, what is left free is often in pieces too small for what
waits: on openb, every partly used GPU had less than 250 milli free while shares of 220 to 810
waited, and moving one share at a time placed none. Here a waiting pod picks a neighbourhood (a
node that could hold it, were this cycle's pods there moved, and a few nodes of the same GPU
model to take them), the pods this cycle put there come off, and an exact model
(scheduler.solver.neighbourhood) puts them back with the waiting pod and a few others, pairing
share sizes per GPU. A repack is kept only when the plan is then worth more and every check of
the cycle's state passes (CPU, memory, spread, power); otherwise it is taken back.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping

from scheduler.fit.cycle import Cycle
from scheduler.fit.state import Placement
from scheduler.fit.statement import Statement
from scheduler.fit.value import pending_values
from scheduler.model import Pod
from scheduler.solver.neighbourhood import Piece, Room, Spot, repack

_NODES = 2  # nodes per neighbourhood: the one the waiting pod needs, and one to take movers
_SEEDS = 8  # the waiting pod's node is drawn from this many of the most promising
_PARTNERS = 12  # the other nodes are drawn from this many with the most GPU room
_OTHERS = 8  # waiting pods of other shapes offered to each repack besides the one it is for
REPACK_SECONDS = 0.05  # CP-SAT's deterministic time per repack
_FAILS = 3  # failed repacks of a shape since its last success before it is skipped
_GIVE_UP = 12  # repacks in a row that place nothing before the search ends


def improve(
    cycle: Cycle,
    placed: dict[str, Placement],
    seed: int,
    time_left: Callable[[], float] | None = None,
    rounds: int | None = None,
    frozen: Collection[int] = (),
) -> int:
    """Repacks neighbourhoods while `time_left` leaves room for one more (or `rounds` times);
    updates `placed` and the cycle's state, and returns how many repacks were kept. Pods on
    `frozen` nodes stay (where the plan evicts, they are what the eviction was for)."""
    if time_left is not None and time_left() <= 0:
        return 0  # past the limit, building the view of the plan would only make it later
    return _Search(cycle, placed, seed, frozen).run(time_left, rounds)


def repack_running(
    cycle: Cycle,
    placed: dict[str, Placement],
    seed: int,
    running: Mapping[str, tuple[Pod, Placement]],
    costs: Mapping[str, int],
    budget: int,
    time_left: Callable[[], float] | None = None,
    rounds: int | None = None,
    frozen: Collection[int] = (),
) -> dict[str, tuple[Placement, Placement]]:
    """The same repacks with `running` pods movable too, each at its cost (in the objective's
    units), at most `budget` of them moved in all: defragmentation where moving one pod at a
    time finds no room (a full cluster). Returns the running pods moved: (from, to)."""
    if budget <= 0 or not running or (time_left is not None and time_left() <= 0):
        return {}
    search = _Search(cycle, placed, seed, frozen, running, costs, budget)
    search.run(time_left, rounds)
    return {
        k: (search.origin[k], search.at[k])
        for k in search.origin
        if search.origin[k] != search.at[k]
    }


def _shape(p: Pod) -> tuple:
    milli = p.gpu_milli if p.fractional else 0
    return (p.gpus, milli, p.cpu_milli, p.memory_mi_b, tuple(p.gpu_models))


class _Search:
    def __init__(
        self,
        cycle: Cycle,
        placed: dict[str, Placement],
        seed: int,
        frozen: Collection[int],
        running: Mapping[str, tuple[Pod, Placement]] | None = None,
        costs: Mapping[str, int] | None = None,
        budget: int = 0,
    ) -> None:
        self.state, self.placed = cycle.state, placed
        self.value = {k: v for k, (v, _) in pending_values(cycle).items()}
        self.rng = random.Random(seed)
        self.seed = seed
        state = self.state
        # Pods that may go anywhere in a repack: this cycle's, not gang members (a gang moves
        # whole), without a spread limit (the model does not count apps per node).
        self.movable = {
            p.key: p
            for p in cycle.pending
            if p.gpus and not p.gang_key and state.spread_limit(p) is None
        }
        # Running pods that may move too, where they are now and where they first were.
        self.running = set(running or ())
        self.costs = costs or {}
        self.budget = budget
        self.at: dict[str, Placement] = {}
        self.origin: dict[str, Placement] = {}
        for key, (p, where) in (running or {}).items():
            if where[0] not in frozen:
                self.movable[key] = p
                self.at[key] = self.origin[key] = where
        self.on_node: dict[int, set[str]] = defaultdict(set)
        self.held = Counter[int]()  # GPU milli of movable pods, by node
        self.held_cpu = Counter[int]()
        self.held_mem = Counter[int]()
        for key, where in placed.items():
            if where[0] in frozen:
                self.movable.pop(key, None)
            elif key in self.movable:
                self.at[key] = where
        for key, (node, _) in self.at.items():
            self._hold(key, node, 1)
        self.by_model: dict[str, list[int]] = defaultdict(list)
        for i, n in enumerate(state.nodes):
            if state.class_of[i] >= 0 and i not in frozen:
                self.by_model[n.gpu_model].append(i)

    def _hold(self, key: str, node: int, sign: int) -> None:
        p = self.movable[key]
        if sign > 0:
            self.on_node[node].add(key)
        else:
            self.on_node[node].discard(key)
        self.held[node] += sign * p.milli_total
        self.held_cpu[node] += sign * p.cpu_milli
        self.held_mem[node] += sign * p.memory_mi_b

    def _free(self, node: int) -> int:
        return sum(r for r in self.state.res[node] if r > 0)

    def run(self, time_left: Callable[[], float] | None, rounds: int | None) -> int:
        fails: Counter[tuple] = Counter()
        kept = tried = failed = turn = 0
        longest = 0.0  # the longest repack so far: the next one may take as long
        while rounds is None or tried < rounds:
            if time_left is not None:
                left = time_left()
                if left <= 1.5 * longest or left <= 0:
                    break
            waiting = [
                p for k, p in self.movable.items() if k not in self.at and fails[_shape(p)] < _FAILS
            ]
            if not waiting:
                break
            # Shapes in turn, the most valuable first (of a shape, the first pod by key): a
            # shape that cannot be placed does not hold up the others.
            shapes = sorted(
                {_shape(p): p for p in sorted(waiting, key=lambda p: p.key, reverse=True)}.values(),
                key=lambda p: (-self.value[p.key], _shape(p)),
            )
            target = shapes[turn % len(shapes)]
            turn += 1
            tried += 1
            took = time_left() if time_left is not None else 0.0
            if self._try(target, waiting):
                kept += 1
                fails[_shape(target)] = failed = 0
            else:
                fails[_shape(target)] += 1
                failed += 1
                if failed == _GIVE_UP:
                    break
            if time_left is not None:
                longest = max(longest, took - time_left())
        return kept

    def _neighbourhood(self, pod: Pod) -> list[int]:
        state, need = self.state, pod.milli_total
        seeds = []
        for model, nodes in self.by_model.items():
            if pod.gpu_models and model not in pod.gpu_models:
                continue
            for n in nodes:
                room = self._free(n) + self.held[n]
                if (
                    room >= need
                    and state.cpu[n] + self.held_cpu[n] >= pod.cpu_milli
                    and state.mem[n] + self.held_mem[n] >= pod.memory_mi_b
                ):
                    seeds.append((max(state.res[n]), room, n))
        if not seeds:
            return []
        seeds.sort(reverse=True)
        first = self.rng.choice(seeds[:_SEEDS])[2]
        others = sorted(
            (n for n in self.by_model[state.nodes[first].gpu_model] if n != first),
            key=lambda n: (-self._free(n), n),
        )[:_PARTNERS]
        return [first, *self.rng.sample(others, min(_NODES - 1, len(others)))]

    def _try(self, target: Pod, waiting: list[Pod]) -> bool:
        state = self.state
        nodes = self._neighbourhood(target)
        if not nodes:
            return False
        movers = [self.movable[k] for n in nodes for k in sorted(self.on_node[n])]
        # One waiting pod per other shape, the most valuable, that one of the nodes may take.
        others: dict[tuple, Pod] = {}
        for p in sorted(waiting, key=lambda p: (-self.value[p.key], p.key)):
            s = _shape(p)
            if (
                p is not target
                and s not in others
                and s != _shape(target)
                and any(state.model_ok(p, n) for n in nodes)
            ):
                others[s] = p
                if len(others) == _OTHERS:
                    break
        pieces = [*movers, target, *others.values()]
        index = {n: r for r, n in enumerate(nodes)}
        trial = Statement(state)
        for p in movers:
            trial.remove(p, *self.at[p.key])
        rooms = [
            Room(tuple(max(0, g) for g in state.res[n]), state.cpu[n], state.mem[n]) for n in nodes
        ]
        spec = []
        for p in pieces:
            fit = [n for n in nodes if state.model_ok(p, n)]
            at = self.at.get(p.key)
            spot: Spot | None = (index[at[0]], at[1]) if at is not None else None
            # A running pod back where it first was costs nothing; elsewhere, its move's cost.
            first = self.origin.get(p.key)
            home: Spot | None = (
                (index[first[0]], first[1]) if first is not None and first[0] in index else None
            )
            spec.append(
                Piece(
                    gpus=p.gpus,
                    milli=p.gpu_milli if p.fractional else 0,
                    cpu=p.cpu_milli,
                    mem=p.memory_mi_b,
                    value=self.value.get(p.key, 0),
                    rooms=tuple(index[n] for n in fit),
                    watts=tuple(state.watts(p, n) for n in fit),
                    at=home if p.key in self.running else spot,
                    must=p.key in self.running,
                    cost=self.costs.get(p.key, 0),
                )
            )
        # Running pods already away from where they were, outside what this repack decides:
        # they count against the budget whatever it does.
        decided = {
            p.key for p in movers if p.key in self.running and self.origin[p.key][0] in index
        }
        moved_elsewhere = sum(
            1 for k in self.origin if self.at.get(k) != self.origin[k] and k not in decided
        )
        answer = repack(
            rooms,
            spec,
            self._watts_room(nodes),
            REPACK_SECONDS,
            self.seed,
            max_moved=self.budget - moved_elsewhere if self.running else None,
        )
        if answer is None or not self._apply(trial, nodes, pieces, answer):
            trial.discard()
            return False
        trial.commit()
        for p in movers:
            self._hold(p.key, self.at.pop(p.key)[0], -1)
            self.placed.pop(p.key, None)
        for p, spot in zip(pieces, answer, strict=True):
            if spot is not None:
                self.at[p.key] = (nodes[spot[0]], spot[1])
                if p.key not in self.running:
                    self.placed[p.key] = self.at[p.key]
                self._hold(p.key, nodes[spot[0]], 1)
        return True

    def _watts_room(self, nodes: list[int]) -> int | None:
        """The most the neighbourhood may draw, the movable pods off: the least headroom of the
        budgeted domains above it. Only a guide for the model: _apply checks every domain."""
        state = self.state
        rooms = [
            state.budget[d] - state.power[d]
            for d in {d for n in nodes for d in state.chain[n]}
            if d in state.budget
        ]
        return max(0, min(rooms)) if rooms else None

    def _apply(
        self, trial: Statement, nodes: list[int], pieces: list[Pod], answer: list[Spot | None]
    ) -> bool:
        state = self.state
        for p, spot in zip(pieces, answer, strict=True):
            if spot is None:
                continue
            n, gpus = nodes[spot[0]], spot[1]
            need = p.gpu_milli if p.fractional else 1000
            if not (
                all(state.res[n][g] >= need for g in gpus)
                and state.host_ok(p, n)
                and state.power_ok(p, n)
            ):
                return False
            trial.place(p, n, gpus)
        return True
