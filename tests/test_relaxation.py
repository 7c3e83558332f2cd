"""The aggregated model must be a relaxation: its cuts hold for every real packing, so its bound
is at least the true optimum. A cut that is too strong would make the reported gap a lie."""

from __future__ import annotations

import pytest
from builders import node, pod, policy, snapshot
from hypothesis import given
from hypothesis import strategies as st
from test_properties import FAST, SLOW, brute_force, instances

import scheduler.planner.cycle as planner_cycle
from scheduler.planner import plan
from scheduler.solver.dff import DFF_ORDERS, dff_capacity, dff_scaled, eps_scaled, eps_thresholds
from scheduler.verify import check_plan

shares = st.integers(1, 1000)


@st.composite
def one_gpu(draw) -> list[int]:
    """Shares that fit on one GPU together."""
    items: list[int] = []
    while sum(items) < 1000 and draw(st.booleans()):
        items.append(draw(st.integers(1, 1000 - sum(items))))
    return items


@FAST
@given(one_gpu(), st.sampled_from(DFF_ORDERS))
def test_fekete_schepers_cut_holds_for_any_gpu(items, k):
    assert sum(dff_scaled(k, m) for m in items) <= dff_capacity(k)


@FAST
@given(one_gpu(), st.lists(shares, min_size=1, max_size=6))
def test_threshold_cut_holds_for_any_gpu(items, seen):
    for eps in eps_thresholds(set(seen)):
        assert 0 < eps <= 500
        assert sum(eps_scaled(eps, m) for m in items) <= 1000


def test_cuts_see_what_mass_does_not():
    # Two 600s have mass 1200 <= 2 GPUs, but never share one: the k=1 cut needs 2 GPUs for them,
    # and three of them 3.
    assert 3 * dff_scaled(1, 600) > 2 * dff_capacity(1)


def assert_bound_holds(pol, snap) -> None:
    optimum, _ = brute_force(snap, pol)
    with pytest.MonkeyPatch.context() as mp:
        # Model the instance in node classes with the cuts, as large clusters are.
        mp.setattr(planner_cycle, "EXACT_NODES", 0)
        result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    assert result.summary.objective <= optimum
    assert result.summary.bound >= optimum * (1 - 1e-9), "a cut removed a real plan"


@pytest.mark.slow
@SLOW
@given(instances(running=False, preemption=False))
def test_aggregated_bound_is_never_below_the_optimum(instance):
    assert_bound_holds(*instance)


@st.composite
def crowded_shares(draw):
    """Few GPUs, many shares of awkward sizes: where a wrong cut would show."""
    # Identical nodes form one class of several nodes: the shape the cuts are for (a class of
    # one node is modelled GPU by GPU instead).
    gpus = draw(st.integers(1, 2))
    nodes = [node(f"n{i}", gpus) for i in range(draw(st.integers(2, 3)))]
    sizes = st.sampled_from([110, 190, 230, 320, 470, 500, 550, 650, 810])
    pods = [pod(f"s{i}", "inference", milli=draw(sizes)) for i in range(draw(st.integers(3, 6)))]
    return policy(preemption=False), snapshot(nodes, pods)


@pytest.mark.slow
@SLOW
@given(crowded_shares())
def test_aggregated_bound_holds_for_crowded_shares(instance):
    assert_bound_holds(*instance)
