"""Evicting a GPU's only share frees that GPU once, not twice.

The model counted an evicted share both as a whole GPU freed (the GPU row) and as its milli beside
the GPU's residual (the share row): the same GPU twice. Here that let the solver plan a whole pod
and a share on one GPU; the expansion placed the cheap whole pod and the share, worth far more,
was left out. (A minimal example hypothesis found for test_tiny_plans_with_running_pods_are_optimal,
seed 1.)
"""

from __future__ import annotations

from builders import H100, L40, domain, node, pod, policy, snapshot

from scheduler.fit.value import pod_value
from scheduler.planner import plan
from scheduler.verify import check_plan


def test_an_evicted_share_frees_its_gpu_once():
    # n1's one GPU holds only p1, a 1-milli inference share of app b; at most one inference pod
    # per node, so p4 (app b too) fits there only once p1 is gone. Then the GPU takes either p4
    # (a 250-milli share at priority 0) or one of p2, p3 (whole, priority -2000): not both.
    snap = snapshot(
        [
            node("n0", 1, domain="r0", cpu=16_000, mem=65_536),
            node("n1", 1, domain="r1", cpu=16_000, mem=65_536),
        ],
        [
            pod("p0", priority=-2001, app="a", preemptible=False, on=("n0", [0])),
            pod("p1", "inference", milli=1, priority=-2001, app="b", on=("n1", [0])),
            pod("p2", priority=-2000, app="a"),
            pod("p3", priority=-2000),
            pod("p4", "inference", milli=250, priority=0, app="b"),
        ],
        models=[H100, L40],
        domains=[domain("dc"), domain("r0", None, "dc"), domain("r1", None, "dc")],
    )
    pol = policy(solver={"relativeGap": 0}, inferenceMaxPerNode=1, preemptInference=True)
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    assert [(e.pod, e.node) for e in result.evictions] == [("default/p1", "n1")]
    assert [(b.pod, b.node, b.gpu_indices) for b in result.bindings] == [("default/p4", "n1", [0])]
    pods = {p.key: p for p in snap.pods}
    achieved = sum(pod_value(pods[b.pod], pol) for b in result.bindings) - sum(
        pod_value(pods[e.pod], pol) for e in result.evictions
    )
    # The optimum: p4 (250 milli x 10 x 1000) less p1 (1 milli x 10 x max(1, -1001)).
    optimum = 250 * 10 * 1000 - 1 * 10 * 1
    assert achieved == optimum
    assert result.summary.objective == optimum
    assert result.summary.bound == optimum
    assert result.summary.status == "OPTIMAL"


def test_two_evicted_shares_of_one_gpu_free_it_once():
    # n0's one GPU holds two 1-milli shares (p2, p4). The GPU row counted each as a GPU freed, so
    # the model saw room for two whole pods, planned p3 and p0, and the expansion could keep
    # only the cheap p0. With no share pending, the milli row must still hold: one GPU, one pod.
    # (Hypothesis, test_tiny_plans_with_running_pods_are_optimal, in a CI run.)
    snap = snapshot(
        [node("n0", 1, domain="r0", cpu=16_000, mem=65_536)],
        [
            pod("p0", priority=-2000),
            pod("p1", priority=-2000, app="a"),
            pod("p2", milli=1, priority=-2001, on=("n0", [0])),
            pod("p3", priority=10, app="a"),
            pod("p4", milli=1, priority=-2001, app="a", on=("n0", [0])),
        ],
        models=[H100],
        domains=[domain("dc"), domain("r0", None, "dc"), domain("r1", None, "dc")],
    )
    pol = policy(solver={"relativeGap": 0}, priorityBase=1)
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    assert sorted(e.pod for e in result.evictions) == ["default/p2", "default/p4"]
    assert [(b.pod, b.gpu_indices) for b in result.bindings] == [("default/p3", [0])]
    # p3 (1000 milli x 10 x (1 + 10)) less the two shares (1 milli x 10 x 1 each).
    optimum = 1000 * 10 * 11 - 2 * 10
    assert result.summary.objective == optimum
    assert result.summary.bound == optimum
    assert result.summary.status == "OPTIMAL"
