"""Moving running work off failing GPUs: what moves, how, and what does not."""

from __future__ import annotations

from collections import Counter

from builders import domain, move, node, pod, policy, snapshot
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from soundness import assert_carried_out_safely

from scheduler.execute import Execution, Recording, StepKind, plan_steps
from scheduler.fit.cycle import start_cycle
from scheduler.planner import plan
from scheduler.planner.moves import plan_moves
from scheduler.verify import check_plan, check_steps


def _on(p: dict, node_name: str, *gpus: int) -> dict:
    return {**p, "node": node_name, "gpuIndices": list(gpus)}


def _degraded_gpu3(budget: int | None = None, **pol):
    """Node a's GPU 3 is degraded; on it a training gang member (half the GPU) and two
    inference replicas of one app (a quarter each). The gang's other member runs on b."""
    pods = [
        _on(pod("g-0", "training", milli=500, gang=("g", 2)), "a", 3),
        _on(pod("g-1", "training", milli=500, gang=("g", 2)), "b", 0),
        _on(pod("r-0", "inference", milli=250, app="svc"), "a", 3),
        _on(pod("r-1", "inference", milli=250, app="svc"), "a", 3),
        pod("waiting", "training", gpus=2),
    ]
    snap = snapshot(
        [node("a", 4, health={3: "degraded"}), node("b", 4), node("c", 4)],
        pods,
        domains=[domain("rack", budget)],
    )
    return snap, policy(**pol)


def _moves(result) -> dict[str, tuple[str, list[int], str]]:
    return {m.pod.split("/")[1]: (m.to_node, m.gpu_indices, m.reason) for m in result.moves}


def test_a_degraded_gpu_is_emptied_the_gang_restarts_whole_and_replicas_move_one_at_a_time():
    snap, pol = _degraded_gpu3()
    result = plan(snap, pol)
    moved = _moves(result)
    assert set(moved) == {"g-0", "g-1", "r-0", "r-1"}  # the gang whole, both replicas
    for name, (to, gpus, reason) in moved.items():
        assert not (to == "a" and 3 in gpus), name
        assert reason.startswith("migration: GPU a/3 degraded"), reason
    assert not result.evictions and "default/waiting" in {b.pod for b in result.bindings}
    assert check_plan(snap, pol, result) == []
    steps = plan_steps(result, snap)
    assert check_steps(snap, pol, result, steps) == []
    by = {(s.kind, s.pod.split("/")[1]): s for s in steps}
    gang_stops = {by[("stop", "g-0")].id, by[("stop", "g-1")].id}
    assert gang_stops <= set(by[("start", "g-0")].after)
    assert gang_stops <= set(by[("start", "g-1")].after)
    first, second = sorted(["r-0", "r-1"], key=lambda n: by[("start", n)].id)
    assert by[("stop", first)].id in by[("start", second)].after  # one replica at a time
    assert by[("start", first)].surge and by[("stop", first)].after == (by[("start", first)].id,)
    rec = Recording()
    run = Execution(steps)
    run.advance(rec)
    assert run.complete and len(rec.lines) == len(steps)


def test_only_the_member_moves_where_the_policy_lets_a_gang_replace_one():
    snap, pol = _degraded_gpu3(moves={"replaceGangMember": True})
    moved = _moves(plan(snap, pol))
    assert set(moved) == {"g-0", "r-0", "r-1"}


def test_no_budget_is_exceeded_in_any_phase_a_surge_counts_twice():
    """With 50 W left in the rack, a replica's surge (90 W beside its old copy) does not fit,
    while the gang's restart (stop, then start) does: the replicas stay and say why, and no
    step of what moves overdraws the rack."""
    idle = 12 * 100
    running = 2 * 300 + 2 * 90  # two training halves (600 W x 0.5), two inference quarters
    snap, pol = _degraded_gpu3(budget=idle + running + 50)
    result = plan(snap, pol)
    assert set(_moves(result)) == {"g-0", "g-1"}
    notes = [n for n in result.summary.notes if n.startswith("moves:")]
    assert notes == ["moves: default/r-0 on GPU a/3 degraded and 1 more has nowhere to go"]
    assert check_plan(snap, pol, result) == []
    assert check_steps(snap, pol, result, plan_steps(result, snap)) == []
    # The same plan carried out with the replicas surging would overdraw: the checker sees it.
    generous, _ = _degraded_gpu3(budget=idle + running + 90)
    surged = plan(generous, pol)
    assert {"r-0", "r-1"} <= set(_moves(surged))
    assert any("draws" in p for p in check_steps(snap, pol, surged, plan_steps(surged, snap)))


