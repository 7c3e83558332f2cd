"""Cluster states an operator really sees: snapshots of trace replays at seeded random times.

    python3 benchmarks/replay_states.py --seed 1 --count 3 [-o DIR]

`replay_snapshots(seed, count)` replays two traces (below) with the simulator and snapshots the
cluster at `count` random simulated times per replay, drawn from random.Random(seed): every
running pod where the replay put it, every queued pod pending with its waitingSeconds, the node
health of that moment, plus the jobs arriving in the ARRIVALS_WINDOW seconds after T, pending
(what the operator's next cycle sees). A time when nothing is pending says nothing to a
planner, so it is skipped: more times are drawn than kept (CANDIDATES per snapshot wanted), and
the first `count` in draw order with pods pending are kept. The same seed gives the same snapshots.

- **openb** (named `replay-openb-t<T>`): the power-openb case of bench_simulate.py, replayed by
  `best-fit` (the one-pod-at-a-time baseline: wattpack, cycling every 5 s over a queue of
  thousands, would take many minutes): openb default on every 8th GPU node (152 nodes, 770
  GPUs), facility budget 0.8 x nameplate, arrivals 400x denser, times drawn over the whole
  replay (work waits only in its last sixth, when the trace is densest).
- **itp** (named `replay-itp-t<T>`): Microsoft ITP cluster02 on 32 generated 8-GPU H100 nodes
  (`wattpack make-cluster --nodes 32 --facility-budget 0.8`), arrivals 3x denser (power-itp-x3),
  replayed by `wattpack` with its default policy; times drawn over the first WINDOW_ITP
  simulated seconds (about three weeks of the trace), so the replay stops there.

Both inject GPU failures at FAILURES_PER_1000_GPU_DAYS (seeded by `seed`; a failed GPU stays
failed and its work is queued again), so some snapshots hold failed GPUs. T is the simulated
time, in seconds after arrival scaling. Takes 40-55 s on 2 cores (`--seed 1`), half per replay.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script from a checkout: make the repository's `scheduler` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from instances import print_and_write

from scheduler.baselines.online import NodeArrays
from scheduler.model import ClusterSnapshot, HealthState, PackingPolicy, SnapshotMeta
from scheduler.simulate import ReplaySettings, every_kth_node, make_cluster, replay, with_budgets
from scheduler.simulate.failures import random_failures
from scheduler.simulate.run import simulation_policy
from scheduler.traces import read_openb, read_trace
from scheduler.traces.workload import TraceJob

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
OPENB = TRACES / "alibaba-gpu-v2023-openb"
ITP = TRACES / "microsoft-itp-elasticflow"

TIME_LIMIT = 1.0  # wattpack's solver budget per cycle, CP-SAT deterministic seconds
CANDIDATES = 40  # times drawn per snapshot wanted; those with nothing pending are skipped
FAILURES_PER_1000_GPU_DAYS = 2.0
WINDOW_ITP = 600_000.0  # simulated seconds of the ITP replay the times are drawn from
# A replay's scheduler has acted on everything that arrived by T, so what waits then is what did
# not fit. An operator's cycle also sees what arrived since its last one: the snapshot holds,
# besides, the jobs arriving in this many simulated seconds after T, pending (as after a
# debounce, a leader failover or a slow cycle).
ARRIVALS_WINDOW = 600.0


def _openb() -> tuple[ClusterSnapshot, list[TraceJob]]:
    nodes = read_openb(OPENB / "openb_node_list_gpu_node.csv", "", pending=False)
    inventory = with_budgets(every_kth_node(nodes, 8), facility=0.8)
    return inventory, read_trace("openb", OPENB / "openb_pod_list_default.csv")


def _itp() -> tuple[ClusterSnapshot, list[TraceJob]]:
    inventory = with_budgets(make_cluster(nodes=32, name="itp-cluster02"), facility=0.8)
    return inventory, read_trace("itp", ITP / "cluster02.csv")


# name -> (inventory and jobs, scheduler, arrival scale, wattpack's cycle seconds, window or None)
CASES = {
    "openb": (_openb, "best-fit", 400.0, 5.0, None),
    "itp": (_itp, "wattpack", 3.0, 10.0, WINDOW_ITP),
}


def pending_snapshots(
    inventory: ClusterSnapshot,
    jobs: Sequence[TraceJob],
    scheduler: str,
    settings: ReplaySettings,
    times: Sequence[int],
    count: int,
    policy: PackingPolicy | None = None,
) -> dict[int, ClusterSnapshot]:
    """Replay up to the latest of `times` and snapshot it at each; of those with pods pending,
    the first `count` in the order of `times`, by time."""
    rank = {t: i for i, t in reversed(list(enumerate(times)))}
    kept: dict[int, ClusterSnapshot] = {}

    def keep(_: str, at: float, snap: ClusterSnapshot) -> None:
        if any(p.node is None for p in snap.pods):
            kept[int(at)] = snap
            if len(kept) > count:  # hold only the `count` drawn first
                del kept[max(kept, key=rank.__getitem__)]

    policy = simulation_policy(policy or _policy())
    settings = ReplaySettings(
        settings.cycle_seconds,
        settings.arrival_scale,
        max(times),
        settings.failures,
        settings.resume_evicted,
        tuple(float(t) for t in rank),
        keep,
    )
    replay(inventory, jobs, scheduler, policy, settings)
    return dict(sorted(kept.items()))


def _policy() -> PackingPolicy:
    return PackingPolicy.model_validate({"solver": {"timeLimitSeconds": TIME_LIMIT}})


def replay_snapshots(seed: int, count: int = 3) -> list[tuple[str, ClusterSnapshot]]:
    """`count` snapshots with pods pending from each replay (openb, then ITP), each by time;
    fewer only if a replay has too few such times among those drawn (not so at seed 1)."""
    out: list[tuple[str, ClusterSnapshot]] = []
    for case, (load, scheduler, scale, cycle, window) in CASES.items():
        rng = random.Random(f"{seed}:{case}")  # one stream per replay, whatever the others
        inventory, jobs = load()
        first = min(j.submit for j in jobs) / scale
        last = max(j.submit for j in jobs) / scale
        if window is not None:
            last = min(last, first + window)
        times = [rng.randint(int(first) + 1, int(last)) for _ in range(CANDIDATES * count)]
        fail = random_failures(inventory, FAILURES_PER_1000_GPU_DAYS, first, last, seed)
        settings = ReplaySettings(cycle, scale, failures=fail)
        kept = pending_snapshots(inventory, jobs, scheduler, settings, times, count)
        empty = NodeArrays(inventory.model_copy(update={"pods": []}), simulation_policy(_policy()))
        for t, snap in kept.items():
            name = f"replay-{case}-t{t}"
            arrivals = [
                p.model_copy(update={"waiting_seconds": t + ARRIVALS_WINDOW - j.submit / scale})
                for j in jobs
                if t < j.submit / scale <= t + ARRIVALS_WINDOW
                and all(empty.feasible(p).any() for p in j.pods)
                for p in j.pods
            ]
            update = {"metadata": SnapshotMeta(name=name), "pods": [*snap.pods, *arrivals]}
            out.append(
                (name, ClusterSnapshot.model_validate(snap.model_copy(update=update).model_dump()))
            )
    return out


def describe(snap: ClusterSnapshot) -> dict:
    """Headline numbers of a snapshot: nodes, GPUs, running and pending pods."""
    pending = [p for p in snap.pods if p.node is None]
    return {
        "nodes": len(snap.nodes),
        "gpus": sum(n.gpus for n in snap.nodes),
        "failed_gpus": sum(h.state == HealthState.FAILED for n in snap.nodes for h in n.gpu_health),
        "running_pods": len(snap.pods) - len(pending),
        "pending_pods": len(pending),
        "pending_gangs": len({p.gang_key for p in pending if p.gang_key}),
        "pending_gpus": sum(p.milli_total for p in pending) / 1000,
        "max_waiting_seconds": max((p.waiting_seconds or 0 for p in pending), default=0),
    }


def main(argv: list[str] | None = None) -> None:
    from scheduler.cli.logs import LogFormat, LogLevel, configure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=3, help="snapshots per replay")
    ap.add_argument("-o", "--output", metavar="DIR", help="write <name>.json files here")
    args = ap.parse_args(argv)
    configure(LogLevel.WARNING, LogFormat.CONSOLE)
    start = time.perf_counter()
    snaps = replay_snapshots(args.seed, args.count)
    print(f"{len(snaps)} snapshots in {time.perf_counter() - start:.1f}s")
    print_and_write(snaps, describe, args.output)


if __name__ == "__main__":
    main()
