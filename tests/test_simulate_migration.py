"""The simulator's three ways to meet a failing GPU: none, reactive, proactive."""

from __future__ import annotations

import pytest

from scheduler.errors import UserError
from scheduler.model import PackingPolicy, Pod, PodKind
from scheduler.simulate import ReplaySettings, make_cluster, replay
from scheduler.simulate.failures import Degradation, GpuAlarm, GpuFailure, alarms_for
from scheduler.simulate.run import simulation_policy
from scheduler.traces.workload import TraceJob


def _run(mode: str, kind: PodKind = PodKind.TRAINING):
    """One pod of 10,000 s on GPU 0 of some node; every GPU 0 raises an alarm at 2,000 s and
    fails at 5,500 s; jobs checkpoint every 1,000 s."""
    cluster = make_cluster(nodes=3, gpus_per_node=2)
    jobs = [TraceJob("t", 0.0, 10_000.0, (Pod(name="t", kind=kind),))]
    names = [n.name for n in cluster.nodes]
    settings = ReplaySettings(
        cycle_seconds=0,
        horizon=20_000,
        failures=tuple(GpuFailure(5_500.0, n, 0) for n in names),
        alarms=tuple(GpuAlarm(2_000.0, n, 0) for n in names),
        migration=mode,
        checkpoint_seconds=1_000.0,
        hang_seconds=1_800.0,
    )
    return replay(cluster, jobs, "wattpack", simulation_policy(PackingPolicy()), settings)


def test_proactive_loses_the_move_reactive_the_work_since_the_checkpoint_none_the_hang_too():
    proactive, reactive, none = (_run(m) for m in ("proactive", "reactive", "none"))
    # Migrated at the alarm: a training restart (300 s on one GPU), and it is not killed.
    assert proactive.moves == 1 and proactive.pods_killed == 0
    assert proactive.gpu_seconds_lost == pytest.approx(300)
    assert proactive.gpu_alarms == 3
    # Killed at the failure: the 500 s since the checkpoint at 5,000 s.
    assert reactive.moves == 0 and reactive.pods_killed == 1
    assert reactive.gpu_seconds_lost == pytest.approx(500)
    # Nobody noticed for 1,800 s: those are lost as well.
    assert none.pods_killed == 1 and none.gpu_seconds_lost == pytest.approx(2_300)
    assert proactive.finished == reactive.finished == none.finished == 1
    for run in (proactive, reactive, none):
        assert run.budget_violations == 0 and run.gpu_failures == 3


def test_the_degradation_model_is_seeded_and_checked():
    cluster = make_cluster(nodes=4, gpus_per_node=8)
    failures = tuple(GpuFailure(10_000.0 * (i + 1), cluster.nodes[i].name, i) for i in range(4))
    model = Degradation(warned_share=0.5, mean_lead_seconds=3_600.0, false_alarms=1.0, seed=3)
    alarms = alarms_for(cluster, failures, model, 0.0, 50_000.0)
    assert alarms == alarms_for(cluster, failures, model, 0.0, 50_000.0)
    failing = {(f.node, f.gpu): f.time for f in failures}
    warned = [a for a in alarms if (a.node, a.gpu) in failing]
    false = [a for a in alarms if (a.node, a.gpu) not in failing]
    assert len(false) == 4 and all(a.time <= failing[(a.node, a.gpu)] for a in warned)
    assert alarms_for(cluster, failures, Degradation(warned_share=0, false_alarms=0), 0, 1) == ()
    with pytest.raises(UserError, match="warned share 2"):
        Degradation(warned_share=2)
    with pytest.raises(UserError, match="migration mode 'sometimes'"):
        replay(cluster, [], "wattpack", PackingPolicy(), ReplaySettings(migration="sometimes"))


def test_an_inference_pod_surges_in_the_ledger_and_its_replica_becomes_it():
    """Its replica starts beside it (the ledger holds both for a moment), then the old copy
    stops: one pod runs on, is never killed, and finishes."""
    run = _run("proactive", PodKind.INFERENCE)
    assert run.moves == 1 and run.pods_killed == 0 and run.finished == 1
    assert run.gpu_seconds_lost == pytest.approx(60)  # an inference replica's warm-up


def test_the_simulator_counts_moves_against_the_hourly_budget():
    """Two alarms an hour apart on two GPUs with work, one move an hour allowed: both move;
    two alarms at once: one moves, the other is killed at its failure. Two nodes are free."""
    cluster = make_cluster(nodes=4, gpus_per_node=2)
    jobs = [
        TraceJob(f"t{i}", 0.0, 10_000.0, (Pod(name=f"t{i}", kind=PodKind.TRAINING, gpus=2),))
        for i in range(2)
    ]
    policy = simulation_policy(PackingPolicy.model_validate({"moves": {"perHour": 1}}))
    names = [n.name for n in cluster.nodes]

    def run(second_alarm: float):
        settings = ReplaySettings(
            cycle_seconds=0,
            horizon=20_000,
            failures=tuple(GpuFailure(9_000.0, n, 0) for n in names[:2]),
            alarms=(GpuAlarm(1_000.0, names[0], 0), GpuAlarm(second_alarm, names[1], 0)),
            migration="proactive",
            checkpoint_seconds=1_000.0,
        )
        return replay(cluster, jobs, "wattpack", policy, settings)

    spaced, together = run(5_000.0), run(1_000.0)
    assert spaced.moves == 2 and spaced.pods_killed == 0
    assert together.moves == 1 and together.pods_killed == 1
