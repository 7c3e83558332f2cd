"""PodDisruptionBudgets: no plan evicts or moves more of a budget's pods than it allows."""

from __future__ import annotations

from builders import node, pod, policy, snapshot
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from soundness import assert_carried_out_safely
from test_defrag import _fragmented, _scattered

from scheduler.fit.disruption import held_by_budgets
from scheduler.model import DisruptionBudget, Eviction
from scheduler.planner import plan
from scheduler.verify import check_plan


def _with(snap, *budgets: tuple[str, list[str], int]):
    return snap.model_copy(
        update={
            "disruption_budgets": [
                DisruptionBudget(name=n, pods=[f"default/{p}" for p in pods], disruptions_allowed=k)
                for n, pods, k in budgets
            ]
        }
    )


def _full_with_urgent_pod():
    """Two 2-GPU nodes full of low-priority 1-GPU pods; a priority-10 pod of 2 GPUs waits."""
    pods = [pod(f"low-{n}{g}", on=(n, [g])) for n in "ab" for g in range(2)]
    return snapshot([node("a", 2), node("b", 2)], [*pods, pod("urgent", gpus=2, priority=10)])


def test_preemption_leaves_the_pods_of_a_budget_that_allows_no_disruption():
    snap = _with(_full_with_urgent_pod(), ("all-low", ["low-a0", "low-a1", "low-b0", "low-b1"], 0))
    result = plan(snap, policy())
    assert result.evictions == [] and result.bindings == []
    assert check_plan(snap, policy(), result) == []


def test_a_budget_allowing_two_disruptions_lets_preemption_free_one_node_and_no_more():
    low = ["low-a0", "low-a1", "low-b0", "low-b1"]
    result = plan(_with(_full_with_urgent_pod(), ("all-low", low, 2)), policy())
    assert len(result.evictions) == 2
    assert {b.pod for b in result.bindings} == {"default/urgent"}
    # With one allowed, freeing a node would take two: nothing is evicted.
    one = plan(_with(_full_with_urgent_pod(), ("all-low", low, 1)), policy())
    assert one.evictions == [] and one.bindings == []


def test_a_budget_on_half_the_pods_steers_preemption_to_the_other_node():
    snap = _with(_full_with_urgent_pod(), ("a-side", ["low-a0", "low-a1"], 0))
    result = plan(snap, policy())
    assert sorted(e.pod for e in result.evictions) == ["default/low-b0", "default/low-b1"]
    assert [b.node for b in result.bindings] == ["b"]


def test_the_checker_refuses_a_plan_that_evicts_more_than_a_budget_allows():
    snap = _with(_full_with_urgent_pod(), ("all-low", ["low-a0", "low-a1"], 1))
    result = plan(snap.model_copy(update={"disruption_budgets": []}), policy())
    forced = result.model_copy(
        update={"evictions": [Eviction(pod="default/low-a0", node="a", reason="test"),
                              Eviction(pod="default/low-a1", node="a", reason="test")]}
    )  # fmt: skip
    problems = check_plan(snap, policy(), forced)
    assert any("PodDisruptionBudget default/all-low: 2 of its pods" in p for p in problems)


def test_migration_does_not_move_a_pod_its_budget_holds_and_says_so():
    snap = snapshot(
        [node("a", 2, health={0: "degraded"}), node("b", 2)],
        [pod("r-0", "inference", app="svc", on=("a", [0])), pod("r-1", "inference", app="svc")],
    )
    free = plan(snap, policy())
    assert [m.pod for m in free.moves] == ["default/r-0"]
    held = plan(_with(snap, ("svc", ["r-0", "r-1"], 0)), policy())
    assert held.moves == []
    assert any("is held by PodDisruptionBudget default/svc" in n for n in held.summary.notes)


def test_defragmentation_moves_only_pods_their_budgets_leave_open():
    snap = _scattered()  # the gang fits after moving p1 and p2
    assert len(plan(snap, policy()).moves) == 2
    held = plan(_with(snap, ("p1", ["p1"], 0)), policy())
    assert held.moves == [] and held.bindings == []


def test_open_pods_are_the_preemptible_lowest_priority_smallest_ones_and_two_budgets_compose():
    snap = snapshot(
        [node("a", 4)],
        [
            pod("fixed", preemptible=False, on=("a", [0])),
            pod("big", gpus=2, on=("a", [1, 2])),
            pod("small", on=("a", [3])),
        ],
    )
    assert held_by_budgets(_with(snap, ("x", ["fixed", "big", "small"], 1))) == {
        "default/big": "default/x",
        "default/fixed": "default/x",
    }
    both = _with(snap, ("x", ["big", "small"], 1), ("y", ["small"], 0))
    assert held_by_budgets(both) == {"default/big": "default/x", "default/small": "default/y"}


@st.composite
def _fragmented_with_budgets(draw):
    snap, pol = draw(_fragmented())
    running = [p.name for p in snap.pods if p.node is not None]
    budgets = []
    for i in range(draw(st.integers(1, 3))):
        covered = draw(st.lists(st.sampled_from(running), min_size=1, unique=True))
        budgets.append((f"b{i}", covered, draw(st.integers(0, 1))))
    # Preemption too: a waiting pod of high priority.
    urgent = snapshot([], [pod("urgent", gpus=2, priority=10)]).pods
    return _with(snap.model_copy(update={"pods": snap.pods + urgent}), *budgets), pol


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@seed(20261201)
@given(_fragmented_with_budgets())
def test_no_plan_disrupts_more_of_a_budgets_pods_than_it_allows(case):
    """Draws pinned by the seed in CI; for a wider search, change the seed or drop it and raise
    max_examples. check_plan counts each budget's evicted and moved pods."""
    snap, pol = case
    result = plan(snap, pol)
    assert_carried_out_safely(snap, pol, result)
    held = held_by_budgets(snap)
    assert not ({e.pod for e in result.evictions} | {m.pod for m in result.moves}) & set(held)
