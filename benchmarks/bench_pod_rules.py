"""What following kube-scheduler's inter-pod rules costs: the scattered live state
(benchmarks/live_states.py) with the app replicas given real rules, planned by wattpack, against
the same state without the rules, planned by wattpack in the same run.

    python3 benchmarks/bench_pod_rules.py                  # 512, 2,048 and 4,096 nodes
    python3 benchmarks/bench_pod_rules.py --sizes 1024 --time-limit 20

The rules: every node gets kubernetes.io/hostname and a zone (its rack); every pod of an app
gets the label app=<app>; of the pending apps, half keep their replicas one per node
(required anti-affinity on the hostname), half spread them over zones (DoNotSchedule, maxSkew
1). Per size: wall time, GPU allocation, placed pods, the independent checker's verdict (which
reads the rules itself) and the ratios with rules / without."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from live_states import scattered_state

from scheduler.cli.logs import LogFormat, LogLevel, configure
from scheduler.model import ClusterSnapshot, PackingPolicy
from scheduler.model.pod_rules import LabelSelector, PodAffinityTerm, SpreadConstraint
from scheduler.planner.cycle import plan
from scheduler.verify.feasibility import check_plan

HOST = "kubernetes.io/hostname"


def with_rules(snapshot: ClusterSnapshot) -> ClusterSnapshot:
    nodes = [
        n.model_copy(update={"labels": {HOST: n.name, "zone": n.power_domain}})
        for n in snapshot.nodes
    ]
    pods = []
    for p in snapshot.pods:
        if p.app is None:
            pods.append(p)
            continue
        update: dict = {"labels": {"app": p.app}, "app": None, "max_per_node": None}
        selector = LabelSelector(match_labels={"app": p.app})
        if p.node is None and int(p.app.rsplit("-", 1)[1]) % 2:
            update["pod_anti_affinity"] = [
                PodAffinityTerm(label_selector=selector, topology_key=HOST)
            ]
        elif p.node is None:
            update["topology_spread"] = [
                SpreadConstraint(max_skew=1, topology_key="zone", label_selector=selector)
            ]
        pods.append(p.model_copy(update=update))
    return snapshot.model_copy(update={"nodes": nodes, "pods": pods})


def without_rules(snapshot: ClusterSnapshot) -> ClusterSnapshot:
    pods = [
        p.model_copy(update={"pod_anti_affinity": [], "topology_spread": []}) for p in snapshot.pods
    ]
    return snapshot.model_copy(update={"pods": pods})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 4096])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=10.0)
    args = ap.parse_args()
    configure(LogLevel.WARNING, LogFormat.CONSOLE)
    policy = PackingPolicy.model_validate({"solver": {"timeLimitSeconds": args.time_limit}})
    for n in args.sizes:
        ruled = with_rules(scattered_state(n, args.seed))
        ruled = ClusterSnapshot.model_validate(ruled.model_dump(by_alias=True))
        bare = without_rules(ruled)
        rows = {}
        for name, snap in (("no rules", bare), ("rules", ruled)):
            start = time.perf_counter()
            result = plan(snap, policy)
            seconds = time.perf_counter() - start
            problems = check_plan(ruled, policy, result)
            rows[name] = (seconds, result)
            s = result.summary
            print(
                f"{n:>6} nodes  {name:<8} {seconds:6.2f}s  alloc {s.gpu_allocation:7.3%}  "
                f"placed {s.placed_pods:>6}/{s.pending_pods}  "
                f"checker (with the rules) {'ok' if not problems else f'{len(problems)} broken'}"
            )
        (t0, p0), (t1, p1) = rows["no rules"], rows["rules"]
        ruled_pods = sum(1 for p in ruled.pods if p.node is None and p.neighbour_rules)
        print(
            f"{n:>6} nodes  ratios rules/no rules: allocation "
            f"{p1.summary.gpu_allocation / p0.summary.gpu_allocation:.4f}  time {t1 / t0:.2f}  "
            f"({ruled_pods} pending pods with rules)"
        )


if __name__ == "__main__":
    main()
