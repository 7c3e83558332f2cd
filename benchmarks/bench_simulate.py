"""Trace-driven comparison of wattpack with the baselines, each measured in the same run.

    python3 benchmarks/bench_simulate.py --case fgd-openb       # FGD protocol, openb default
    python3 benchmarks/bench_simulate.py --case fgd-gpuspec33   # the same, 33% model-pinned
    python3 benchmarks/bench_simulate.py --case power-openb     # replay, facility at 80%
    python3 benchmarks/bench_simulate.py --case power-itp       # ITP replay, facility at 80%
    python3 benchmarks/bench_simulate.py --case power-itp-x3    # the same, arrivals 3x denser
    python3 benchmarks/bench_simulate.py                        # every case (about 40 minutes)

Each case runs the same command a user would (`wattpack simulate ...`, printed first) through
the library, writes its report (JSON + HTML) under --out, and prints wattpack's figures beside
every baseline's, with differences and ratios. Simulated figures are deterministic (the same
seeds give the same report); only the wall times printed vary with the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.cli.logs import LogFormat, LogLevel, configure
from scheduler.model import PackingPolicy
from scheduler.simulate import (
    SCHEDULERS,
    InflationSettings,
    ReplaySettings,
    every_kth_node,
    make_cluster,
    simulate,
    with_budgets,
)
from scheduler.simulate.report import write_report
from scheduler.simulate.result import SimReport
from scheduler.traces import read_openb, read_trace

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
OPENB = TRACES / "alibaba-gpu-v2023-openb"
ITP = TRACES / "microsoft-itp-elasticflow"
# wattpack's per-cycle solver budget in simulations: CP-SAT deterministic seconds.
TIME_LIMIT = 1.0
ITP_CLUSTER = "cluster02.csv"
ITP_NODES = 32  # 256 GPUs, 74% of cluster02's peak concurrent demand (its README: 60-100%)


STARVING = Path(__file__).resolve().parents[1] / "examples" / "policy-starving-gangs.yaml"


def _policy(**fields: object) -> PackingPolicy:
    return PackingPolicy.model_validate({"solver": {"timeLimitSeconds": TIME_LIMIT}, **fields})


def fgd_case(pods: str, seeds: int) -> tuple[str, SimReport]:
    command = (
        f"wattpack simulate --trace {OPENB / pods} --cluster "
        f"{OPENB / 'openb_node_list_gpu_node.csv'} --protocol fgd --scheduler all "
        f"--seeds {seeds} --step 0.05 --target 1.3 --time-limit {TIME_LIMIT}"
    )
    inventory = read_openb(OPENB / "openb_node_list_gpu_node.csv", "", pending=False)
    jobs = read_trace("openb", OPENB / pods)
    settings = InflationSettings(tuple(range(seeds)), 1.3, 0.05)
    report = simulate(
        inventory, jobs, SCHEDULERS, _policy(), trace=pods, protocol="fgd",
        inflation_settings=settings,
    )  # fmt: skip
    return command, report


def power_openb_case() -> tuple[str, SimReport]:
    step, scale, cycle = 8, 400.0, 5.0
    command = (
        f"wattpack simulate --trace {OPENB / 'openb_pod_list_default.csv'} --cluster "
        f"{OPENB / 'openb_node_list_gpu_node.csv'} --node-step {step} --arrival-scale {scale:g} "
        f"--facility-budget 0.8 --cycle-seconds {cycle:g} --scheduler all "
        f"--time-limit {TIME_LIMIT}"
    )
    inventory = every_kth_node(
        read_openb(OPENB / "openb_node_list_gpu_node.csv", "", pending=False), step
    )
    jobs = read_trace("openb", OPENB / "openb_pod_list_default.csv")
    report = simulate(
        with_budgets(inventory, facility=0.8), jobs, SCHEDULERS, _policy(),
        trace="openb default", replay_settings=ReplaySettings(cycle, scale),
    )  # fmt: skip
    return command, report


def power_itp_case(scale: float) -> tuple[str, SimReport]:
    """All schedulers, wattpack with starving gangs allowed to preempt (the trace is all
    training); evicted jobs restart from the beginning. Then wattpack again with evicted jobs
    resuming from a checkpoint ("wattpack-resume", the command plus --resume-evicted), and with
    the default policy ("wattpack-nostarve", the command without --policy)."""
    cycle = 10.0
    command = (
        f"wattpack make-cluster --nodes {ITP_NODES} --facility-budget 0.8 "
        "--out itp-cluster.yaml && "
        f"wattpack simulate --trace {ITP / ITP_CLUSTER} --cluster itp-cluster.yaml "
        f"--arrival-scale {scale:g} --cycle-seconds {cycle:g} --scheduler all "
        f"--time-limit {TIME_LIMIT} --policy {STARVING}"
    )
    cluster = with_budgets(make_cluster(nodes=ITP_NODES), facility=0.8)
    jobs = read_trace("itp", ITP / ITP_CLUSTER)
    starving = _policy(**yaml.safe_load(STARVING.read_text()))
    report = simulate(
        cluster, jobs, SCHEDULERS, starving, trace=f"ITP {ITP_CLUSTER}",
        replay_settings=ReplaySettings(cycle, scale),
    )  # fmt: skip
    plain = simulate(
        cluster, jobs, ["wattpack"], _policy(), trace=f"ITP {ITP_CLUSTER}",
        replay_settings=ReplaySettings(cycle, scale),
    )  # fmt: skip
    resumed = simulate(
        cluster, jobs, ["wattpack"], starving, trace=f"ITP {ITP_CLUSTER}",
        replay_settings=ReplaySettings(cycle, scale, resume_evicted=True),
    )  # fmt: skip
    report.runs.append(resumed.runs[0].model_copy(update={"scheduler": "wattpack-resume"}))
    report.runs.append(plain.runs[0].model_copy(update={"scheduler": "wattpack-nostarve"}))
    return command, report


def print_curves(report: SimReport) -> None:
    curves = {c.scheduler: c for c in report.curves}
    wp = curves["wattpack"]
    levels = wp.demand

    def mean(c, i: int, what: str = "milli") -> float:
        rows = getattr(c, what)
        return sum(r[i] for r in rows) / len(rows)

    print(f"  milli-GPU allocation, mean of {len(wp.seeds)} seeds, by demand level:")
    print("  demand   " + " ".join(f"{n:>16}" for n in curves))
    for i, d in enumerate(levels):
        if d >= 0.8 - 1e-9:
            print(f"  {d:6.0%}   " + " ".join(f"{mean(c, i):16.2%}" for c in curves.values()))
    last = len(levels) - 1
    worst = min(
        mean(wp, i) - max(mean(c, i) for n, c in curves.items() if n != "wattpack")
        for i in range(len(levels))
    )
    print(f"  wattpack minus the best baseline, lowest over all levels: {100 * worst:+.2f} points")
    for n, c in curves.items():
        seeds_min = min(r[last] for r in c.milli)
        print(
            f"  {n:<16} at {levels[last]:.0%}: milli {mean(c, last):.2%} (min over seeds "
            f"{seeds_min:.2%}), GPUs with work {mean(c, last, 'whole'):.2%}, unallocated GPUs "
            f"{sum(c.unallocated_gpus) / len(c.unallocated_gpus):.1f}, wattpack / it "
            f"{mean(wp, last) / mean(c, last):.4f}, wall {c.timings.total_seconds:.0f}s"
        )


def print_runs(report: SimReport) -> None:
    print(
        f"  {'scheduler':<16} {'alloc':>7} {'waiting':>8} {'alloc w':>8} {'>=90% w':>8}"
        f" {'bound w':>8} {'of bound':>8} {'viol':>5} {'never':>6} {'evict':>6} {'lost GPU-h':>10}"
        f" {'wait p50/p95 s (kind)':>38} {'cycle p95':>9}"
    )
    wp = next(r for r in report.runs if r.scheduler == "wattpack")
    for r in report.runs:
        waits = " ".join(
            f"{w.kind[:3]}:{w.wait_seconds.p50:.0f}/{w.wait_seconds.p95:.0f}" for w in r.waits
        )
        never = sum(w.never_started for w in r.waits)
        print(
            f"  {r.scheduler:<16} {r.allocation:7.2%} {r.waiting_seconds:8.0f}"
            f" {r.allocation_while_waiting:8.2%} {r.share_at_90_while_waiting:8.2%}"
            f" {r.bound_while_waiting:8.2%} {r.of_bound_while_waiting:8.2%}"
            f" {r.budget_violations:5d} {never:6d} {r.evictions:6d}"
            f" {r.gpu_seconds_lost / 3600:10.1f} {waits:>38} {r.timings.cycle_seconds.p95:8.3f}s"
        )
    for r in report.runs:
        if r.scheduler != "wattpack" and r.allocation_while_waiting > 0:
            print(
                f"  wattpack / {r.scheduler}: allocation while waiting "
                f"{wp.allocation_while_waiting / r.allocation_while_waiting:.4f}, overall "
                f"{wp.allocation / r.allocation:.4f}"
            )


CASES = {
    "fgd-openb": lambda a: fgd_case("openb_pod_list_default.csv", a.seeds),
    "fgd-gpuspec33": lambda a: fgd_case("openb_pod_list_gpuspec33.csv", a.seeds),
    "power-openb": lambda a: power_openb_case(),
    # The trace as recorded, then arrivals 2x and 3x denser: the budget binds ever more often.
    "power-itp": lambda a: power_itp_case(1.0),
    "power-itp-x2": lambda a: power_itp_case(2.0),
    "power-itp-x3": lambda a: power_itp_case(3.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=list(CASES), action="append")
    parser.add_argument("--seeds", type=int, default=10, help="FGD protocol runs")
    parser.add_argument("--out", default="/tmp/wattpack-bench", help="reports go here")
    args = parser.parse_args()
    configure(LogLevel.WARNING, LogFormat.CONSOLE)
    for name in args.case or list(CASES):
        start = time.perf_counter()
        command, report = CASES[name](args)
        print(f"== {name}  ({time.perf_counter() - start:.0f}s)\n  $ {command}")
        print(f"  {report.cluster}")
        print_curves(report) if report.curves else print_runs(report)
        written = write_report(report, Path(args.out) / name)
        print(f"  report: {written[1]}", flush=True)


if __name__ == "__main__":
    main()
