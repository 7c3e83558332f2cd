"""Swaps and repacks after the realisation: a waiting pod takes the place of a less valuable pod
of this cycle's (scheduler.planner.swap), and a few nodes are repacked exactly with waiting pods
(scheduler.planner.improve). The plan is worth more after each, running pods never move, the
cycle's state stays what its placements say, and a node where the plan evicts is left alone."""

from __future__ import annotations

from builders import bind, cycle_with, domain, node, plan_of, pod, policy, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.fit.cycle import start_cycle
from scheduler.fit.value import pending_values
from scheduler.planner.improve import improve
from scheduler.planner.swap import swap
from scheduler.verify import check_plan


def _value(cycle, placed):
    values = pending_values(cycle)
    return sum(values[k][0] for k in placed)


def _gpus_of(cycle, placed):
    """GPU milli used by this cycle's pods, by (node name, GPU)."""
    by_key = {p.key: p for p in cycle.pending}
    used: dict[tuple[str, int], int] = {}
    for key, (n, gpus) in placed.items():
        p = by_key[key]
        for g in gpus:
            k = (cycle.state.nodes[n].name, g)
            used[k] = used.get(k, 0) + (p.gpu_milli if p.fractional else 1000)
    return used


def _assert_state_matches(cycle, placed):
    """The state the search left equals a fresh one with the same placements."""
    fresh = start_cycle(cycle.snapshot, cycle.policy).state
    by_key = {p.key: p for p in cycle.pending}
    for key, where in placed.items():
        fresh.place(by_key[key], *where)
    state = cycle.state
    assert state.res == fresh.res
    assert state.cpu == fresh.cpu and state.mem == fresh.mem
    assert dict(state.power) == dict(fresh.power)
    assert all(r >= 0 for row in state.res for r in row if r != -1)
    assert min(state.cpu) >= 0 and min(state.mem) >= 0


def test_a_waiting_share_takes_the_place_of_a_smaller_one():
    # One GPU holds 650 + 230 (120 idle); a 320 waits. 650 + 320 leaves 30 idle.
    snap = snapshot(
        [node("a", 1)],
        [
            pod("big", "inference", milli=650),
            pod("small", "inference", milli=230),
            pod("waiting", "inference", milli=320),
        ],
    )
    cycle, placed = cycle_with(snap, {"big": ("a", [0]), "small": ("a", [0])})
    before = _value(cycle, placed)
    assert swap(cycle, placed) == 1
    assert set(placed) == {"default/big", "default/waiting"}
    assert _value(cycle, placed) > before
    _assert_state_matches(cycle, placed)


def test_the_share_swapped_out_goes_where_it_fits():
    snap = snapshot(
        [node("a", 1), node("b", 1)],
        [
            pod("big", "inference", milli=650),
            pod("small", "inference", milli=230),
            pod("other", "inference", milli=750),
            pod("waiting", "inference", milli=320),
        ],
    )
    cycle, placed = cycle_with(snap, {"big": ("a", [0]), "small": ("a", [0]), "other": ("b", [0])})
    assert swap(cycle, placed) == 1
    assert len(placed) == 4  # small found the 250 left on b
    assert _gpus_of(cycle, placed) == {("a", 0): 970, ("b", 0): 980}
    _assert_state_matches(cycle, placed)


def test_a_running_share_is_never_swapped_out():
    snap = snapshot(
        [node("a", 1)],
        [
            pod("big", "inference", milli=650),
            pod("running", "inference", milli=230, on=("a", [0])),
            pod("waiting", "inference", milli=320),
        ],
    )
    cycle, placed = cycle_with(snap, {"big": ("a", [0])})
    assert swap(cycle, placed) == 0
    assert set(placed) == {"default/big"}


def test_no_swap_for_a_pod_worth_less():
    # The waiting share is larger but worth less: 230 x (1000 + 500) > 320 x 1000.
    snap = snapshot(
        [node("a", 1)],
        [
            pod("big", "inference", milli=650),
            pod("small", "inference", milli=230, priority=500),
            pod("waiting", "inference", milli=320),
        ],
    )
    cycle, placed = cycle_with(snap, {"big": ("a", [0]), "small": ("a", [0])})
    assert swap(cycle, placed) == 0
    assert set(placed) == {"default/big", "default/small"}


def test_a_swap_respects_cpu():
    # The 320 needs 8 cores; the node has 2 left even with the 230 (4 cores) gone.
    snap = snapshot(
        [node("a", 1, cpu=10_000)],
        [
            pod("big", "inference", milli=650, cpu=4_000),
            pod("small", "inference", milli=230, cpu=4_000),
            pod("waiting", "inference", milli=320, cpu=8_000),
        ],
    )
    cycle, placed = cycle_with(snap, {"big": ("a", [0]), "small": ("a", [0])})
    assert swap(cycle, placed) == 0


def _split_pair():
    # a: 400 + 400 on its one GPU; b: 300 + 300. A 600 waits. No single swap places it and
    # keeps everything: only a repack of both nodes (a: 400 + 600, b: 300 + 300 + 400) does.
    return snapshot(
        [node("a", 1), node("b", 1)],
        [
            pod("a1", "inference", milli=400),
            pod("a2", "inference", milli=400),
            pod("b1", "inference", milli=300),
            pod("b2", "inference", milli=300),
            pod("waiting", "inference", milli=600),
        ],
    )


