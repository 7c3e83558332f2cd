"""Defragmentation: a few running pods move so that waiting work fits.

After the cycle's plan is made, each waiting unit (a pod, or a gang whole) that fits nowhere is
tried on the nodes that come closest (the fewest GPUs short, counting what movable pods hold
there): the cheapest movable pods on the node move elsewhere, one at a time, until the waiting
pod fits. Of up to _CANDIDATES such nodes the one needing the fewest moves, then the cheapest,
wins. A move's new place is found with its old copy still counted, so an inference replica can
surge. Movable: running, preemptible, not in a gang, not moved or evicted by this plan already.

A unit is placed this way only when it is worth more than its moves cost (its GPUs for
moves.worthSeconds against each move's restart GPU-seconds) and the cycle's move budget holds
them all; one that would fit but for the budget is explained as such.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from scheduler.fit.cycle import Cycle
from scheduler.fit.greedy import unit_order, units_of
from scheduler.fit.state import ClusterState, Placement
from scheduler.fit.statement import Statement
from scheduler.fit.value import pod_value
from scheduler.model import Move, Pod
from scheduler.planner.improve import repack_running

_CANDIDATES = 8  # nodes weighed per waiting pod, as kube-scheduler bounds its dry runs
_UNITS = 32  # waiting units tried per cycle


@dataclass
class _Relocation:
    pod: Pod
    old: Placement
    new: Placement
    cost: float


def defragment(
    cycle: Cycle,
    placed: dict[str, Placement],
    off_limits: set[str],
    budget: int,
    stop: Callable[[], bool] | None = None,
) -> tuple[list[Move], dict[str, str]]:
    """Moves that let waiting units fit (they are placed in `placed` and the state), and a line
    for each waiting pod that would fit after moves the budget did not allow."""
    state, policy = cycle.state, cycle.policy
    rules = policy.moves
    running = _movable(cycle, off_limits)
    on_node: dict[int, list[str]] = defaultdict(list)
    for key, (_, (node, _)) in running.items():
        on_node[node].append(key)
    waiting = units_of(p for p in cycle.pending if p.key not in placed and p.gpus > 0)
    moves: list[Move] = []
    why: dict[str, str] = {}
    for unit in unit_order(waiting, policy)[:_UNITS]:
        if stop is not None and stop():
            break
        statement = Statement(state)
        relocations: list[_Relocation] = []
        where: list[tuple[Pod, Placement]] = []
        for pod in sorted(unit, key=lambda p: -p.milli_total):
            found = state.find(pod)
            if found is None:
                found = _make_room(state, pod, running, on_node, statement, relocations, rules)
            if found is None:
                break
            statement.place(pod, *found)
            where.append((pod, found))
        cost = sum(r.cost for r in relocations)
        worth = sum(p.milli_total / 1000 for p in unit) * rules.worth_seconds
        if len(where) < len(unit) or not relocations or worth <= cost:
            statement.discard()
            continue
        if len(relocations) > budget - len(moves):
            statement.discard()
            target = state.nodes[where[0][1][0]].name
            for p in unit:
                why[p.key] = (
                    f"defragmentation: would fit on {target} after moving {len(relocations)} "
                    f"running pods ({cost:g} GPU-seconds), but the cycle's move budget "
                    f"({_limits(rules)}) has {budget - len(moves)} left"
                )
            continue
        statement.commit()
        for p, found in where:
            placed[p.key] = found
        for r in relocations:
            moves.append(
                Move(
                    pod=r.pod.key,
                    from_node=state.nodes[r.old[0]].name,
                    to_node=state.nodes[r.new[0]].name,
                    gpu_indices=list(r.new[1]),
                    cost=round(r.cost, 3),
                    reason=f"defragmentation: makes room for {unit[0].gang_key or unit[0].key}",
                )
            )
            del running[r.pod.key]
    return moves, why


def _movable(cycle: Cycle, off_limits: set[str]) -> dict[str, tuple[Pod, Placement]]:
    """Running pods a defragmentation may move, with where they run: movable, not in a
    gang (a gang moves whole), not evicted or moved by this plan already."""
    index = cycle.state.node_index
    return {
        p.key: (p, (index[p.node], tuple(p.gpu_indices)))
        for p in cycle.snapshot.pods
        if p.node is not None
        and p.node in index
        and p.movable
        and p.gang is None
        and p.key not in off_limits
    }


def _make_room(
    state: ClusterState,
    pod: Pod,
    running: dict[str, tuple[Pod, Placement]],
    on_node: dict[int, list[str]],
    statement: Statement,
    relocations: list[_Relocation],
    rules,
) -> Placement | None:
    """The pod's place on the best node after moving the cheapest movable pods off it, the
    moves made in the state and recorded; None when no node comes free that way."""
    best: tuple[tuple[int, float], int, list[_Relocation]] | None = None
    taken = {r.pod.key for r in relocations}  # moved already for another member of the unit
    for node in _closest(state, pod, running, on_node, taken):
        mark = statement.checkpoint()
        trial: list[_Relocation] = []
        fits = _relocate_until_fits(
            state, pod, node, running, on_node, statement, trial, rules, taken
        )
        statement.discard(mark)
        if fits:
            key = (len(trial), sum(r.cost for r in trial))
            if best is None or key < best[0]:
                best = (key, node, trial)
    if best is None:
        return None
    # The best trial again, exactly: looking the places up anew could find others (a node
    # taken out and put back goes to the end of its buckets).
    _, node, trial = best
    mark = statement.checkpoint()
    for r in trial:
        statement.place(r.pod, *r.new)
        statement.remove(r.pod, *r.old)
    gpus = state.gpus_for(pod, node)
    if gpus is None or not _fits(state, pod, node):
        statement.discard(mark)
        return None
    relocations += trial
    return node, gpus


def _closest(state: ClusterState, pod: Pod, running, on_node, taken: set[str]) -> list[int]:
    """Nodes where the pod's GPUs would be free if the movable pods there left, the fewest GPUs
    short first: the first _CANDIDATES."""
    need = 1 if pod.fractional else pod.gpus
    scored = []
    for node, keys in on_node.items():
        keys = [k for k in keys if k in running and k not in taken]
        if not keys or not state.model_ok(pod, node) or state.class_of[node] < 0:
            continue
        held = {g for k in keys for g in running[k][1][1]}
        usable = sum(1 for r in state.res[node] if r == 1000) + sum(
            1 for g in held if state.res[node][g] >= 0
        )
        if usable >= need:
            scored.append((need - state.nfree[node], node))
    return [n for _, n in sorted(scored)[:_CANDIDATES]]


def _relocate_until_fits(state, pod, node, running, on_node, statement, out, rules, taken) -> bool:
    keys = [k for k in on_node[node] if k in running and k not in taken]
    keys.sort(key=lambda k: (rules.restart_cost(running[k][0]), k))
    for key in keys:
        if _fits(state, pod, node):
            return True
        p, old = running[key]
        new = state.find(p)
        if new is None or new[0] == node:
            continue  # nowhere else to go, or only back onto this node
        statement.place(p, *new)  # the new copy, counted beside the old one
        statement.remove(p, *old)
        out.append(_Relocation(p, old, new, rules.restart_cost(p)))
    return _fits(state, pod, node)


def _fits(state: ClusterState, pod: Pod, node: int) -> bool:
    return (
        state.gpus_for(pod, node) is not None
        and state.host_ok(pod, node)
        and state.power_ok(pod, node)
        and state.model_ok(pod, node)
    )


def _limits(rules) -> str:
    """The move limits the policy sets, as the reason line names them."""
    out = [f"moves.perCycle {rules.per_cycle}"]
    if rules.per_cycle_share is not None:
        out.append(f"perCycleShare {rules.per_cycle_share:g}")
    if rules.per_hour is not None:
        out.append(f"perHour {rules.per_hour}")
    return ", ".join(out)


def defragment_by_repacks(
    cycle: Cycle,
    placed: dict[str, Placement],
    off_limits: set[str],
    budget: int,
    seed: int,
    time_left: Callable[[], float] | None = None,
    rounds: int | None = None,
    frozen: Collection[int] = (),
) -> list[Move]:
    """Where a full cluster leaves a moved pod nowhere to go alone: exact repacks of two nodes
    at a time (planner.improve) with running pods movable too, each at its cost: its own value
    times its restart over moves.worthSeconds, so a move pays only where the waiting pods it
    lets in are worth more. Pods not in a gang and without a spread limit. Returns the moves,
    with the pods they let in placed in `placed` and the state."""
    # Inference pods move here by restart (Move.restart), not by surge: a repack counts each
    # pod once, so a replica beside its old copy could find its GPUs taken. An app's other
    # replicas serve meanwhile; one without a spread limit has no others this knows of.
    state, policy = cycle.state, cycle.policy
    rules = policy.moves
    running = {
        k: (p, where)
        for k, (p, where) in _movable(cycle, off_limits).items()
        if p.gpus and state.spread_limit(p) is None
    }
    worth = max(rules.worth_seconds, 1e-9)
    costs = {
        k: round(pod_value(p, policy) * rules.restart_seconds.of(p.kind) / worth)
        for k, (p, _) in running.items()
    }
    moved = repack_running(cycle, placed, seed, running, costs, budget, time_left, rounds, frozen)
    return [
        Move(
            pod=key,
            from_node=state.nodes[old[0]].name,
            to_node=state.nodes[new[0]].name,
            gpu_indices=list(new[1]),
            cost=round(rules.restart_cost(running[key][0]), 3),
            reason="defragmentation: repacked with waiting pods",
            restart=True,
        )
        for key, (old, new) in sorted(moved.items())
    ]
