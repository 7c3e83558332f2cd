"""Running gangs missing members (left so by a scheduler that died between two binds, or a
member made again by its controller): repaired where the rest fit, released where they have
waited too long."""

from __future__ import annotations

from builders import gang, node, pod, policy, snapshot

from scheduler.planner import plan
from scheduler.verify import check_plan


def _half_bound(waited: float, room: bool, **member):
    """big-0 runs on n1's GPUs 0-1; big-1 (2 GPUs) waited `waited` s; n1 has 2 more GPUs free
    if `room`, else a pod of the gang's priority holds them."""
    first, second = gang("big", 2, gpus=2, **member)
    pods = [{**first, "node": "n1", "gpuIndices": [0, 1]}, {**second, "waitingSeconds": waited}]
    if not room:
        pods.append(pod("other", gpus=2, on=("n1", [2, 3])))
    return snapshot([node("n1", 4)], pods)


def test_the_missing_member_is_bound_beside_the_running_one_where_it_fits():
    snap = _half_bound(5000, room=True)
    result = plan(snap, policy())
    assert [(b.pod, b.node, b.gpu_indices) for b in result.bindings] == [
        ("default/big-1", "n1", [2, 3])
    ]
    assert result.evictions == [] and check_plan(snap, policy(), result) == []


def test_a_gang_whose_rest_cannot_fit_is_released_whole_once_it_waited_long_enough():
    young = plan(_half_bound(599, room=False), policy())
    assert young.evictions == [] and young.bindings == []
    snap = _half_bound(600, room=False)
    result = plan(snap, policy())
    assert [(e.pod, e.node) for e in result.evictions] == [("default/big-0", "n1")]
    assert "releases broken gang default/big: 1 of 2 members run" in result.evictions[0].reason
    assert result.bindings == []
    assert check_plan(snap, policy(), result) == []


def test_never_released_when_the_policy_says_so_or_a_member_may_not_be_evicted():
    snap = _half_bound(5000, room=False)
    assert plan(snap, policy(brokenGangReleaseSeconds=None)).evictions == []
    fixed = _half_bound(5000, room=False, preemptible=False)
    assert plan(fixed, policy()).evictions == []


def test_the_checker_refuses_evicting_part_of_a_broken_gang_or_one_whose_rest_is_bound():
    snap = _half_bound(5000, room=True)
    released = plan(_half_bound(5000, room=False), policy())
    # The same eviction with the missing member bound in the same plan: no longer a release.
    mixed = plan(snap, policy()).model_copy(update={"evictions": released.evictions})
    assert any("eviction default/big-0" in p for p in check_plan(snap, policy(), mixed))
