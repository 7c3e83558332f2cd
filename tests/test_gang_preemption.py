"""Preemption for a gang, all or none, where the model's counts left it waiting (found on
scattered states: high-priority gangs of whole nodes waited while low-priority pods held them)."""

from __future__ import annotations

from builders import gang, node, pod, policy, snapshot

from scheduler.fit.cycle import start_cycle
from scheduler.planner import plan
from scheduler.planner.evictions import preempt_for
from scheduler.verify import check_plan


def _full(n_nodes: int, extra: list[dict]) -> list[dict]:
    """Every GPU of every node held by a low-priority 1-GPU pod."""
    return [
        pod(f"low-{i}-{g}", on=(f"n{i}", [g])) for i in range(n_nodes) for g in range(4)
    ] + extra


def _members(cycle):
    return [[p for p in cycle.pending if p.gang_key is not None]]


def test_a_gang_evicts_on_as_many_nodes_as_it_has_members_and_no_more():
    snap = snapshot(
        [node(f"n{i}") for i in range(3)], _full(3, gang("big", 2, gpus=4, priority=10))
    )
    cycle = start_cycle(snap, policy())
    evicted, placed = {}, {}
    preempt_for(cycle, _members(cycle), evicted, placed)
    assert sorted(placed) == ["default/big-0", "default/big-1"]
    nodes = {placed[k][0] for k in placed}
    assert len(nodes) == 2
    # Exactly the four pods of each node the members took, nothing elsewhere.
    assert len(evicted) == 8
    assert {cycle.state.node_index[v.node] for v in evicted.values()} == nodes


def test_a_gang_that_cannot_place_every_member_evicts_nothing_and_leaves_the_state_as_it_was():
    # Two nodes for three members: the first two would find room, the third none.
    snap = snapshot(
        [node(f"n{i}") for i in range(2)], _full(2, gang("big", 3, gpus=4, priority=10))
    )
    cycle = start_cycle(snap, policy())
    before = ([list(r) for r in cycle.state.res], dict(cycle.state.power), list(cycle.state.cpu))
    evicted, placed = {}, {}
    preempt_for(cycle, _members(cycle), evicted, placed)
    assert evicted == {} and placed == {}
    assert ([list(r) for r in cycle.state.res], dict(cycle.state.power), list(cycle.state.cpu)) == (
        before
    )


def test_a_member_takes_free_room_first_and_pays_only_for_its_own_victims():
    # n0 is empty; n1 is full of low pods worth less than a member, n2 of pods of the gang's
    # own priority, which it may not evict.
    pods = [pod(f"low-{g}", on=("n1", [g])) for g in range(4)]
    pods += [pod(f"peer-{g}", priority=10, on=("n2", [g])) for g in range(4)]
    snap = snapshot(
        [node("n0"), node("n1"), node("n2")], pods + gang("big", 2, gpus=4, priority=10)
    )
    cycle = start_cycle(snap, policy())
    evicted, placed = {}, {}
    preempt_for(cycle, _members(cycle), evicted, placed)
    assert sorted(cycle.state.nodes[n].name for n, _ in placed.values()) == ["n0", "n1"]
    assert sorted(v.name for v in evicted.values()) == [f"low-{g}" for g in range(4)]


def test_the_whole_cycle_places_the_gang_and_the_plan_passes_the_checker():
    snap = snapshot(
        [node(f"n{i}") for i in range(3)], _full(3, gang("big", 2, gpus=4, priority=10))
    )
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    assert {b.pod for b in result.bindings} == {"default/big-0", "default/big-1"}
    assert len(result.evictions) == 8
