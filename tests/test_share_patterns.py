"""The configuration LP for GPU shares: maximal patterns, and a bound the DFF cuts miss."""

from __future__ import annotations

import itertools

from builders import node, pod, policy, snapshot

from scheduler.planner import plan
from scheduler.solver.patterns import maximal_patterns


def test_patterns_fit_are_maximal_and_dominate_every_filling():
    sizes = [120, 250, 330, 470, 810]
    pats = maximal_patterns(sizes, 1000)
    assert len(set(pats)) == len(pats)
    for p in pats:
        used = sum(k * s for k, s in zip(p, sizes, strict=True))
        assert used <= 1000 and 1000 - used < min(sizes)
    # Every way to fill a GPU is covered, size by size, by some maximal pattern.
    for counts in itertools.product(*(range(1000 // s + 1) for s in sizes)):
        if sum(k * s for k, s in zip(counts, sizes, strict=True)) <= 1000:
            assert any(all(a >= b for a, b in zip(p, counts, strict=True)) for p in pats)


def test_pattern_bound_is_tighter_than_mass_and_dff():
    # 30 one-GPU nodes; shares of 310, 480 and 550 milli. Mass plus the DFF cuts allow
    # 29,280 milli placed; the patterns (550+310, 480+480, 310+310+310, ...) allow 26,940.
    nodes = [node(f"n{i}", 1) for i in range(30)]
    pods = [pod(f"a{i}", "inference", milli=310) for i in range(30)]
    pods += [pod(f"b{i}", "inference", milli=480) for i in range(17)]
    pods += [pod(f"c{i}", "inference", milli=550) for i in range(30)]
    result = plan(snapshot(nodes, pods), policy(solver={"timeLimitSeconds": 5}))
    value_per_milli = 10 * 1000  # kind weight x (priorityBase + priority)
    assert result.summary.bound <= 26_940 * value_per_milli
    assert result.summary.objective <= result.summary.bound
    assert result.summary.gap <= 0.02
