"""Replay snapshots (ReplaySettings.snapshot_at, `simulate --snapshot-at`): the state a replay
holds at a simulated time, as a valid ClusterSnapshot that the planner plans and the checker
passes. Small inputs: the example trace, 4x denser, on the 4-node example cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scheduler.cli.simulate import Protocol, _snapshot_writer
from scheduler.errors import UserError
from scheduler.model import ClusterSnapshot, HealthState, PackingPolicy
from scheduler.planner import plan
from scheduler.simulate import ReplaySettings, replay, simulate
from scheduler.simulate.failures import GpuFailure
from scheduler.simulate.replay import _Replay
from scheduler.simulate.run import simulation_policy
from scheduler.simulate.snapshot_at import snapshot_name, time_label
from scheduler.traces import read_trace
from scheduler.verify import check_plan
from tests.test_cli import REPO, wattpack

TRACE = REPO / "examples" / "trace-small.csv"
CLUSTER = REPO / "examples" / "cluster-small.yaml"
TIMES = (50.0, 100.0, 300.0, 900.5)
FAILURE = GpuFailure(100.0, "node-0001", 3)  # at a snapshot time: the snapshot shows it


def _cluster() -> ClusterSnapshot:
    return ClusterSnapshot.model_validate(yaml.safe_load(CLUSTER.read_text()))


def _policy() -> PackingPolicy:
    return simulation_policy(PackingPolicy.model_validate({"solver": {"timeLimitSeconds": 1.0}}))


def _settings(sink, times=TIMES) -> ReplaySettings:
    return ReplaySettings(10.0, 4.0, failures=(FAILURE,), snapshot_at=times, on_snapshot=sink)


def _taken(scheduler: str) -> list[tuple[float, ClusterSnapshot, dict, dict]]:
    """Snapshots, each with what the replay held at that moment: the ledger's running pods
    (key -> node, GPUs) and the queue (key -> seconds since queued)."""
    taken = []
    sim: list[_Replay] = []

    def sink(name: str, at: float, snap: ClusterSnapshot) -> None:
        assert name == scheduler
        s = sim[0]
        running = {
            k: (s.ledger.nodes[r.node].name, list(r.gpus)) for k, r in s.ledger.running.items()
        }
        queued = {p.key: at - q.since for q in s.queue.values() for p in q.pods}
        taken.append((at, snap, running, queued))

    jobs = read_trace("csv", TRACE)
    sim.append(_Replay(_cluster(), jobs, scheduler, _policy(), _settings(sink), lambda: 0.0))
    sim[0].run(None)
    return taken


@pytest.fixture(scope="module", params=["best-fit", "wattpack"])
def taken(request) -> tuple[str, list]:
    return request.param, _taken(request.param)


def test_a_snapshot_is_taken_at_every_time_named_and_round_trips(taken) -> None:
    scheduler, snaps = taken
    assert [at for at, *_ in snaps] == list(TIMES)
    for at, snap, _, _ in snaps:
        assert snap.metadata.name == snapshot_name("small-h100", scheduler, at)
        data = snap.model_dump(mode="json", by_alias=True)
        again = ClusterSnapshot.model_validate(json.loads(json.dumps(data)))
        assert again.model_dump(mode="json", by_alias=True) == data


def test_running_pods_are_the_ledgers_and_pending_pods_the_queue_with_their_wait(taken) -> None:
    _, snaps = taken
    for _, snap, running, queued in snaps:
        assert {p.key: (p.node, p.gpu_indices) for p in snap.pods if p.node} == running
        pending = {p.key: p.waiting_seconds for p in snap.pods if p.node is None}
        assert pending == pytest.approx(queued)
        assert all(w is not None and w >= 0 for w in pending.values())
    # The trace is busy enough that these states have both, and one has a waiting gang.
    assert all(running and queued for _, _, running, queued in snaps[1:])
    assert any(p.gang and p.node is None for _, s, _, _ in snaps for p in s.pods)
    assert any(w > 0 for _, _, _, queued in snaps for w in queued.values())


def test_node_health_is_that_of_the_moment(taken) -> None:
    _, snaps = taken

    def state(snap: ClusterSnapshot) -> HealthState:
        node = next(n for n in snap.nodes if n.name == FAILURE.node)
        return node.health_of(FAILURE.gpu)

    assert [state(s) for at, s, _, _ in snaps] == [
        HealthState.FAILED if at >= FAILURE.time else HealthState.HEALTHY for at in TIMES
    ]
    # Nothing runs on the failed GPU.
    for _, snap, _, _ in snaps[1:]:
        assert not [p for p in snap.pods if p.node == FAILURE.node and FAILURE.gpu in p.gpu_indices]


def test_every_snapshot_plans_to_a_feasible_plan(taken) -> None:
    _, snaps = taken
    policy = _policy()
    for _, snap, _, _ in snaps:
        p = plan(snap, policy)
        assert check_plan(snap, policy, p) == []
        assert p.summary.pending_pods == sum(1 for pod in snap.pods if pod.node is None)


def test_the_same_replay_gives_the_same_snapshots() -> None:
    def dumps(scheduler: str) -> list[dict]:
        out: list[dict] = []
        jobs = read_trace("csv", TRACE)
        sink = lambda _, __, s: out.append(s.model_dump(mode="json"))  # noqa: E731
        replay(_cluster(), jobs, scheduler, _policy(), _settings(sink))
        return out

    assert dumps("wattpack") == dumps("wattpack")


def test_times_past_the_end_are_not_taken_and_snapshots_stay_out_of_the_report() -> None:
    got: list[float] = []
    jobs = read_trace("csv", TRACE)
    last = max(j.submit for j in jobs) / 4.0
    settings = _settings(lambda _, at, __: got.append(at), times=(last, last + 1, 0.0))
    report = simulate(
        _cluster(), jobs, ["best-fit"], _policy(), trace="t", replay_settings=settings
    )
    assert got == [0.0, last]
    assert not any("snapshot" in k for k in report.settings)
    # Times without a sink are ignored.
    replay(_cluster(), jobs, "best-fit", _policy(), ReplaySettings(snapshot_at=(5.0,)))


def test_time_labels() -> None:
    assert [time_label(t) for t in (0, 12345.0, 12.5)] == ["0", "12345", "12.5"]


def test_simulate_writes_one_snapshot_per_scheduler_and_time(tmp_path: Path) -> None:
    out = tmp_path / "snaps"
    r = wattpack(
        "simulate", "--trace", str(TRACE), "--cluster", str(CLUSTER),
        "--scheduler", "wattpack,best-fit", "--arrival-scale", "4", "--output", "json",
        "--snapshot-at", "300", "--snapshot-at", "75.5", "--snapshot-at", "1e9",
        "--snapshot-dir", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "snapshots_not_taken" in r.stderr  # 1e9 is past the last arrival
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "best-fit-t300.json", "best-fit-t75.5.json", "wattpack-t300.json", "wattpack-t75.5.json"
    ]  # fmt: skip
    snap = ClusterSnapshot.model_validate_json((out / "wattpack-t300.json").read_text())
    assert any(p.node is None for p in snap.pods) and any(p.node for p in snap.pods)
    assert "snapshot" not in json.dumps(json.loads(r.stdout)["settings"])


@pytest.mark.parametrize(
    ("times", "folder", "protocol", "message"),
    [
        ((5.0,), None, Protocol.REPLAY, "--snapshot-at needs --snapshot-dir"),
        ((), "d", Protocol.REPLAY, "--snapshot-dir without --snapshot-at"),
        ((5.0,), "d", Protocol.FGD, "only with --protocol replay"),
        ((-1.0, 5.0), "d", Protocol.REPLAY, "is negative"),
    ],
)
def test_snapshot_options_misused_are_a_user_error(times, folder, protocol, message) -> None:
    with pytest.raises(UserError, match=message):
        _snapshot_writer(times, folder, protocol, set())
    assert _snapshot_writer((), None, Protocol.REPLAY, set()) is None


def test_replay_states_keeps_the_first_times_drawn_with_pods_pending() -> None:
    import importlib.util

    path = REPO / "benchmarks" / "replay_states.py"
    spec = importlib.util.spec_from_file_location("benchmark_replay_states", path)
    states = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(states)  # type: ignore[union-attr]
    jobs = read_trace("csv", TRACE)
    settings = ReplaySettings(10.0, 4.0)
    # Nothing waits before 50 s; 300 and 900 are the first two drawn with pods pending.
    kept = states.pending_snapshots(
        _cluster(), jobs, "best-fit", settings, [10, 300, 20, 900, 100], 2
    )
    assert list(kept) == [300, 900]
    assert all(any(p.node is None for p in s.pods) for s in kept.values())
