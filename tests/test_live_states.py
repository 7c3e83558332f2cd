"""The planner on the states a live cluster is in: running work scattered after hours of churn,
domains already over budget. Never below best fit, always feasible, and the rest of the cluster
still planned (preemption included) when one rack is over its budget."""

from __future__ import annotations

import pytest
from builders import domain, gang, node, pod, policy, snapshot
from synthetic import live_states

from scheduler.baselines import best_fit
from scheduler.model import ClusterSnapshot
from scheduler.planner import plan
from scheduler.power import budgets, domain_power
from scheduler.verify import check_plan, explanation_problems


def _draw(snap: ClusterSnapshot, pol) -> dict[str, int]:
    running = [(p, p.node) for p in snap.pods if p.node is not None]
    return domain_power(snap, running, pol)


def test_scattered_states_are_deterministic_and_within_budget():
    a = live_states.scattered_state(128, 3)
    b = live_states.scattered_state(128, 3)
    assert a.model_dump() == b.model_dump()
    draw = _draw(a, policy())
    assert all(draw[d] <= w for d, w in budgets(a).items())
    # Scattered: nodes hold every count of free GPUs, not just full or empty.
    free = {n.name: n.gpus for n in a.nodes}
    for p in a.pods:
        if p.node is not None and not p.fractional:
            free[p.node] -= p.gpus
    assert len(set(free.values())) >= 6


def test_over_budget_state_has_racks_over_budget():
    snap = live_states.scattered_state(128, 3, over_budget_racks=2)
    draw = _draw(snap, policy())
    over = [d for d, w in budgets(snap).items() if draw[d] > w]
    assert len(over) == 2 and all(d.startswith("rack-") for d in over)


@pytest.mark.parametrize(
    ("nodes", "seed", "cut"),
    # 512 nodes: 1,280 pending pods, a pooled model, swaps and repacks after it.
    [(64, 1, 0), (160, 2, 0), (256, 3, 0), (160, 4, 2), (512, 5, 0)],
)
def test_plan_on_scattered_state_is_at_least_best_fit_and_feasible(nodes, seed, cut):
    snap = live_states.scattered_state(nodes, seed, over_budget_racks=cut)
    pol = policy(solver={"timeLimitSeconds": 5})
    ours, base = plan(snap, pol), best_fit(snap, pol)
    assert check_plan(snap, pol, ours) == []
    assert explanation_problems(snap, ours) == []
    assert ours.summary.objective >= base.summary.objective
    assert ours.summary.gpu_allocation >= base.summary.gpu_allocation
    assert ours.summary.gap <= 0.10  # the bound is the model's, not the trivial one
    assert (ours.summary.status == "GREEDY") == (ours.summary.objective == base.summary.objective)
    if cut:
        assert ours.summary.degraded and len(ours.summary.notes) == 2


def _two_racks(nodes_per_rack: int):
    """Rack a: its budget cut below what runs there, free GPUs left. Rack b: full of low-priority
    pods, within budget. A high-priority gang of two 4-GPU members is pending."""
    nodes, pods = [], []
    for r in "ab":
        for i in range(nodes_per_rack):
            name = f"{r}{i}"
            nodes.append(node(name, 4, domain=f"rack-{r}"))
            used = [0, 1] if r == "a" else [0, 1, 2, 3]
            for k in range(0, len(used), 2):
                pods.append(pod(f"low-{name}-{k}", gpus=2, on=(name, used[k : k + 2])))
    pods += gang("urgent", 2, gpus=4, priority=1000)
    # Per rack: idle 4 x 100 W a node, work 600 W a GPU (training). Rack a draws 1,600 W a
    # node; its budget is 1,400 W a node. Rack b draws 2,800 W a node, its budget 2,900 W.
    doms = [
        domain("facility"),
        domain("rack-a", 1400 * nodes_per_rack, "facility"),
        domain("rack-b", 2900 * nodes_per_rack, "facility"),
    ]
    return snapshot(nodes, pods, domains=doms)


@pytest.mark.parametrize("nodes_per_rack", [4, 16])  # 8 nodes: exact model; 32: aggregated
def test_rack_over_budget_is_frozen_and_the_rest_still_preempts_for_a_gang(nodes_per_rack):
    snap = _two_racks(nodes_per_rack)
    pol = policy()
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    bound_to = {b.pod: b.node for b in result.bindings}
    assert set(bound_to) == {"default/urgent-0", "default/urgent-1"}
    assert all(n.startswith("b") for n in bound_to.values())
    assert len(result.evictions) == 4 and all(e.node.startswith("b") for e in result.evictions)
    assert result.summary.status != "GREEDY"
    assert result.summary.degraded
    assert any("rack-a" in n and "over its" in n for n in result.summary.notes)
    before = _draw(snap, pol)["rack-a"]
    assert result.summary.power_watts["rack-a"] <= before


def test_budget_below_idle_draw_is_a_note_and_nothing_goes_there():
    snap = snapshot(
        [node("a0", 4, domain="rack-a"), node("b0", 4, domain="rack-b")],
        [pod("p", gpus=2)],
        domains=[domain("rack-a", 300), domain("rack-b")],
    )
    result = plan(snap, policy())
    assert [b.node for b in result.bindings] == ["b0"]
    assert any("rack-a" in n and "idle" in n for n in result.summary.notes)


def test_pools_per_rack_and_per_row_are_relaxations_and_the_lp_built_directly_is_the_same():
    """On a scattered state both pool shapes are modelled; each LP bound is at least what best
    fit and the planner place; the LP copied out of the CP-SAT model with the kept upper bounds
    is the LP read back from it, and the model built as an LP for GLOP (as the cycle builds a
    pooled one) has the same optimum."""
    from scheduler.fit.cycle import start_cycle
    from scheduler.planner.cycle import _shapes
    from scheduler.solver import AggregateModel
    from scheduler.solver.lp import solve_built, solve_lp

    snap = live_states.scattered_state(512, 2)
    pol = policy()
    base = start_cycle(snap, pol)
    shapes = list(_shapes(base, exact=False))
    assert [s.pooled for s in shapes] == [True, True]
    by_parent, by_rack = (len(s.groups) for s in shapes)
    assert by_parent < by_rack  # the first pools whole rows
    ours = plan(snap, policy(solver={"timeLimitSeconds": 20}))
    # A model that solved is no degradation, whatever became of the other one.
    assert not any(n.startswith("model:") for n in ours.summary.notes)
    assert ours.summary.status == "LP_ROUNDED"
    placed = max(best_fit(snap, pol).summary.objective, ours.summary.objective)
    for s in shapes:
        keys = [g.leaf_key for g in s.groups]
        leaves = {g.leaf_key: sorted({c.leaf for c in g.classes}) for g in s.groups}
        assert all("+".join(leaves[k]) == k or leaves[k] == [k] for k in keys)
        model = AggregateModel(base.copy(), s.demand, s.groups, s.group_of_class)
        read_back = solve_lp(model.m, 60)
        kept = solve_lp(model.m, 60, upper=model.upper)
        assert read_back is not None and kept is not None
        assert kept.bound == read_back.bound and kept.values == read_back.values
        assert model.objective.first(read_back.bound) * model.unit >= placed * (1 - 1e-9)
        as_lp = AggregateModel(base.copy(), s.demand, s.groups, s.group_of_class, lp_only=True)
        direct = solve_built(as_lp.m, 60)
        assert direct is not None and len(direct.values) == len(kept.values)
        assert abs(direct.bound - kept.bound) <= 1e-9 * abs(kept.bound)
        assert as_lp.unit == model.unit and as_lp.objective.weights == model.objective.weights
