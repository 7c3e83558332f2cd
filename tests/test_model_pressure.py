"""A pod that any GPU model will do keeps off the models that pinned pods need: best fit alone
would fill the small nodes first and strand the pinned work (openb gpuspec33)."""

from __future__ import annotations

from scheduler.fit.cycle import start_cycle
from scheduler.fit.greedy import greedy_fill, units_of
from scheduler.model import PackingPolicy
from tests.builders import H100, L40, node, pod, snapshot


def _placed(pods: list[dict]) -> dict[str, str]:
    snap = snapshot(
        [node("l40-a", 2, model="L40"), node("h100-a", 4), node("h100-b", 4)],
        pods,
        models=[H100, L40],
    )
    cycle = start_cycle(snap, PackingPolicy())
    placed: dict = {}
    greedy_fill(cycle.state, units_of(cycle.pending), placed)
    return {key.split("/")[1]: snap.nodes[n].name for key, (n, _) in placed.items()}


def test_without_pinned_work_best_fit_takes_the_smallest_node() -> None:
    assert _placed([pod("any", gpus=2)])["any"] == "l40-a"


def test_with_pinned_work_pending_an_unpinned_pod_leaves_that_model_alone() -> None:
    placed = _placed([pod("any", gpus=2, priority=1), pod("pinned", gpus=2, models=("L40",))])
    assert placed == {"any": "h100-a", "pinned": "l40-a"}


def test_a_fresh_gpu_for_a_share_comes_from_the_least_needed_model() -> None:
    pinned = pod("pinned", gpus=2, models=("L40",))
    placed = _placed([pinned, pod("share", "inference", milli=400, priority=1)])
    assert placed["share"].startswith("h100") and placed["pinned"] == "l40-a"
