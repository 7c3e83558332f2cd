"""Defragmentation under the FGD protocol: openb's default trace, demand inflated to 130%,
wattpack with running pods allowed to move (at most 2% of the running pods per step) and not.

    python3 benchmarks/bench_defrag.py                 # 10 seeds, about 5 minutes
    python3 benchmarks/bench_defrag.py --seeds 3
    python3 benchmarks/bench_defrag.py --replays       # the power replays too (15 minutes)

Each step is one planning cycle (the FGD protocol, as bench_simulate.py's fgd-openb case); the
moves and their planned cost (restart GPU-seconds) are counted. Figures are simulated and
deterministic; only wall times vary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_simulate import OPENB, TIME_LIMIT

from scheduler.cli.logs import LogFormat, LogLevel, configure
from scheduler.model import PackingPolicy
from scheduler.simulate import InflationSettings, simulate
from scheduler.traces import read_openb, read_trace

POLICIES = {
    "defrag off": {"perCycle": 0},
    "defrag on (2% of running pods a step)": {"perCycle": 1_000_000, "perCycleShare": 0.02},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--pods", default="openb_pod_list_default.csv")
    parser.add_argument("--replays", action="store_true", help="the power replays as well")
    args = parser.parse_args()
    configure(LogLevel("warning"), LogFormat("console"))
    inventory = read_openb(OPENB / "openb_node_list_gpu_node.csv", "", pending=False)
    jobs = read_trace("openb", OPENB / args.pods)
    settings = InflationSettings(tuple(range(args.seeds)), 1.3, 0.05)
    print(
        f"wattpack simulate --trace {OPENB / args.pods} --cluster "
        f"{OPENB / 'openb_node_list_gpu_node.csv'} --protocol fgd --seeds {args.seeds} "
        f"--step 0.05 --target 1.3 --time-limit {TIME_LIMIT} --policy P  (P: moves below)"
    )
    for name, moves in POLICIES.items():
        policy = PackingPolicy.model_validate(
            {"solver": {"timeLimitSeconds": TIME_LIMIT}, "moves": moves}
        )
        report = simulate(
            inventory, jobs, ["wattpack"], policy, trace=args.pods, protocol="fgd",
            inflation_settings=settings,
        )  # fmt: skip
        (c,) = report.curves
        last = len(c.demand) - 1
        at = [seed[last] for seed in c.milli]
        at100 = [
            seed[c.demand.index(min(c.demand, key=lambda d: abs(d - 1.0)))] for seed in c.milli
        ]
        print(
            f"  {name:<40} moves {{{moves}}}: milli at 130% mean {sum(at) / len(at):.2%} "
            f"(min {min(at):.2%}, max {max(at):.2%}), at 100% {sum(at100) / len(at100):.2%}; "
            f"moves {c.moves} ({c.move_gpu_seconds / 3600:.1f} GPU-h planned cost), "
            f"wall {c.timings.total_seconds:.0f} s"
        )
        sys.stdout.flush()
    if args.replays:
        replays()


def replays() -> None:
    """bench_simulate.py's power replays (facility at 80%), wattpack with moves on and off."""
    from bench_migration import _setup

    from scheduler.simulate import ReplaySettings

    for case in ("itp", "openb"):
        inventory, jobs, scale, cycle = _setup(case)
        for name, moves in POLICIES.items():
            policy = PackingPolicy.model_validate(
                {"solver": {"timeLimitSeconds": TIME_LIMIT}, "moves": moves}
            )
            report = simulate(
                inventory, jobs, ["wattpack"], policy, trace=case,
                replay_settings=ReplaySettings(cycle, scale),
            )  # fmt: skip
            r = report.runs[0]
            print(
                f"  power replay {case:<6} {name:<40} alloc {r.allocation:.2%}, while waiting "
                f"{r.allocation_while_waiting:.2%} (>=90% {r.share_at_90_while_waiting:.2%} of "
                f"that time, {r.of_bound_while_waiting:.2%} of the bound), moves {r.moves}, "
                f"lost {r.gpu_seconds_lost / 3600:.1f} GPU-h, never started "
                f"{sum(w.never_started for w in r.waits)}"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
