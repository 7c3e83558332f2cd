"""A gang that has waited starvingGangSeconds may preempt lone pods of its own priority.

Backfill keeps taking the room a big gang waits for: every lone pod that arrives fits in what
frees, the gang never does. The ITP replay showed it (a 64-GPU gang waiting while nothing else
did, allocation 30 GPUs under the power bound for days of simulated time).
"""

from __future__ import annotations

from dataclasses import replace

from builders import gang, node, pod, policy, snapshot

from scheduler.model import PackingPolicy, Pod, PodKind
from scheduler.planner import plan
from scheduler.simulate import ReplaySettings, make_cluster, replay, with_budgets
from scheduler.simulate.run import simulation_policy
from scheduler.traces.workload import TraceJob
from scheduler.verify import check_plan

STARVING = {"starvingGangSeconds": 1800}


def _cluster(running_gang: bool = False, running_priority: int = 0, waited: float = 3600.0):
    """Two 4-GPU nodes, three GPUs of each held by lone pods (or by one 6-pod gang), and a
    pending gang of two 2-GPU members: it fits only once one pod per node is gone."""
    if running_gang:
        held = [
            {**p, "node": f"n{i // 3}", "gpuIndices": [i % 3]}
            for i, p in enumerate(gang("old", 6, priority=running_priority))
        ]
    else:
        held = [
            pod(f"lone-{n}{g}", priority=running_priority, on=(f"n{n}", [g]))
            for n in range(2)
            for g in range(3)
        ]
    waiting = [{**p, "waitingSeconds": waited} for p in gang("big", 2, gpus=2)]
    return snapshot([node("n0", 4), node("n1", 4)], held + waiting)


def test_a_starving_gang_evicts_one_lone_pod_per_node_and_is_placed():
    snap = _cluster()
    pol = policy(**STARVING)
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    evicted = sorted((e.pod, e.node) for e in result.evictions)
    assert len(evicted) == 2 and {n for _, n in evicted} == {"n0", "n1"}
    assert all(p.startswith("default/lone-") for p, _ in evicted)
    assert all("default/big" in e.reason and "waiting 3600 s" in e.reason for e in result.evictions)
    assert sorted(b.pod for b in result.bindings) == ["default/big-0", "default/big-1"]


def test_no_preemption_before_the_gang_starves_or_with_the_setting_off():
    for snap, pol in (
        (_cluster(waited=1799), policy(**STARVING)),
        (_cluster(), policy()),
    ):
        result = plan(snap, pol)
        assert result.evictions == [] and result.bindings == []
        assert {u.pod for u in result.unplaced} == {"default/big-0", "default/big-1"}


def test_a_starving_gang_never_evicts_a_running_gang_or_higher_priority_work():
    for snap in (_cluster(running_gang=True), _cluster(running_priority=1)):
        result = plan(snap, policy(**STARVING))
        assert result.evictions == [] and result.bindings == []


def test_a_lone_pod_never_starves():
    snap = _cluster()
    lone = pod("wide", gpus=2)
    snap = snap.model_copy(
        update={
            "pods": [p for p in snap.pods if not p.gang or p.node]
            + [Pod.model_validate({**lone, "waitingSeconds": 99_999})]
        }
    )
    # Starving or not, it evicts nothing; moves off (defragmentation would move one lone pod
    # to the other node's free GPU to make room), it stays pending.
    result = plan(snap, policy(**STARVING, moves={"perCycle": 0}))
    assert result.evictions == [] and result.bindings == []
    moved = plan(snap, policy(**STARVING))
    assert moved.evictions == [] and len(moved.moves) == 1
    assert [b.pod for b in moved.bindings] == ["default/wide"]


def test_replay_a_starving_gang_preempts_and_the_power_bound_is_reached():
    # Power for 12 busy GPUs of 16. Ten lone 1-GPU jobs arrive in the first 900 s and run
    # 10,000 s each; a gang of two 4-GPU members arrives at 950 s. Without starvation it waits
    # until six lone jobs have ended (10,500 s); with it, it starves at 2,750 s and evicts six.
    cluster = with_budgets(make_cluster(nodes=2, gpus_per_node=8), facility=12.5 / 16)
    lone = [
        TraceJob(f"l{i}", 100.0 * i, 10_000.0, (Pod(name=f"l{i}", kind=PodKind.TRAINING),))
        for i in range(10)
    ]
    members = tuple(
        Pod(name=f"g{i}", kind=PodKind.TRAINING, gpus=4, gang={"name": "g", "size": 2})
        for i in range(2)
    )
    jobs = [*lone, TraceJob("g", 950.0, 1_000.0, members)]
    settings = ReplaySettings(cycle_seconds=10, horizon=12_000)
    runs = {}
    for name, extra in (("off", {}), ("on", STARVING)):
        pol = simulation_policy(PackingPolicy.model_validate(extra))
        runs[name] = run = replay(cluster, jobs, "wattpack", pol, settings)
        assert run.budget_violations == 0
    off, on = runs["off"], runs["on"]
    assert off.evictions == 0 and off.waits[0].wait_seconds.max == 10_500 - 950
    assert on.evictions == 6
    # Each evicted job had run between 1,850 and 2,750 s; all of it is lost (no checkpoint).
    assert 6 * 1_850 <= on.gpu_seconds_lost <= 6 * 2_750
    assert on.waits[0].wait_seconds.max < off.waits[0].wait_seconds.max
    assert on.of_bound_while_waiting > off.of_bound_while_waiting
    # Restarted from scratch, the six evicted jobs cannot finish by 12,000 s (they start again
    # at 3,750 s, when the gang ends); resumed from a checkpoint, they finish by 11,900 s.
    assert on.finished == 4 + 2
    pol = simulation_policy(PackingPolicy.model_validate(STARVING))
    resumed = replay(cluster, jobs, "wattpack", pol, replace(settings, resume_evicted=True))
    assert resumed.evictions == 6 and resumed.gpu_seconds_lost == 0
    assert resumed.finished == 10 + 2


def test_a_gang_starves_only_once_its_most_recent_member_has_waited_long_enough():
    # n1 has room for one member; the other needs one lone pod on n0 gone. One member has
    # waited 3,600 s, the other 1,000 s: the gang as a whole has not starved yet.
    held = [pod(f"lone-0{g}", on=("n0", [g])) for g in range(3)]
    held += [pod(f"lone-1{g}", on=("n1", [g])) for g in range(2)]
    big = gang("big", 2, gpus=2)
    waits = [{**big[0], "waitingSeconds": 3600}, {**big[1], "waitingSeconds": 1000}]
    snap = snapshot([node("n0", 4), node("n1", 4)], held + waits)
    result = plan(snap, policy(**STARVING))
    assert result.evictions == [] and result.bindings == []
    # Once the second member has waited long enough too, the gang evicts one lone pod.
    waits[1]["waitingSeconds"] = 1800
    snap = snapshot([node("n0", 4), node("n1", 4)], held + waits)
    result = plan(snap, policy(**STARVING))
    assert [e.node for e in result.evictions] == ["n0"]
    assert sorted(b.pod for b in result.bindings) == ["default/big-0", "default/big-1"]