_SPLIT = {"a1": ("a", [0]), "a2": ("a", [0]), "b1": ("b", [0]), "b2": ("b", [0])}


def test_a_repack_of_two_nodes_places_what_no_single_move_does():
    cycle, placed = cycle_with(_split_pair(), _SPLIT)
    before = _value(cycle, placed)
    assert improve(cycle, placed, seed=0, rounds=4) >= 1
    assert len(placed) == 5
    assert sorted(_gpus_of(cycle, placed).values()) == [1000, 1000]
    assert _value(cycle, placed) > before
    _assert_state_matches(cycle, placed)


def test_a_repack_is_reproducible():
    results = []
    for _ in range(2):
        cycle, placed = cycle_with(_split_pair(), _SPLIT)
        improve(cycle, placed, seed=3, rounds=4)
        results.append(dict(placed))
    assert results[0] == results[1]


def test_a_frozen_node_is_left_alone():
    # With a frozen, only b is repacked: the 600 takes a 300's place there.
    cycle, placed = cycle_with(_split_pair(), _SPLIT)
    frozen = {cycle.state.node_index["a"]}
    assert (
        swap(cycle, placed, frozen=frozen) + improve(cycle, placed, seed=0, rounds=4, frozen=frozen)
        >= 1
    )
    on_a = {k for k, (n, _) in placed.items() if n in frozen}
    assert on_a == {"default/a1", "default/a2"}
    assert "default/waiting" in placed
    _assert_state_matches(cycle, placed)


def test_nothing_moves_where_every_node_is_frozen():
    cycle, placed = cycle_with(_split_pair(), _SPLIT)
    before = dict(placed)
    frozen = set(range(len(cycle.state.nodes)))
    assert swap(cycle, placed, frozen=frozen) == 0
    assert improve(cycle, placed, seed=0, rounds=4, frozen=frozen) == 0
    assert placed == before


def test_a_repack_keeps_the_power_budget():
    # The rack takes 1,400 W of load: the repack that places the 600 as well would draw more
    # (H100 at 700 W a GPU, shares drawing in proportion), so nothing changes.
    snap = snapshot(
        [node("a", 1, domain="rack"), node("b", 1, domain="rack")],
        [
            pod("a1", "inference", milli=400),
            pod("a2", "inference", milli=400),
            pod("b1", "inference", milli=300),
            pod("b2", "inference", milli=300),
            pod("waiting", "inference", milli=600),
        ],
        domains=[domain("rack", budget=1_300)],
    )
    cycle, placed = cycle_with(snap, _SPLIT)
    drawn = cycle.state.power["rack"]
    assert drawn <= 1_300
    improve(cycle, placed, seed=0, rounds=8)
    assert cycle.state.power["rack"] <= 1_300
    _assert_state_matches(cycle, placed)


@st.composite
def crowded(draw):
    """More shares than GPUs take, of sizes that pair well or badly, on one to three nodes of one
    or two GPUs (CPU sometimes short, a rack budget sometimes binding, a share sometimes
    running), placed first fit in a drawn order: room left in pieces while pods wait."""
    nodes = [
        node(f"n{i}", draw(st.integers(1, 2)), cpu=draw(st.sampled_from([12_000, 64_000])))
        for i in range(draw(st.integers(1, 3)))
    ]
    sizes = st.sampled_from([200, 250, 300, 400, 500, 600, 700, 1000])
    pods = []
    for i in range(draw(st.integers(3, 10))):
        milli = draw(sizes)
        pods.append(
            pod(
                f"p{i}",
                draw(st.sampled_from(["training", "inference"])),
                milli=milli,
                priority=draw(st.sampled_from([0, 0, 100])),
                cpu=draw(st.sampled_from([0, 4_000, 8_000])),
            )
        )
    if draw(st.booleans()):
        pods.append(pod("running", "inference", milli=300, on=("n0", [0])))
    budget = draw(st.sampled_from([None, None, 1_500]))
    snap = snapshot(nodes, pods, domains=[domain("rack", budget=budget)])
    return snap, draw(st.permutations(range(len(pods))))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(crowded())
def test_swaps_and_repacks_only_add_value_and_stay_feasible(case):
    """A first-fit plan swapped and repacked is worth at least as much, its state is what its
    placements say, no running pod moves, and the independent checker passes it."""
    snap, order = case
    pol = policy()
    cycle = start_cycle(snap, pol)
    state, placed = cycle.state, {}
    for i in order:
        p = next((q for q in cycle.pending if q.key == f"default/p{i}"), None)
        if p is None:
            continue
        for n in range(len(state.nodes)):
            gpus = state.gpus_for(p, n)
            if gpus is not None and state.host_ok(p, n) and state.power_ok(p, n):
                state.place(p, n, gpus)
                placed[p.key] = (n, gpus)
                break
    before = _value(cycle, placed)
    swap(cycle, placed)
    improve(cycle, placed, seed=0, rounds=6)
    assert _value(cycle, placed) >= before
    assert set(placed) <= {p.key for p in cycle.pending}
    _assert_state_matches(cycle, placed)
    names = [n.name for n in snap.nodes]
    bindings = [bind(key, names[n], *gpus) for key, (n, gpus) in placed.items()]
    assert check_plan(snap, pol, plan_of(bindings)) == []
