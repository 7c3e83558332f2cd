"""How much moving running pods could add at the end of the FGD protocol: a proven ceiling.

    python3 benchmarks/fgd_ceiling.py                 # seed 0, a 60 s re-plan
    python3 benchmarks/fgd_ceiling.py --seed 3 --time-limit 120

Runs the FGD protocol (openb default, 130% demand) with wattpack and moves off, as
bench_defrag.py's first row, then re-plans the final state from scratch: every pod pending, the
pods that ran given priority 1000 so that a plan keeps them (any plan that dropped one would be
worth less). The re-plan's proven bound, less what the running pods are worth, over the least
any waiting pod is worth per milli-GPU, bounds the milli-GPU the waiting pods could add: so no
set of moves, however many, can take that state's allocation above the printed ceiling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_simulate import OPENB, TIME_LIMIT

from scheduler.cli.logs import LogFormat, LogLevel, configure
from scheduler.fit.value import pod_value
from scheduler.model import PackingPolicy
from scheduler.planner import plan
from scheduler.simulate import InflationSettings
from scheduler.simulate.carry_out import LedgerTarget, carry_out
from scheduler.simulate.inflation import arrivals
from scheduler.simulate.ledger import Ledger
from scheduler.simulate.runners import make_runner
from scheduler.traces import read_openb, read_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=60.0, help="the re-plan's, seconds")
    args = ap.parse_args()
    configure(LogLevel("error"), LogFormat("console"))
    inventory = read_openb(OPENB / "openb_node_list_gpu_node.csv", "", pending=False)
    jobs = read_trace("openb", OPENB / "openb_pod_list_default.csv")
    solver = {"timeLimitSeconds": TIME_LIMIT, "deterministic": True}
    policy = PackingPolicy.model_validate({"solver": solver, "moves": {"perCycle": 0}})
    runner = make_runner("wattpack", inventory, [p for j in jobs for p in j.pods], policy)
    ledger = Ledger(inventory, policy)
    queue: dict = {}
    arrived, stream = 0, arrivals(jobs, args.seed)
    for level in InflationSettings((args.seed,), 1.3, 0.05).levels():
        while arrived < level * ledger.capacity_milli:
            job = next(stream)
            arrived += job.milli
            queue.update((p.key, p) for p in job.pods)
        seen = ledger.snapshot(list(queue.values()))
        target = LedgerTarget(
            ledger,
            0.0,
            queue,
            evicted=lambda key: None,
            bound=lambda pod, node, gpus: ledger.start(queue.pop(pod.key), node, gpus, 0),
            moved=lambda pod, cost: None,
            costs={},
        )
        carry_out(runner.plan(seen), seen, target)
    final = ledger.snapshot(list(queue.values()))
    running = {p.key for p in final.pods if p.node is not None}
    batch = final.model_copy(
        update={
            "pods": [
                p.model_copy(
                    update={"node": None, "gpu_indices": [], "priority": 1000 * (p.key in running)}
                )
                for p in final.pods
            ]
        }
    )
    replan_policy = PackingPolicy.model_validate(
        {"solver": {"timeLimitSeconds": args.time_limit, "seed": 0}}
    )
    out = plan(batch, replan_policy)
    kept = running & {b.pod for b in out.bindings}
    v_running = sum(pod_value(p, replan_policy) for p in batch.pods if p.key in running)
    waiting = [p for p in batch.pods if p.key not in running and p.gpus]
    rate = min(pod_value(p, replan_policy) / p.milli_total for p in waiting)
    run_milli = sum(p.milli_total for p in batch.pods if p.key in running)
    ceiling = (run_milli + max(0.0, out.summary.bound - v_running) / rate) / ledger.capacity_milli
    print(f"FGD openb default at 130%, seed {args.seed}, moves off: {ledger.allocation:.2%}")
    print(
        f"re-plan of that state ({args.time_limit:g} s): {out.summary.gpu_allocation:.2%}, "
        f"keeping {len(kept)} of {len(running)} running pods"
    )
    print(f"ceiling with every running pod kept, any moves: {ceiling:.2%}")


if __name__ == "__main__":
    main()
