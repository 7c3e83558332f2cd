"""The simulator: the ledger referees every start, the power bound bounds, replays and the FGD
protocol run every scheduler without breaking a limit, and the same seed gives the same report."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest

from scheduler.model import ClusterSnapshot, PackingPolicy, Pod, PodKind
from scheduler.simulate import (
    SCHEDULERS,
    InflationSettings,
    ReplaySettings,
    inflate,
    make_cluster,
    replay,
    simulate,
    with_budgets,
)
from scheduler.simulate.ledger import Ledger, PowerBound, SimulationBug
from scheduler.simulate.run import simulation_policy
from scheduler.traces import read_trace
from scheduler.traces.workload import TraceJob

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "examples" / "trace-small.csv"
CLUSTER = REPO / "examples" / "cluster-small.yaml"


def small_cluster() -> ClusterSnapshot:
    import yaml

    return ClusterSnapshot.model_validate(yaml.safe_load(CLUSTER.read_text()))


def training(name: str, gpus: int) -> Pod:
    return Pod(name=name, kind=PodKind.TRAINING, gpus=gpus)


# -- the ledger ----------------------------------------------------------------------------


def test_ledger_start_and_stop_are_inverse_and_count_allocation() -> None:
    cluster = make_cluster(nodes=2, gpus_per_node=4)
    lg = Ledger(cluster, PackingPolicy())
    idle = dict(lg.power)
    share = Pod(name="s", kind=PodKind.INFERENCE, gpus=1, gpu_milli=300)
    lg.start(training("t", 2), 0, (0, 1), 0.0)
    lg.start(share, 1, (3,), 0.0)
    assert lg.allocated_milli == 2300 and lg.busy_gpus == 3
    assert lg.allocation == pytest.approx(2300 / 8000)
    assert lg.power["facility"] > idle["facility"]
    lg.stop("default/t")
    lg.stop("default/s")
    assert lg.allocated_milli == 0 and lg.busy_gpus == 0 and lg.power == idle


def test_ledger_refuses_an_overcommitted_gpu_and_a_double_start() -> None:
    lg = Ledger(make_cluster(nodes=1, gpus_per_node=2), PackingPolicy())
    lg.start(Pod(name="a", kind=PodKind.INFERENCE, gpus=1, gpu_milli=600), 0, (0,), 0.0)
    with pytest.raises(SimulationBug, match="cannot take 600"):
        lg.start(Pod(name="b", kind=PodKind.INFERENCE, gpus=1, gpu_milli=600), 0, (0,), 0.0)
    with pytest.raises(SimulationBug, match="already running"):
        lg.start(Pod(name="a", kind=PodKind.INFERENCE, gpus=1, gpu_milli=100), 0, (1,), 0.0)


def test_ledger_counts_every_start_over_a_budget() -> None:
    # 2 GPUs of 700/75 W: idle 150 W; one training GPU adds 625 W.
    cluster = with_budgets(make_cluster(nodes=1, gpus_per_node=2), facility=700 / 1400)
    lg = Ledger(cluster, PackingPolicy())
    lg.start(training("t", 1), 0, (0,), 0.0)
    assert lg.violations == 1 and lg.over["facility"] == 1


# -- the power bound -------------------------------------------------------------------------


def test_power_bound_is_the_gpu_count_the_budget_feeds_for_training() -> None:
    # 10 nodes x 8 H100 (700/75 W) at 80% of nameplate: (0.8 x 700 - 75) / 625 of the GPUs.
    cluster = with_budgets(make_cluster(nodes=10, gpus_per_node=8), facility=0.8)
    lg = Ledger(cluster, PackingPolicy())
    bound = PowerBound(cluster, PackingPolicy(), lg.usable)
    fed = (0.8 * 80 * 700 - 80 * 75) / 625
    assert bound.milli({PodKind.TRAINING: 80_000}) == int(fed * 1000)
    assert bound.milli({PodKind.TRAINING: 10_000}) == 10_000  # less demand than power
    # Inference draws less, so the same budget feeds more of it.
    assert bound.milli({PodKind.INFERENCE: 80_000}) > bound.milli({PodKind.TRAINING: 80_000})


def test_no_placement_beats_the_power_bound() -> None:
    """Fill a budgeted cluster GPU by GPU in the cheapest order; the bound is never below."""
    cluster = with_budgets(make_cluster(nodes=4, gpus_per_node=8), facility=0.7, leaf=0.8)
    policy = PackingPolicy()
    lg = Ledger(cluster, policy)
    bound = PowerBound(cluster, policy, lg.usable)
    demand = {PodKind.INFERENCE: 16_000, PodKind.TRAINING: 32_000}
    pods = [Pod(name=f"i{i}", kind=PodKind.INFERENCE) for i in range(16)]
    pods += [training(f"t{i}", 1) for i in range(32)]
    slots = [(n, g) for n in range(4) for g in range(8)]
    for pod in pods:
        for n, g in slots:
            lg.start(pod, n, (g,), 0.0)
            if lg.violations:
                lg.stop(pod.key)
                lg.violations = 0
                lg.over.clear()
                continue
            slots.remove((n, g))
            break
    assert lg.allocated_milli <= bound.milli(demand)


# -- replays ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_replay_of_the_example_trace_keeps_every_limit(scheduler: str) -> None:
    jobs = read_trace("csv", TRACE)
    policy = simulation_policy(PackingPolicy())
    run = replay(small_cluster(), jobs, scheduler, policy, ReplaySettings(horizon=20_000))
    assert run.budget_violations == 0
    assert run.pods == 30 and run.started + sum(w.never_started for w in run.waits) == 30
    assert 0 < run.finished <= run.started
    # The bound is an upper bound at every sampled instant.
    for a, b in zip(run.timeline.allocation, run.timeline.bound, strict=True):
        assert a <= b + 1e-9
    assert all(w.wait_seconds.p50 >= 0 for w in run.waits)
    facility = next(p for p in run.power if p.domain == "facility")
    assert facility.peak_watts <= facility.budget_watts  # type: ignore[operator]


def test_replay_starts_a_gang_whole_and_a_pod_once_it_fits() -> None:
    cluster = make_cluster(nodes=2, gpus_per_node=8)
    gang = tuple(
        Pod(name=f"g{i}", kind=PodKind.TRAINING, gpus=8, gang={"name": "g", "size": 2})
        for i in range(2)
    )
    jobs = [
        TraceJob("big", 0.0, 100.0, (training("big", 8),)),
        TraceJob("g", 10.0, 50.0, gang),
    ]
    for scheduler in ("wattpack", "best-fit"):
        run = replay(
            cluster, jobs, scheduler, simulation_policy(PackingPolicy()), ReplaySettings(0, 1, 500)
        )
        (waits,) = run.waits
        # The gang needs both nodes: it waits until "big" leaves at 100 s, then starts whole.
        assert waits.started == 3 and waits.wait_seconds.max == pytest.approx(90.0)
        assert run.finished == 3


def test_replay_skips_pods_that_fit_no_node_of_the_empty_cluster() -> None:
    jobs = [TraceJob("huge", 0.0, 10.0, (training("huge", 16),))]
    run = replay(make_cluster(nodes=1), jobs, "wattpack", PackingPolicy())
    assert run.unplaceable == 1 and run.waiting_seconds == 0


def test_arrival_scale_packs_arrivals_closer() -> None:
    jobs = read_trace("csv", TRACE)
    policy = simulation_policy(PackingPolicy())
    slow = replay(small_cluster(), jobs, "best-fit", policy, ReplaySettings(10, 1.0))
    fast = replay(small_cluster(), jobs, "best-fit", policy, ReplaySettings(10, 10.0))
    assert fast.span_seconds == pytest.approx(slow.span_seconds / 10)


# -- the FGD protocol and reproducibility ----------------------------------------------------


def _openb_slice(traces: Path, rows: int) -> list[TraceJob]:
    from scheduler.traces import openb_jobs

    path = traces / "openb_pod_list_default.csv"
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        picked = [row for i, row in enumerate(reader) if i % (8152 // rows) == 0]
    return openb_jobs(picked, str(path))


@pytest.fixture(scope="module")
def openb_small():
    from scheduler.simulate import every_kth_node
    from scheduler.traces import read_openb
    from tests.traces import trace_dir

    d = trace_dir("alibaba-gpu-v2023-openb")
    inventory = every_kth_node(
        read_openb(d / "openb_node_list_gpu_node.csv", "", pending=False), 16
    )
    return inventory, _openb_slice(d, 400)


@pytest.mark.slow
def test_fgd_protocol_reaches_the_target_and_the_same_seed_gives_the_same_report(
    openb_small,
) -> None:
    inventory, jobs = openb_small
    settings = InflationSettings(seeds=(3, 4), target=1.3, step=0.1)
    policy = PackingPolicy()

    def run() -> dict:
        report = simulate(
            inventory,
            jobs,
            ["wattpack", "fgd", "best-fit"],
            policy,
            trace="slice",
            protocol="fgd",
            inflation_settings=settings,
        )
        data = report.model_dump(mode="json")
        for curve in data["curves"]:
            curve.pop("timings")
        return data

    first, second = run(), run()
    assert first == second
    for curve in first["curves"]:
        assert curve["demand"][-1] == pytest.approx(1.3)
        for milli, whole in zip(curve["milli"], curve["whole"], strict=True):
            assert all(b >= a - 1e-12 for a, b in itertools.pairwise(milli))  # nothing leaves
            assert all(m <= w + 1e-12 for m, w in zip(milli, whole, strict=True))
            assert milli[0] == pytest.approx(0.1, abs=0.02)  # everything fits at 10%


def test_fgd_protocol_seeds_give_different_orders(openb_small) -> None:
    inventory, jobs = openb_small
    settings = InflationSettings(seeds=(0, 1), target=1.2, step=0.2)
    curve = inflate(inventory, jobs, "best-fit", PackingPolicy(), settings)
    assert curve.milli[0] != curve.milli[1]


@pytest.mark.slow
def test_replay_twice_gives_the_same_report(openb_small) -> None:
    inventory, jobs = openb_small
    settings = ReplaySettings(cycle_seconds=60, arrival_scale=2000)

    def run() -> dict:
        report = simulate(
            with_budgets(inventory, facility=0.8),
            jobs,
            ["wattpack", "fgd"],
            PackingPolicy(),
            trace="slice",
            replay_settings=settings,
        )
        data = report.model_dump(mode="json")
        for r in data["runs"]:
            r.pop("timings")
        return data

    first = run()
    assert first == run()
    assert all(r["budget_violations"] == 0 for r in first["runs"])


def test_simulation_policy_is_deterministic() -> None:
    assert simulation_policy(PackingPolicy()).solver.deterministic


def test_trace_model_unknown_to_the_cluster_is_a_user_error(tmp_path: Path) -> None:
    from scheduler.errors import UserError

    path = tmp_path / "t.csv"
    path.write_text("submit,gpus,kind,gpu_models\n0,1,training,H100-SXM\n5,1,training,B200|GB200\n")
    jobs = read_trace("csv", path)
    with pytest.raises(UserError, match=r"line 3, column 'gpu_models': unknown GPU model 'B200'"):
        simulate(small_cluster(), jobs, ["best-fit"], PackingPolicy(), trace=str(path))


def test_itp_slice_replays_gangs_under_a_power_budget() -> None:
    from tests.traces import trace_dir

    path = trace_dir("microsoft-itp-elasticflow") / "cluster10.csv"
    jobs = read_trace("itp", path)
    assert any(len(j.pods) > 1 for j in jobs)  # 16-GPU jobs are gangs of two 8-GPU pods
    cluster = with_budgets(make_cluster(nodes=4, gpus_per_node=8), facility=0.8)
    for scheduler in ("wattpack", "best-fit", "fgd"):
        run = replay(
            cluster,
            jobs,
            scheduler,
            simulation_policy(PackingPolicy()),
            ReplaySettings(cycle_seconds=60, arrival_scale=4),
        )
        assert run.budget_violations == 0
        assert run.started > 0
        for a, b in zip(run.timeline.allocation, run.timeline.bound, strict=True):
            assert a <= b + 1e-9


# -- injected GPU failures -------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["wattpack", "best-fit", "fgd"])
def test_a_failed_gpu_kills_its_gang_whole_and_the_work_restarts_elsewhere(scheduler: str) -> None:
    from scheduler.simulate.failures import GpuFailure

    cluster = make_cluster(nodes=3, gpus_per_node=8)
    gang = tuple(
        Pod(name=f"g{i}", kind=PodKind.TRAINING, gpus=8, gang={"name": "g", "size": 2})
        for i in range(2)
    )
    jobs = [TraceJob("g", 0.0, 100.0, gang)]
    # The gang lands on two of the three nodes; fail GPU 3 of each node in turn at t=40.
    failures = tuple(GpuFailure(40.0, f"node-{i:04d}", 3) for i in range(3))
    settings = ReplaySettings(0, 1, 1000, failures)
    run = replay(cluster, jobs, scheduler, simulation_policy(PackingPolicy()), settings)
    assert run.gpu_failures == 3
    # Both members were killed at 40 s, each after 8 GPUs x 40 s of work.
    assert run.pods_killed == 2 and run.gpu_seconds_lost == pytest.approx(2 * 8 * 40)
    # No node has 8 healthy GPUs left: the gang never starts again.
    assert run.started == 2 and run.finished == 0
    (waits,) = run.waits
    assert waits.never_started == 2


def test_random_failures_are_seeded_and_each_gpu_fails_once() -> None:
    from scheduler.simulate.failures import random_failures

    cluster = make_cluster(nodes=4, gpus_per_node=8)
    a = random_failures(cluster, 50_000, 0.0, 86_400.0, seed=7)
    assert a == random_failures(cluster, 50_000, 0.0, 86_400.0, seed=7)
    assert a != random_failures(cluster, 50_000, 0.0, 86_400.0, seed=8)
    assert len({(f.node, f.gpu) for f in a}) == len(a) > 0
    assert all(0 < f.time <= 86_400 for f in a)
    assert random_failures(cluster, 0, 0.0, 86_400.0, seed=7) == ()


def test_failed_gpus_shrink_capacity_and_take_no_work() -> None:
    from scheduler.simulate.failures import GpuFailure

    cluster = make_cluster(nodes=1, gpus_per_node=2)
    jobs = [TraceJob(f"j{i}", 10.0 * i, 1000.0, (training(f"j{i}", 1),)) for i in range(3)]
    settings = ReplaySettings(0, 1, 1500, (GpuFailure(5.0, "node-0000", 1),))
    for scheduler in ("wattpack", "best-fit"):
        run = replay(cluster, jobs, scheduler, simulation_policy(PackingPolicy()), settings)
        # One GPU is left: j0 runs to 1,000 s (restarted at 5 s if it was on GPU 1), then j1;
        # j2 never gets a GPU before the horizon.
        assert run.gpu_failures == 1 and run.started == 2 and run.finished == 1
        (waits,) = run.waits
        assert waits.never_started == 1
        assert max(run.timeline.allocation) == pytest.approx(1.0)  # of the one GPU left