def test_moves_are_made_only_where_they_pay_and_never_for_a_pod_that_is_not_preemptible():
    def one(health: str, **extra) -> tuple:
        snap = snapshot(
            [node("a", 2, health={0: health}), node("b", 2)],
            [_on(pod("t", "training", **extra), "a", 0)],
        )
        return snap

    suspect = one("suspect")
    assert plan(suspect, policy()).moves == []  # the default moves off degraded GPUs only
    eager = policy(moves={"migrateOn": ["suspect", "degraded"]})
    [m] = plan(suspect, eager).moves
    assert (m.to_node, m.gpu_indices) != ("a", [0]) and m.reason.startswith("migration: GPU a/0")
    fresh = one("degraded")
    fresh = fresh.model_copy(
        update={"pods": [fresh.pods[0].model_copy(update={"seconds_since_checkpoint": 0})]}
    )
    # Just checkpointed: a failure would cost 0.6 x 300 s, the move 300 s. It stays.
    assert plan(fresh, policy()).moves == []
    failed = one("failed", preemptible=True)
    [m] = plan(failed, policy()).moves
    assert m.reason == "failure: GPU a/0 failed" and (m.to_node, m.gpu_indices) != ("a", [0])
    pinned = one("failed", preemptible=False)
    result = plan(pinned, policy())
    assert result.moves == [] and any("not preemptible" in n for n in result.summary.notes)
    budget = plan(one("degraded"), policy(moves={"perCycle": 0}))
    assert budget.moves == []


def test_a_moved_pod_is_not_evicted_in_the_same_plan_and_the_simulated_ledger_agrees():
    """A high-priority pending pod that could preempt the moving pod does not: the moved pod is
    off limits for the rest of the cycle."""
    snap = snapshot(
        [node("a", 1, health={0: "degraded"}), node("b", 1)],
        [_on(pod("low", "training"), "a", 0), pod("high", "training", priority=9)],
    )
    result = plan(snap, policy())
    assert [m.pod for m in result.moves] == ["default/low"]
    assert not result.evictions and not result.bindings
    assert check_plan(snap, policy(), result) == []
    assert [s.kind for s in plan_steps(result, snap)] == [StepKind.STOP, StepKind.START]


