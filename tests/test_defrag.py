"""Defragmentation: running pods move so that waiting work fits, only where that pays."""

from __future__ import annotations

from builders import domain, gang, node, pod, policy, snapshot
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from soundness import assert_carried_out_safely

from scheduler.execute import StepKind, plan_steps
from scheduler.planner import plan
from scheduler.verify import check_plan, check_steps


def _scattered():
    """Eight free GPUs over three 4-GPU nodes, four on none: a's and b's one running pod each
    (1 GPU, training) stand in the way of a gang of two 4-GPU members; c runs two pods that
    may not move."""
    return snapshot(
        [node("a", 4), node("b", 4), node("c", 4)],
        [
            pod("p1", on=("a", [0])),
            pod("p2", on=("b", [1])),
            pod("fixed-0", preemptible=False, on=("c", [0])),
            pod("fixed-1", preemptible=False, on=("c", [1])),
            *gang("big", 2, gpus=4),
        ],
    )


def test_a_gang_that_fits_only_after_two_moves_is_placed_after_exactly_those_two():
    snap, pol = _scattered(), policy()
    result = plan(snap, pol)
    moves = sorted((m.pod, m.from_node, m.to_node) for m in result.moves)
    assert moves == [("default/p1", "a", "c"), ("default/p2", "b", "c")]
    assert all(m.reason == "defragmentation: makes room for default/big" for m in result.moves)
    bound = {b.pod: b.node for b in result.bindings}
    assert set(bound) == {"default/big-0", "default/big-1"} and set(bound.values()) == {"a", "b"}
    assert result.evictions == [] and result.unplaced == []
    assert check_plan(snap, pol, result) == []
    steps = plan_steps(result, snap)
    assert check_steps(snap, pol, result, steps) == []
    stops = {s.node: s.id for s in steps if s.kind == StepKind.STOP}
    for b in (s for s in steps if s.kind == StepKind.BIND):
        assert stops[b.node] in b.after  # the gang binds once its node is empty


def test_no_moves_without_the_budget_and_the_waiting_gang_says_what_would_fit():
    snap = _scattered()
    result = plan(snap, policy(moves={"perCycle": 1}))
    assert result.moves == [] and result.bindings == []
    reasons = {u.pod: u.reason for u in result.unplaced}
    line = reasons["default/big-0"]
    assert (
        line.startswith("defragmentation: would fit on ") and "after moving 2 running pods" in line
    )
    assert "(moves.perCycle 1) has 1 left" in line


def test_moves_that_cost_as_much_as_the_placement_is_worth_are_not_made():
    """Two training restarts cost 2 x 300 GPU-seconds; the gang's 8 GPUs are worth 8 x
    worthSeconds: at 75 s that is no more than the moves cost, at 76 s it is."""
    snap = _scattered()
    even = plan(snap, policy(moves={"worthSeconds": 75}))
    assert even.moves == [] and even.bindings == []
    assert len(plan(snap, policy(moves={"worthSeconds": 76})).moves) == 2


@st.composite
def _fragmented(draw):
    """4-GPU nodes each holding one or two small running pods (whole GPUs, inference shares, a pod
    that may not move now and then), and waiting pods of 3 or 4 GPUs, or a gang of two 4-GPU
    members; a rack budget sometimes; a move budget of 16 or 1."""
    nodes, pods = [], []
    for i in range(draw(st.integers(2, 5))):
        nodes.append(node(f"n{i}", 4))
        gpus = draw(st.lists(st.integers(0, 3), min_size=1, max_size=2, unique=True))
        for g in gpus:
            kind = draw(st.sampled_from(["training", "fine-tuning", "inference"]))
            milli = 500 if kind == "inference" and draw(st.booleans()) else 1000
            fixed = draw(st.integers(0, 5)) == 0
            pods.append(
                pod(f"r{i}-{g}", kind, milli=milli, preemptible=not fixed, on=(f"n{i}", [g]))
            )
    for k in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            pods += gang(f"g{k}", 2, gpus=4)
        else:
            pods.append(pod(f"w{k}", gpus=draw(st.integers(3, 4))))
    idle = 400 * len(nodes)
    budget = draw(st.sampled_from([None, idle + 600 * len(pods)]))
    pol = policy(moves={"perCycle": draw(st.sampled_from([16, 1]))})
    return snapshot(nodes, pods, domains=[domain("rack", budget)]), pol


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@seed(20261201)
@given(_fragmented())
def test_defragmenting_plans_are_feasible_in_every_phase_and_lose_no_pod(case):
    """Draws pinned by the seed in CI; for a wider search, change the seed or drop it and raise
    max_examples."""
    snap, pol = case
    result = plan(snap, pol)
    assert_carried_out_safely(snap, pol, result)
    assert len(result.moves) <= pol.moves.per_cycle
    pods = {p.key: p for p in snap.pods}
    assert all(pods[m.pod].preemptible and pods[m.pod].gang is None for m in result.moves)


def test_a_move_budget_as_a_share_of_the_running_pods():
    snap = _scattered()  # four pods run: half of them may move, a quarter may not do
    assert len(plan(snap, policy(moves={"perCycleShare": 0.5})).moves) == 2
    short = plan(snap, policy(moves={"perCycleShare": 0.25}))
    assert short.moves == [] and "perCycleShare 0.25) has 1 left" in short.unplaced[0].reason


def test_a_move_budget_per_hour_counts_the_moves_the_snapshot_says_were_made():
    snap = _scattered()
    pol = policy(moves={"perHour": 2})
    assert len(plan(snap, pol).moves) == 2
    meta = snap.metadata.model_copy(update={"moves_last_hour": 1})
    busy = plan(snap.model_copy(update={"metadata": meta}), pol)
    assert busy.moves == [] and "perHour 2) has 1 left" in busy.unplaced[0].reason


def test_a_full_cluster_is_defragmented_by_a_repack_where_no_single_move_finds_room():
    """Four GPUs hold 600, 600, 500 and 500 milli of inference shares; a whole-GPU pod waits.
    No share fits anywhere off its node, but two 500s fit on one GPU: the repack moves one,
    by restart (a repack counts each pod once), and the waiting pod takes the GPU it frees."""
    snap = snapshot(
        [node("a", 2), node("b", 2)],
        [
            pod("s0", "inference", milli=600, on=("a", [0])),
            pod("s1", "inference", milli=600, on=("a", [1])),
            pod("s2", "inference", milli=500, on=("b", [0])),
            pod("s3", "inference", milli=500, on=("b", [1])),
            pod("whole", "training"),
        ],
    )
    pol = policy()
    result = plan(snap, pol)
    [m] = result.moves
    assert m.pod in ("default/s2", "default/s3") and m.from_node == m.to_node == "b"
    assert m.reason == "defragmentation: repacked with waiting pods" and m.restart
    [b] = result.bindings
    assert b.pod == "default/whole" and b.node == "b" and b.gpu_indices != m.gpu_indices
    assert check_plan(snap, pol, result) == []
    steps = plan_steps(result, snap)
    assert check_steps(snap, pol, result, steps) == []
    stop = next(s for s in steps if s.kind == StepKind.STOP)
    assert not stop.surge and stop.id in next(s for s in steps if s.kind == StepKind.START).after
    assert plan(snap, policy(moves={"perCycle": 0})).bindings == []
