"""Best fit's indexed look-ups (ClusterState.find without stranding weighed) against a brute-force
scan of every node and GPU: at each step of a greedy pass over live-cluster states, the place
found must be one of the best, and nothing found only where nothing fits."""

from __future__ import annotations

import pytest
from synthetic import instances, live_states

from scheduler.fit.cycle import start_cycle
from scheduler.fit.greedy import unit_order, units_of
from scheduler.fit.state import ClusterState
from scheduler.model import ClusterSnapshot, PackingPolicy, Pod


def _allowed(s: ClusterState, pod: Pod, node: int) -> bool:
    return (
        s.pool_of[node] >= 0
        and s.model_ok(pod, node)
        and s.power_ok(pod, node)
        and s.host_ok(pod, node)
    )


def _share_key(s: ClusterState, pod: Pod, node: int, g: int) -> tuple:
    step = s._pressure_step(pod, s.pool_of[node])
    return (step, s.free_milli(node) - pod.gpu_milli, s.res[node][g] - pod.gpu_milli)


def _whole_key(s: ClusterState, pod: Pod, node: int) -> tuple:
    return (s._pressure_step(pod, s.pool_of[node]), s.nfree[node])


def _oracle(s: ClusterState, pod: Pod) -> tuple[str, tuple] | None:
    """Best fit's least key over every node: a partly used GPU for a share, else fresh GPUs."""
    nodes = [i for i in range(len(s.nodes)) if _allowed(s, pod, i)]
    if pod.fractional:
        shares = [
            _share_key(s, pod, i, g)
            for i in nodes
            for g, r in enumerate(s.res[i])
            if pod.gpu_milli <= r < 1000
        ]
        if shares:
            return "share", min(shares)
    need = 1 if pod.fractional else pod.gpus
    whole = [_whole_key(s, pod, i) for i in nodes if s.nfree[i] >= need]
    return ("whole", min(whole)) if whole else None


def _check_pass(snap: ClusterSnapshot) -> int:
    cycle = start_cycle(snap, PackingPolicy())
    s = cycle.state
    s.weigh_stranding = False
    checked = 0
    for unit in unit_order(units_of(cycle.pending), cycle.policy):
        for pod in unit:
            if pod.gpus == 0:
                continue
            want = _oracle(s, pod)
            found = s.find(pod)
            if want is None:
                assert found is None, pod.key
                continue
            assert found is not None, pod.key
            node, gpus = found
            kind, key = want
            if kind == "share":
                assert 0 < s.res[node][gpus[0]] < 1000, pod.key
                assert _share_key(s, pod, node, gpus[0]) == key, pod.key
            else:
                assert all(s.res[node][g] == 1000 for g in gpus), pod.key
                assert _whole_key(s, pod, node) == key, pod.key
            assert _allowed(s, pod, node)
            s.place(pod, node, gpus)
            checked += 1
    return checked


@pytest.mark.parametrize(
    "snap",
    [
        live_states.scattered_state(96, 5),
        live_states.scattered_state(96, 6, over_budget_racks=1),
        live_states.scattered_state(128, 7, fill=0.6),
        instances.make_instance(128, 600, 2, fill_fraction=0.3),
    ],
    ids=["scattered", "over-budget", "full", "synthetic"],
)
def test_best_fit_lookup_finds_a_best_place(snap):
    assert _check_pass(snap) > 40


def test_copied_state_plans_as_a_fresh_one():
    snap = live_states.scattered_state(96, 5)
    base = start_cycle(snap, PackingPolicy())
    copy = base.copy()
    fresh = start_cycle(snap, PackingPolicy())
    for state in (copy.state, fresh.state):
        state.weigh_stranding = False
    placed = []
    for pod in [p for u in unit_order(units_of(base.pending), base.policy) for p in u]:
        a, b = copy.state.find(pod), fresh.state.find(pod)
        assert a == b
        if a is not None:
            copy.state.place(pod, *a)
            fresh.state.place(pod, *a)
            placed.append(pod.key)
    assert placed
    # The base is untouched by what its copy placed.
    assert base.state.res == start_cycle(snap, PackingPolicy()).state.res
