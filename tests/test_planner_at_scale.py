"""The aggregated path (node classes, merged racks, LP start, expansion) on clusters too large for
the exact model, with running work, preemption, gangs, shares, spread and tight budgets: every
plan passes the independent checker, explains every pending pod and tells the truth in its
summary, and never does worse than the greedy baseline on the same instance."""

from __future__ import annotations

import pytest
from synthetic import instances

from scheduler.baselines import best_fit
from scheduler.model import PackingPolicy
from scheduler.planner import plan
from scheduler.power import domain_power
from scheduler.verify import check_plan, explanation_problems, final_placement

CASES = [
    # nodes, pending pods, seed, share of GPUs already running work
    (64, 200, 1, 0.0),
    (96, 300, 2, 0.5),
    (160, 450, 3, 0.3),
    (256, 600, 4, 0.6),
]


@pytest.mark.slow
@pytest.mark.parametrize(("nodes", "pods", "seed", "fill"), CASES)
def test_aggregated_plans_are_feasible_and_truthful(nodes, pods, seed, fill):
    snap = instances.make_instance(nodes, pods, seed, fill_fraction=fill)
    pol = PackingPolicy.model_validate({"solver": {"timeLimitSeconds": 2, "workers": 1}})
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    assert explanation_problems(snap, result) == []
    by_key = {p.key: p for p in snap.pods}
    final = final_placement(snap, result)
    assert result.summary.power_watts == domain_power(
        snap, [(by_key[k], n) for k, (n, _) in final.items()], pol
    )
    assert result.summary.bound >= result.summary.objective
    baseline = best_fit(snap, pol)
    assert result.summary.objective >= baseline.summary.objective
    if fill:
        assert result.evictions, "running low-priority work and preemption on: expected some"