@st.composite
def _crowded_with_bad_gpus(draw):
    """Nodes whose running work sits, in part, on suspect, degraded or failed GPUs: shares of
    inference apps, whole-GPU training pods and two-member gangs, placed first fit; a rack
    budget between what runs and nameplate; a few pending pods."""
    n_nodes = draw(st.integers(2, 4))
    gpus = [draw(st.integers(2, 4)) for _ in range(n_nodes)]
    free = {(i, g): 1000 for i in range(n_nodes) for g in range(gpus[i])}
    pods: list[dict] = []

    def put(p: dict, milli: int) -> bool:
        for (i, g), room in free.items():
            if room >= milli and (milli < 1000 or room == 1000):
                free[(i, g)] -= milli
                pods.append(_on(p, f"n{i}", g))
                return True
        return False

    for k in range(draw(st.integers(2, 8))):
        what = draw(st.sampled_from(["share", "whole", "gang"]))
        if what == "share":
            milli = draw(st.sampled_from([250, 500]))
            app = draw(st.sampled_from(["a", "b", None]))
            put(pod(f"s{k}", "inference", milli=milli, app=app), milli)
        elif what == "whole":
            put(pod(f"w{k}", draw(st.sampled_from(["training", "fine-tuning"]))), 1000)
        else:
            for m in range(2):
                put(pod(f"g{k}-{m}", gang=(f"g{k}", 2)), 1000)
    # A gang that did not fit whole is not running at all.
    counts = Counter(p["gang"]["name"] for p in pods if p["gang"])
    pods = [p for p in pods if not p["gang"] or counts[p["gang"]["name"]] == 2]
    used = sorted({(p["node"], p["gpuIndices"][0]) for p in pods})
    nodes = []
    for i in range(n_nodes):
        health = {}
        for n, g in used:
            if n == f"n{i}" and draw(st.booleans()):
                health[g] = draw(st.sampled_from(["suspect", "degraded", "failed"]))
        nodes.append(node(f"n{i}", gpus[i], health=health))
    # Waiting work, some of it as large as a whole node: room for it may take moves.
    pending = [pod(f"p{k}", gpus=draw(st.integers(1, 4))) for k in range(draw(st.integers(0, 3)))]
    idle = 100 * sum(gpus)
    budget = draw(st.sampled_from([None, idle + 600 * len(pods), idle + 300 * len(pods)]))
    pol = policy(
        moves={
            "migrateOn": draw(st.sampled_from([["degraded"], ["suspect", "degraded"]])),
            "replaceGangMember": draw(st.booleans()),
            "perCycle": draw(st.sampled_from([16, 2])),
        }
    )
    return snapshot(nodes, pods + pending, domains=[domain("rack", budget)]), pol


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@seed(20261201)
@given(_crowded_with_bad_gpus())
def test_every_phase_of_every_plan_with_moves_is_feasible_and_no_pod_is_lost(case):
    """Draws pinned by the seed in CI; for a wider search, change the seed or drop it and raise
    max_examples."""
    snap, pol = case
    result = plan(snap, pol)
    assert_carried_out_safely(snap, pol, result)
    moved = {m.pod for m in result.moves}
    assert len(moved) == len(result.moves) <= pol.moves.per_cycle


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@seed(20261201)
@given(_crowded_with_bad_gpus())
def test_the_cycle_plans_on_the_state_the_moves_leave_as_a_fresh_read_of_it_would(case):
    """The cycle does not read the cluster in again after the moves (one read at 16,384 nodes
    is half a second): the state the moves were made in must hold what reading the snapshot
    after them would."""
    snap, pol = case
    moved = plan_moves(snap, pol)
    if moved.state is None:
        assert not moved.moves
        return
    kept = start_cycle(moved.snapshot, pol, state=moved.state).state
    fresh = start_cycle(moved.snapshot, pol).state
    for field in ("cpu", "mem", "res", "power", "apps", "nfree", "_free_milli", "pool_of"):
        assert getattr(kept, field) == getattr(fresh, field), field
    assert kept.class_of == fresh.class_of
    assert [c.nodes for c in kept.classes] == [c.nodes for c in fresh.classes]
    assert {k: v for k, v in kept.whole.items() if v} == {k: v for k, v in fresh.whole.items() if v}


def test_how_a_pod_moves_follows_what_recreates_it():
    """moveBy: a replica whose owner allows no surge restarts; a pod that nothing would
    recreate stays on the degraded GPU, with a note that says why."""
    snap, pol = _degraded_gpu3()
    pods = []
    for p in snap.pods:
        if p.name == "r-0":
            p = p.model_copy(update={"move_by": "restart"})
        if p.name == "r-1":
            p = p.model_copy(update={"move_by": "none"})
        pods.append(p)
    snap = snap.model_copy(update={"pods": pods})
    result = plan(snap, pol)
    moved = _moves(result)
    assert "r-1" not in moved and "r-0" in moved
    assert any("r-1" in n and "nothing would recreate it" in n for n in result.summary.notes)
    assert check_plan(snap, pol, result) == []
    steps = plan_steps(result, snap)
    r0 = [s for s in steps if s.pod == "default/r-0"]
    assert [s.kind for s in r0] == [StepKind.STOP, StepKind.START]  # a restart, not a surge
    assert not any(s.surge for s in r0)
    bad = result.model_copy(update={"moves": [*result.moves, move("r-1", "a", "c", 0)]})
    assert any("nothing would recreate it" in p for p in check_plan(snap, pol, bad))
