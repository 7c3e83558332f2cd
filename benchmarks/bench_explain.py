"""Wall time of the best-fit baseline on a live 4,096-node state, and of its explain step alone
(why each pod left pending stays pending: scheduler/fit/reasons.py).

    python3 benchmarks/bench_explain.py --nodes 4096 --pending 10000 --seed 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_states import scattered_state

from scheduler.baselines import best_fit
from scheduler.fit.cycle import start_cycle
from scheduler.fit.greedy import greedy_fill, units_of
from scheduler.fit.reasons import Explainer
from scheduler.fit.state import Placement
from scheduler.model import PackingPolicy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=4096)
    ap.add_argument("--pending", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    snap = scattered_state(args.nodes, args.seed, pending=args.pending)
    policy = PackingPolicy()

    start = time.perf_counter()
    plan = best_fit(snap, policy)
    total = time.perf_counter() - start

    # The explain step alone, on the state best_fit leaves (gang notes aside).
    cycle = start_cycle(snap, policy)
    cycle.state.weigh_stranding = False
    placed: dict[str, Placement] = {}
    greedy_fill(cycle.state, units_of(cycle.pending), placed)
    left = [p for p in cycle.pending if p.key not in placed]
    start = time.perf_counter()
    explainer = Explainer(cycle.state)
    for p in left:
        explainer.explain(p)
    explain = time.perf_counter() - start

    shapes = len(explainer._by_shape)
    print(
        f"{args.nodes} nodes, {len(cycle.state.classes)} classes, {len(left)} unplaced "
        f"({shapes} shapes): best_fit {total:.2f} s, explain {explain:.2f} s, "
        f"{len(plan.unplaced)} unplaced in the plan"
    )


if __name__ == "__main__":
    main()
