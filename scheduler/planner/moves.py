"""Moving running pods off failing GPUs, before a cycle places pending work.

Pods on a failed GPU move at once; pods on a GPU in a state the policy names (moves.migrateOn)
move where the failure they risk costs more than the move (MoveRules). The most at risk go
first, within the cycle's move budget. A gang moves whole (every member restarts on healthy
GPUs), or where the policy allows only the member on the bad GPU is replaced. An inference pod
moves by surge: its replacement is placed while its old copy still counts, so the two can run
side by side. A pod that is not preemptible never moves, and a move with nowhere to go is not
made (the plan says so). The moved pods then run where they moved to for the rest of the cycle:
nothing else in it evicts or moves them again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from scheduler.execute.steps import surges
from scheduler.fit.disruption import held_by_budgets
from scheduler.fit.state import ClusterState
from scheduler.fit.statement import Statement
from scheduler.model import ClusterSnapshot, HealthState, Move, PackingPolicy, Pod

_RANK = {HealthState.FAILED: 3, HealthState.DEGRADED: 2, HealthState.SUSPECT: 1}


@dataclass
class _Unit:
    pods: list[Pod]  # moved together: one pod, or a gang's running members
    why: str  # the bad GPU, for the reason line
    state: HealthState
    risk: float  # GPU-seconds a failure would cost
    cost: float  # GPU-seconds the move costs


def _worst_gpu(pod: Pod, snapshot_nodes) -> tuple[HealthState, int] | None:
    node = snapshot_nodes[pod.node]
    bad = [(node.health_of(g), g) for g in pod.gpu_indices]
    bad = [(s, g) for s, g in bad if s in _RANK]
    return max(bad, key=lambda sg: _RANK[sg[0]]) if bad else None


def _units(snapshot: ClusterSnapshot, policy: PackingPolicy) -> list[_Unit]:
    rules = policy.moves
    nodes = {n.name: n for n in snapshot.nodes}
    running = [p for p in snapshot.pods if p.node is not None and p.node in nodes]
    members: dict[str, list[Pod]] = defaultdict(list)
    for p in running:
        if p.gang_key is not None:
            members[p.gang_key].append(p)
    units: dict[str, _Unit] = {}
    for p in running:
        worst = _worst_gpu(p, nodes)
        if worst is None:
            continue
        state, gpu = worst
        if state != HealthState.FAILED and state not in rules.migrate_on:
            continue
        whole_gang = p.gang_key is not None and not rules.replace_gang_member
        key = p.gang_key if whole_gang else p.key
        pods = members[p.gang_key] if whole_gang else [p]  # type: ignore[index]
        unit = units.get(key)  # type: ignore[arg-type]
        if unit is not None and _RANK[unit.state] >= _RANK[state]:
            continue
        risk = cost = 0.0
        for q in pods:
            since = q.seconds_since_checkpoint
            lost = rules.since_checkpoint_seconds if since is None else since
            restart = rules.restart_cost(q)
            risk += rules.fail_chance.of(state) * (q.milli_total / 1000 * lost + restart)
            cost += restart
        units[key] = _Unit(pods, f"GPU {p.node}/{gpu} {state}", state, risk, cost)  # type: ignore[index]
    return sorted(
        units.values(), key=lambda u: (-_RANK[u.state], -(u.risk - u.cost), u.pods[0].key)
    )


class Moved(NamedTuple):
    moves: list[Move]
    snapshot: ClusterSnapshot  # as it stands after the moves; moved pods are not preemptible
    notes: list[str]  # one per reason work that should move cannot
    state: ClusterState | None  # the cluster read in, the moves made (None: nothing was read)


def plan_moves(snapshot: ClusterSnapshot, policy: PackingPolicy) -> Moved:
    """The moves, and the snapshot as it stands after them (moved pods where they go, and not
    preemptible for the rest of the cycle); the cluster read in to find their places, which the
    cycle then plans on (fit.cycle.start_cycle's state) instead of reading it in again."""
    rules = policy.moves
    if not any(h.state in _RANK for n in snapshot.nodes for h in n.gpu_health):
        return Moved([], snapshot, [], None)  # the common case: every GPU healthy
    units = [
        u for u in _units(snapshot, policy) if u.state == HealthState.FAILED or u.risk > u.cost
    ]
    running = [p for p in snapshot.pods if p.node is not None]
    recent = snapshot.metadata.moves_last_hour
    if not units or rules.budget(len(running), recent) == 0:
        return Moved([], snapshot, [], None)
    state = ClusterState.unclassed(snapshot, policy)
    held = held_by_budgets(snapshot)
    moves: list[Move] = []
    # Work that should move and cannot, by why: one note each (at thousands of nodes, dozens
    # of pods may wait on the budget at once).
    stuck: dict[str, list[str]] = defaultdict(list)
    after: dict[str, tuple[str, tuple[int, ...]]] = {}
    left = rules.budget(len(running), recent)
    for unit in units:
        what = unit.pods[0].gang_key if len(unit.pods) > 1 else unit.pods[0].key
        budget = next((held[p.key] for p in unit.pods if p.key in held), None)
        if budget is not None:
            stuck[f"is held by PodDisruptionBudget {budget} and does not move"].append(
                f"{what} on {unit.why}"
            )
            continue
        if any(not p.movable for p in unit.pods):
            stuck["does not move (not preemptible, or nothing would recreate it)"].append(
                f"{what} on {unit.why}"
            )
            continue
        if len(unit.pods) > left:
            stuck[
                f"waits: the cycle's move budget ({rules.budget(len(running), recent)}: "
                "moves.perCycle, perCycleShare, perHour) is spent"
            ].append(f"{what} on {unit.why}")
            continue
        placed = _place(state, unit.pods)
        if placed is None:
            stuck["has nowhere to go"].append(f"{what} on {unit.why}")
            continue
        left -= len(unit.pods)
        reason = "failure" if unit.state == HealthState.FAILED else "migration"
        for p, (node, gpus) in zip(unit.pods, placed, strict=True):
            name = state.nodes[node].name
            after[p.key] = (name, gpus)
            moves.append(
                Move(
                    pod=p.key,
                    from_node=p.node,  # type: ignore[arg-type]
                    to_node=name,
                    gpu_indices=list(gpus),
                    cost=round(rules.restart_cost(p), 3),
                    reason=f"{reason}: {unit.why} (risk {unit.risk:.0f} > cost "
                    f"{unit.cost:.0f} GPU-seconds)"
                    if reason == "migration"
                    else f"{reason}: {unit.why}",
                )
            )
    pods = [
        p.model_copy(
            update={
                "node": after[p.key][0],
                "gpu_indices": list(after[p.key][1]),
                "preemptible": False,
            }
        )
        if p.key in after
        else p
        for p in snapshot.pods
    ]
    notes = [
        f"moves: {items[0]}" + (f" and {len(items) - 1} more" if len(items) > 1 else "") + f" {why}"
        for why, items in stuck.items()
    ]
    return Moved(moves, snapshot.model_copy(update={"pods": pods}), notes, state)


def _place(state, pods: list[Pod]) -> list[tuple[int, tuple[int, ...]]] | None:
    """New places for the pods, all or none, made in the state: a surge finds its place with
    the old copy still counted, a restart after the old copies are gone."""
    statement = Statement(state)
    old = [(p, state.node_index[p.node], tuple(p.gpu_indices)) for p in pods]
    surge = len(pods) == 1 and surges(pods[0])
    if not surge:
        for p, node, gpus in old:
            statement.remove(p, node, gpus)
    placed = []
    for p in pods:
        where = state.find(p)
        if where is None:
            statement.discard()
            return None
        statement.place(p, *where)
        placed.append(where)
    if surge:
        statement.remove(*old[0])
    statement.commit()
    return placed
