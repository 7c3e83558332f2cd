"""How much moving running pods could add at the end of the FGD protocol: a proven ceiling.

    python3 benchmarks/fgd_ceiling.py                 # seed 0, a 60 s re-plan
    python3 benchmarks/fgd_ceiling.py --seed 3 --time-limit 120
    python3 benchmarks/fgd_ceiling.py --any-run --seeds 5   # the bound on every run
    python3 benchmarks/fgd_ceiling.py --any-run --placed-until 0.95 --seeds 5 --time-limit 300
        # the runs that hold every GPU pod arriving up to 95% (about 25 minutes)

--any-run bounds every scheduler at once: the pods that arrive up to 130% demand depend only
on the seed (arrivals stop on requested milli-GPU, never on what was placed), and the protocol
has no departures, so the end state of any run, with any moves, is a packing of a subset of
those pods on the empty inventory. The planner's proven bound on placing all of them as one
batch, all of equal worth per milli-GPU, bounds the allocation of every such packing.
With --placed-until L the packings are those that hold every GPU pod arriving up to demand L
(the runs that place every arrival while all fit, as wattpack's do up to 95%). A pod once
placed stays: no departures, no evictions (the protocol plans without preemption and stops on
any), and a move keeps the pod. So such a run still holds them at 130%, and the bound is then
scheduler.solver.arc_flow's, a relaxation (each node type's GPUs one pool, packed share by
share; CPU and memory summed a type) solved by CP-SAT with those pods held; it is tighter than
the planner's, which is the configuration LP's. It also runs wattpack as bench_defrag.py does
(moves on) up to L and prints the milli-GPU it holds there, which equals theirs when it holds
them all.

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
from collections import Counter, defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_defrag import POLICIES
from bench_simulate import OPENB, TIME_LIMIT

from scheduler.cli.logs import LogFormat, LogLevel, configure
from scheduler.fit.value import pod_value
from scheduler.model import PackingPolicy
from scheduler.planner import plan
from scheduler.simulate import InflationSettings, simulate
from scheduler.simulate.carry_out import LedgerTarget, carry_out
from scheduler.simulate.inflation import arrivals
from scheduler.simulate.ledger import Ledger
from scheduler.simulate.runners import make_runner
from scheduler.solver.arc_flow import NodeType, PodType, packing_bound
from scheduler.traces import read_openb, read_trace

DEFRAG_ON = POLICIES["defrag on (2% of running pods a step)"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=60.0, help="the re-plan's, seconds")
    ap.add_argument("--any-run", action="store_true", help="bound every run, not one state")
    ap.add_argument(
        "--seeds", type=int, default=1, help="with --any-run: this many seeds from --seed"
    )
    ap.add_argument(
        "--placed-until",
        type=float,
        default=0.0,
        help="with --any-run: only runs that place every pod arriving up to this demand",
    )
    args = ap.parse_args()
    configure(LogLevel("error"), LogFormat("console"))
    inventory = read_openb(OPENB / "openb_node_list_gpu_node.csv", "", pending=False)
    jobs = read_trace("openb", OPENB / "openb_pod_list_default.csv")
    if args.any_run:
        for seed in range(args.seed, args.seed + args.seeds):
            any_run_bound(inventory, jobs, seed, args.time_limit, args.placed_until)
        return
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
    print(largest_share_gaps(final, ledger.capacity_milli))


def largest_share_gaps(state, capacity: int) -> str:
    """Room the most common large share leaves that only smaller shares can use: what stays
    free however the other pods are arranged."""
    shares = [p for p in state.pods if p.gpus == 1 and 500 < p.gpu_milli < 1000]
    size = max({p.gpu_milli for p in shares}, key=lambda m: sum(p.gpu_milli == m for p in shares))
    held = sum(1 for p in shares if p.node is not None and p.gpu_milli == size)
    fillers = sum(p.gpu_milli for p in state.pods if p.gpus == 1 and p.gpu_milli <= 1000 - size)
    waste = max(0, held * (1000 - size) - fillers)
    return (
        f"{held} running shares of {size} milli leave {held * (1000 - size)} milli that only "
        f"shares of {1000 - size} or less fit; all of those that arrived ({fillers} milli) "
        f"would leave {waste / capacity:.2%} of the GPUs free in this state, whatever the moves"
    )


def any_run_bound(inventory, jobs, seed: int, time_limit: float, placed_until: float) -> None:
    """The most any run of this seed can allocate at 130% demand, proven; with placed_until,
    any run that holds every GPU pod arriving up to that demand."""
    capacity = sum(n.gpus * 1000 for n in inventory.nodes)
    pods, held, arrived, stream = [], set(), 0, arrivals(jobs, seed)
    while arrived < 1.3 * capacity:
        job = next(stream)
        if arrived < placed_until * capacity:
            held.update(p.key for p in job.pods if p.gpus)
        arrived += job.milli
        pods.extend(p.model_copy(update={"priority": 0}) for p in job.pods)
    if placed_until:
        held_bound(inventory, jobs, seed, pods, held, capacity, time_limit, placed_until)
        return
    policy = PackingPolicy.model_validate({"solver": {"timeLimitSeconds": time_limit, "seed": 0}})
    out = plan(inventory.model_copy(update={"pods": pods}), policy)
    per_milli = policy.kind_weights.training * policy.priority_base
    assert all(pod_value(p, policy) == p.milli_total * per_milli for p in pods if p.gpus)
    print(
        f"seed {seed}: {len(pods)} pods arrived ({arrived / capacity:.2%} of the GPUs); "
        f"one batch planned {out.summary.gpu_allocation:.2%}; "
        f"no run can pass {out.summary.bound / per_milli / capacity:.2%}",
        flush=True,
    )


def held_bound(inventory, jobs, seed, pods, held, capacity, time_limit, placed_until) -> None:
    """The arc-flow bound for the runs that hold the early GPU pods (`held`, their keys), and
    whether wattpack's run (bench_defrag's, moves on) is one of them: its allocation at that
    level is all they ask."""
    held_milli = sum(p.milli_total for p in pods if p.key in held)
    policy = PackingPolicy.model_validate(
        {"solver": {"timeLimitSeconds": TIME_LIMIT}, "moves": DEFRAG_ON}
    )
    settings = InflationSettings((seed,), placed_until, 0.05)
    report = simulate(inventory, jobs, ["wattpack"], policy, trace="openb", protocol="fgd",
                      inflation_settings=settings)  # fmt: skip
    reached = round(report.curves[0].milli[0][-1] * capacity)
    relaxed = packing_bound(node_types(inventory), pod_types(pods, held), time_limit=time_limit)
    print(
        f"seed {seed}: {len(held)} GPU pods arrive up to {placed_until:.0%} demand "
        f"({held_milli} milli); wattpack (moves on) holds {reached} milli of them there. "
        f"Arc-flow relaxation {'solved' if relaxed.optimal else 'bounded'}: a relaxed packing "
        f"holds {relaxed.best_milli / capacity:.3%}, no run that holds them can pass "
        f"{relaxed.bound_milli / capacity:.3%} ({relaxed.capacity_milli - relaxed.bound_milli} "
        "milli stay free)",
        flush=True,
    )


def node_types(inventory) -> list[NodeType]:
    kinds = Counter((n.gpus, n.cpu_milli, n.memory_mi_b, n.gpu_model) for n in inventory.nodes)
    return [NodeType(g, c, m, count, model) for (g, c, m, model), count in kinds.items()]


def pod_types(pods, held: set[str]) -> list[PodType]:
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])  # shape -> held, arrived
    for p in pods:
        shape = (p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mi_b, tuple(p.gpu_models))
        counts[shape][0] += p.key in held
        counts[shape][1] += 1
    return [
        PodType(g, m, c, mem, h, a, models) for (g, m, c, mem, models), (h, a) in counts.items()
    ]


if __name__ == "__main__":
    main()
