"""GPUs that degrade and fail during a power replay: what each way of meeting them loses.

    python3 benchmarks/bench_migration.py                  # openb and ITP, three modes each
    python3 benchmarks/bench_migration.py --case itp       # one trace

The same replays as bench_simulate.py's power cases (facility budget at 80%), wattpack only,
with failures injected at a seeded rate chosen so that each replay sees about --failures of
them, alarms before a share of them (failures.Degradation: 70% warned, a lead of 6 h on
average, half a false alarm per failure), and jobs that checkpoint every 30 minutes. Modes:
none (a failure goes unnoticed until the job hangs 30 minutes past it), reactive (the job goes
back to the queue at once, from its checkpoint), proactive (as reactive, and alarms turn GPUs
degraded: wattpack migrates their work first). Every figure is simulated and deterministic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_simulate import ITP, ITP_CLUSTER, ITP_NODES, OPENB, TIME_LIMIT

from scheduler.cli.logs import LogFormat, LogLevel, configure
from scheduler.model import PackingPolicy
from scheduler.simulate import ReplaySettings, every_kth_node, make_cluster, simulate, with_budgets
from scheduler.simulate.failures import Degradation, alarms_for, random_failures
from scheduler.traces import read_openb, read_trace

CHECKPOINT = 1800.0
HANG = 1800.0
MODES = ("none", "reactive", "proactive")


def _setup(case: str):
    if case == "openb":
        step, scale, cycle = 8, 400.0, 5.0
        inventory = every_kth_node(
            read_openb(OPENB / "openb_node_list_gpu_node.csv", "", pending=False), step
        )
        jobs = read_trace("openb", OPENB / "openb_pod_list_default.csv")
        return with_budgets(inventory, facility=0.8), jobs, scale, cycle
    cluster = with_budgets(make_cluster(nodes=ITP_NODES), facility=0.8)
    return cluster, read_trace("itp", ITP / ITP_CLUSTER), 1.0, 10.0


def run_case(case: str, failures_wanted: int, seed: int) -> None:
    inventory, jobs, scale, cycle = _setup(case)
    first = min(j.submit for j in jobs) / scale
    last = max(j.submit for j in jobs) / scale
    gpus = sum(n.gpus for n in inventory.nodes)
    days = (last - first) / 86_400
    rate = failures_wanted * 1000 / (gpus * days)
    failures = random_failures(inventory, rate, first, last, seed)
    alarms = alarms_for(inventory, failures, Degradation(seed=seed), first, last)
    policy = PackingPolicy.model_validate(
        {
            "solver": {"timeLimitSeconds": TIME_LIMIT},
            # What a failure loses on average, with checkpoints every CHECKPOINT seconds.
            "moves": {"sinceCheckpointSeconds": CHECKPOINT / 2},
        }
    )
    failing = {(f.node, f.gpu) for f in failures}
    warned = sum(1 for a in alarms if (a.node, a.gpu) in failing)
    print(
        f"{case}: {len(inventory.nodes)} nodes, {gpus} GPUs, {days:.1f} simulated days, "
        f"{len(failures)} failures ({rate:.1f} per 1,000 GPU-days, seed {seed}), "
        f"{len(alarms)} alarms ({warned} before a failure)"
    )
    print(
        f"  {'mode':<10} {'lost GPU-h':>10} {'alloc':>7} {'alloc w':>8} {'>=90% w':>8}"
        f" {'moves':>6} {'killed':>7} {'evict':>6} {'never':>6} {'wait p50/p95 s by kind':>40}"
    )
    for mode in MODES:
        settings = ReplaySettings(
            cycle,
            scale,
            failures=failures,
            alarms=alarms,
            migration=mode,
            checkpoint_seconds=CHECKPOINT,
            hang_seconds=HANG,
        )
        report = simulate(
            inventory, jobs, ["wattpack"], policy, trace=case, replay_settings=settings
        )
        r = report.runs[0]
        waits = " ".join(
            f"{w.kind[:3]}:{w.wait_seconds.p50:.0f}/{w.wait_seconds.p95:.0f}" for w in r.waits
        )
        print(
            f"  {mode:<10} {r.gpu_seconds_lost / 3600:10.1f} {r.allocation:7.2%}"
            f" {r.allocation_while_waiting:8.2%} {r.share_at_90_while_waiting:8.2%}"
            f" {r.moves:6d} {r.pods_killed:7d} {r.evictions:6d}"
            f" {sum(w.never_started for w in r.waits):6d} {waits:>40}"
        )
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=["openb", "itp"], action="append")
    parser.add_argument("--failures", type=int, default=30, help="about this many per replay")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    configure(LogLevel("warning"), LogFormat("console"))
    for case in args.case or ["itp", "openb"]:
        run_case(case, args.failures, args.seed)


if __name__ == "__main__":
    main()
