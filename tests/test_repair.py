"""Repair: pods this cycle placed (not running yet) move or swap so that a pod CPU or memory, or
shares spread over whole GPUs, left pending gets room; a repair never unplaces a pod."""

from __future__ import annotations

from builders import cycle_with, node, pod, snapshot

from scheduler.planner.repair import repair


def _where(cycle, placed, name):
    n, gpus = placed[f"default/{name}"]
    return cycle.state.nodes[n].name, list(gpus)


def test_a_swap_moves_cpu_to_the_node_that_can_feed_it():
    # a: 2 GPUs, 16 cores, `heavy` (14 cores) on one GPU; b: 1 GPU, 64 cores, `light` (2 cores).
    # `waiting` (1 GPU, 10 cores) fits nowhere until heavy and light trade places.
    snap = snapshot(
        [node("a", 2, cpu=16_000), node("b", 1, cpu=64_000)],
        [pod("heavy", cpu=14_000), pod("light", cpu=2_000), pod("waiting", cpu=10_000)],
    )
    cycle, placed = cycle_with(snap, {"heavy": ("a", [0]), "light": ("b", [0])})
    assert cycle.state.find(cycle.pending[2]) is None
    assert repair(cycle, placed) == 1
    assert _where(cycle, placed, "heavy") == ("b", [0])
    assert _where(cycle, placed, "light") == ("a", [0])
    assert _where(cycle, placed, "waiting")[0] == "a"
    assert min(cycle.state.cpu) >= 0


def test_shares_leave_a_whole_gpu_to_a_one_gpu_pod():
    snap = snapshot(
        [node("a", 2)],
        [pod("s1", "inference", milli=400), pod("s2", "inference", milli=500), pod("whole")],
    )
    cycle, placed = cycle_with(snap, {"s1": ("a", [0]), "s2": ("a", [1])})
    assert repair(cycle, placed) == 1
    gpu_of_whole = _where(cycle, placed, "whole")[1]
    shares = {_where(cycle, placed, s)[1][0] for s in ("s1", "s2")}
    assert len(shares) == 1 and shares.isdisjoint(gpu_of_whole)


def test_nothing_to_gain_changes_nothing():
    # The waiting pod needs more CPU than the whole cluster has: no move or swap helps.
    snap = snapshot(
        [node("a", 2, cpu=16_000), node("b", 1, cpu=16_000)],
        [pod("p", cpu=8_000), pod("q", cpu=8_000), pod("huge", cpu=40_000)],
    )
    cycle, placed = cycle_with(snap, {"p": ("a", [0]), "q": ("b", [0])})
    before = dict(placed)
    assert repair(cycle, placed) == 0
    assert placed == before
