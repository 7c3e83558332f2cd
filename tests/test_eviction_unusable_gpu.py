"""Evicting a pod from a GPU that takes no new work frees power, CPU and memory, not a GPU.

The model once counted every GPU a victim held as freed, whatever its health. Here that let the
solver plan to evict a pod from a suspect GPU and place a 2-GPU pod on the node's one usable GPU
plus the suspect one; the expansion could not realise it, undid the eviction and placed nothing,
where the optimum evicts the same pod for the power it draws and places a 1-GPU pod instead.
(The minimal example hypothesis found for test_tiny_plans_with_running_pods_are_optimal.)
"""

from __future__ import annotations

from builders import domain, node, pod, policy, snapshot

from scheduler.fit.value import pod_value
from scheduler.planner import plan
from scheduler.verify import check_plan


def _objective(snap, pol, result) -> int:
    pods = {p.key: p for p in snap.pods}
    return sum(pod_value(pods[b.pod], pol) for b in result.bindings) - sum(
        pod_value(pods[e.pod], pol) for e in result.evictions
    )


def test_eviction_from_a_suspect_gpu_frees_power_not_a_gpu():
    # One node, GPU 0 suspect (takes no new work under the default policy) and held by p2;
    # GPU 1 free. Rack r0 allows 920 W: idle 200 W plus p2's 600 W leave no room for another
    # pod's 600 W, so placing p3 on GPU 1 needs p2 gone. p4 wants 2 GPUs: there is one usable.
    snap = snapshot(
        [node("n0", 2, domain="r0", cpu=16_000, mem=65_536, health={0: "suspect"})],
        [
            pod("p0", priority=-2000, app="a"),
            pod("p1", gpus=0, priority=-2000),
            pod("p2", priority=-2001, on=("n0", [0])),
            pod("p3"),
            pod("p4", "inference", gpus=2),
        ],
        domains=[domain("dc"), domain("r0", 920, "dc"), domain("r1", None, "dc")],
    )
    pol = policy(solver={"relativeGap": 0})
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    assert [(e.pod, e.node) for e in result.evictions] == [("default/p2", "n0")]
    assert sorted((b.pod, b.node, b.gpu_indices) for b in result.bindings) == [
        ("default/p1", "n0", []),
        ("default/p3", "n0", [1]),
    ]
    # The optimum, by hand: p3 (1000 milli x 10 x 1000) less p2 (1000 x 10 x max(1, -1001));
    # p1 holds no GPU and is worth nothing.
    optimum = 1000 * 10 * 1000 - 1000 * 10 * 1
    assert _objective(snap, pol, result) == optimum
    assert result.summary.objective == optimum
    assert result.summary.bound == optimum
    assert result.summary.status == "OPTIMAL"


def test_eviction_frees_the_usable_gpus_of_a_victim_on_a_degraded_one():
    # A 2-GPU victim on GPUs 0 (degraded) and 1: evicting it frees GPU 1, which does count, and
    # the pending pod is worth more than the victim.
    snap = snapshot(
        [node("n0", 2, health={0: "degraded"})],
        [pod("old", gpus=2, priority=-10, on=("n0", [0, 1])), pod("new", priority=2000)],
    )
    pol = policy(solver={"relativeGap": 0})
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    assert [e.pod for e in result.evictions] == ["default/old"]
    assert [(b.pod, b.node, b.gpu_indices) for b in result.bindings] == [("default/new", "n0", [1])]
    optimum = 1000 * 10 * 3000 - 2000 * 10 * 990
    assert _objective(snap, pol, result) == optimum
    assert result.summary.objective == optimum
