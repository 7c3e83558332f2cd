"""Is a tuned policy's edge on the holdout more than the solver's own noise? Re-scores the
default and the chosen policy of a `wattpack tune` report on the holdout with several solver
seeds, in the replay the report was tuned in, and prints each objective's mean and spread.

    python3 benchmarks/tune_seeds.py --report tune-openb/report.json \\
      --space benchmarks/tune-space-openb.yaml --seeds 4 -- \\
      --trace ../shared/traces/alibaba-gpu-v2023-openb/openb_pod_list_default.csv \\
      --cluster ../shared/traces/alibaba-gpu-v2023-openb/openb_node_list_gpu_node.csv \\
      --node-step 8 --arrival-scale 400 --facility-budget 0.8 --cycle-seconds 5 --time-limit 1

The flags after `--` are the tune command's replay flags (the subset below).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from scheduler.cli.simulate import detect_format, load_cluster
from scheduler.cli.tune import with_time_limit
from scheduler.simulate import every_kth_node, with_budgets
from scheduler.simulate.replay import ReplaySettings
from scheduler.traces import read_trace
from scheduler.tune.outcome import split
from scheduler.tune.search import Problem
from scheduler.tune.space import TuningSpace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", required=True)
    ap.add_argument("--space", required=True)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--trace", required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--node-step", type=int, default=1)
    ap.add_argument("--nodes-per-rack", type=int, default=4)
    ap.add_argument("--arrival-scale", type=float, default=1.0)
    ap.add_argument("--facility-budget", type=float)
    ap.add_argument("--cycle-seconds", type=float, default=10.0)
    ap.add_argument("--time-limit", type=float)
    ap.add_argument("--holdout", type=float, default=0.3)
    ap.add_argument("--resume-evicted", action="store_true")
    args = ap.parse_args([a for a in sys.argv[1:] if a != "--"])
    report = json.loads(Path(args.report).read_text())
    space = TuningSpace.model_validate(yaml.safe_load(Path(args.space).read_text()))
    space = with_time_limit(space, args.time_limit)
    inventory = with_budgets(
        every_kth_node(load_cluster(args.cluster, args.nodes_per_rack), args.node_step),
        facility=args.facility_budget,
        leaf=None,
    )
    kind = detect_format(args.trace)  # as tune reads it: from the header, not the name
    _, held = split(list(read_trace(kind, args.trace)), args.holdout)
    settings = ReplaySettings(
        args.cycle_seconds,
        args.arrival_scale,
        resume_evicted=args.resume_evicted,
        physics=space.policy({}).power_factors,
    )
    problem = Problem(inventory, tuple(held), settings)
    chosen = next((e for e in report["front"] if e["label"] == report["chosen"]), None)
    rows = {"default": {}} | ({chosen["label"]: chosen["params"]} if chosen else {})
    runs = [(label, seed) for label in rows for seed in range(args.seeds)]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(problem.score, seeded(space, rows[label], seed)) for label, seed in runs
        ]
        scores = [f.result() for f in futures]
    names = ("allocation while waiting", "inference p95 wait s", "lost GPU-h")
    for label in rows:
        mine = [s for (lab, _), s in zip(runs, scores, strict=True) if lab == label]
        print(f"{label}: budget violations {sum(s.budget_violations for s in mine)}")
        for i, name in enumerate(names):
            values = [s.values[i] for s in mine]
            shown = ", ".join(f"{v:.6g}" for v in values)
            print(f"  {name}: mean {statistics.mean(values):.6g} (seeds: {shown})")


def seeded(space: TuningSpace, params: dict, seed: int):  # type: ignore[no-untyped-def]
    policy = space.policy(params)
    return policy.model_copy(update={"solver": policy.solver.model_copy(update={"seed": seed})})


if __name__ == "__main__":
    main()
