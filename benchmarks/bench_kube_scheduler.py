"""The real kube-scheduler against wattpack on a real API server: the same pods on the same nodes.

    python3 benchmarks/bench_kube_scheduler.py                 # 4 racks x 16 nodes, 300 pods
    python3 benchmarks/bench_kube_scheduler.py --out /tmp/kvw  # also writes results.json

Three runs, each on a fresh loopback control plane (etcd, kube-apiserver, KWOK; the binaries of
tests/e2e/k8sbin/build.sh): kube-scheduler with its default profile, kube-scheduler with a
MostAllocated (bin-packing) profile, and the `wattpack operator` process. Every run gets the same
KWOK nodes (8 H100 each, racks as PowerDomains with a budget of --budget-fraction x nameplate),
wattpack's manifests and config (so that the state can be read the same way), and the same pods
from one seeded generator, created in the same order once the scheduler is up. Only
`schedulerName` differs. The pods ask for whole GPUs only: kube-scheduler cannot express a share
of a GPU.

When the number of bound pods has not changed for --stable seconds (and every pod left unbound
carries a PodScheduled=False condition, i.e. the scheduler has looked at it), the state is read
through `operators.kube.source.read_once` (what `wattpack export` writes) and judged with
wattpack's power model (`scheduler.power`): idle watts of every GPU plus the work of every bound
pod. kube-scheduler knows nothing of power: whatever it places over a budget is counted as the
violation it would be.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(1, str(REPO / "tests"))  # helpers the e2e modules share (waiting, served)

from controlplane import ControlPlane, Proc, binaries  # noqa: E402
from kube import Cluster, bound, scheduled_condition  # noqa: E402

from operators.kube.client import connect  # noqa: E402
from operators.kube.source import read_once  # noqa: E402
from scheduler.power import budgets, domain_power  # noqa: E402

TDP, IDLE, GPUS_PER_NODE = 700, 75, 8
MODELS = [{"name": "H100-SXM", "tdpWatts": TDP, "idleWatts": IDLE, "memoryMiB": 81920}]
POLICY = {"solver": {"timeLimitSeconds": 10, "workers": 2}}
NS = "ml"
PRIORITIES = {"high": 1000, "normal": 100, "low": 10}

# kube-scheduler's bin-packing profile: NodeResourcesFit scored by MostAllocated, GPUs weighted 3
# (the "Resource Bin Packing" example of the Kubernetes documentation).
MOST_ALLOCATED = {
    "profiles": [
        {
            "schedulerName": "default-scheduler",
            "pluginConfig": [
                {
                    "name": "NodeResourcesFit",
                    "args": {
                        "scoringStrategy": {
                            "type": "MostAllocated",
                            "resources": [
                                {"name": "cpu", "weight": 1},
                                {"name": "memory", "weight": 1},
                                {"name": "nvidia.com/gpu", "weight": 3},
                            ],
                        }
                    },
                }
            ],
        }
    ]
}

SCHEDULERS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "kube-default": ("default-scheduler", None),
    "kube-mostallocated": ("default-scheduler", MOST_ALLOCATED),
    "wattpack": ("wattpack", None),
}


def make_pods(n: int, seed: int) -> list[dict[str, Any]]:
    """n whole-GPU pods: training gangs of 4 x 8 GPUs, fine-tuning (1, 2, 4 GPUs), 1-GPU
    inference in three apps, low-priority training (1, 2, 4, 8 GPUs); arrival order shuffled."""
    rng = random.Random(seed)
    gangs = max(1, round(n * 8 / 300))
    fine_tuning = round(n * 0.2)
    low = round(n * 0.16)
    inference = n - 4 * gangs - fine_tuning - low
    if inference < 0:
        raise SystemExit(f"--pods {n}: too few for the mix")
    pods: list[dict[str, Any]] = []
    for g in range(gangs):
        for m in range(4):
            pods.append(
                dict(
                    name=f"train-g{g}-{m}",
                    gpus=8,
                    gang=f"g{g}",
                    gang_size=4,
                    priority_class="normal",
                )
            )
    for i in range(fine_tuning):
        pods.append(
            dict(
                name=f"ft-{i}",
                gpus=rng.choice([1, 2, 4]),
                kind="fine-tuning",
                priority_class="normal",
            )
        )
    for i in range(inference):
        pods.append(
            dict(name=f"serve-{i % 3}-{i // 3}", gpus=1, kind="inference", app=f"serve-{i % 3}")
        )
        pods[-1]["priority_class"] = "high"
    for i in range(low):
        pods.append(dict(name=f"train-{i}", gpus=rng.choice([1, 2, 4, 8]), priority_class="low"))
    rng.shuffle(pods)
    return pods


@dataclass
class Result:
    scheduler: str
    pods_total: int
    pods_present: int  # the others were deleted by preemption
    pods_bound: int
    gpus_total: int
    gpus_allocated: int
    gangs_complete: int
    gangs_partial: int
    gangs_not_started: int
    gpus_in_partial_gangs: int  # held by gang members whose gang cannot start
    rack_watts: dict[str, int]
    rack_budget: dict[str, int]
    facility_watts: int
    create_seconds: float
    settle_seconds: float
    by_kind: dict[str, int] = field(default_factory=dict)  # GPUs allocated per pod kind

    @property
    def allocation(self) -> float:
        return self.gpus_allocated / self.gpus_total

    @property
    def max_rack_pct(self) -> float:
        return max(100 * self.rack_watts[r] / self.rack_budget[r] for r in self.rack_budget)

    @property
    def racks_over(self) -> int:
        return sum(1 for r, b in self.rack_budget.items() if self.rack_watts[r] > b)

    @property
    def watts_over(self) -> int:
        return sum(max(0, self.rack_watts[r] - b) for r, b in self.rack_budget.items())


def run_one(
    name: str, bin_dir: Path, root: Path, args: argparse.Namespace, pods: list[dict[str, Any]]
) -> Result:
    scheduler_name, kube_config = SCHEDULERS[name]
    cp = ControlPlane(bin_dir, root=root / name)
    cp.root.mkdir(parents=True)
    cluster: Cluster | None = None
    try:
        cp.start()
        cp.start_kwok()
        cluster = Cluster(cp)
        cluster.apply_manifests(REPO / "manifests")
        cluster.set_config(POLICY, MODELS)
        budget = int(args.nodes_per_rack * GPUS_PER_NODE * TDP * args.budget_fraction)
        cluster.power_domain("facility", None, None)
        for r in range(args.racks):
            cluster.power_domain(f"rack-{r}", "facility", budget)
            for i in range(args.nodes_per_rack):
                cluster.gpu_node(f"gpu-{r}-{i:02d}", f"rack-{r}", gpus=GPUS_PER_NODE)
        cluster.nodes_ready(args.racks * args.nodes_per_rack)
        cluster.namespace(NS)
        for pc, value in PRIORITIES.items():
            cluster.priority_class(pc, value)

        start_scheduler(name, cluster, kube_config, "--interval=5")

        t0 = time.monotonic()
        for spec in pods:
            cluster.pod(ns=NS, scheduler=scheduler_name, **spec)
        create_seconds = time.monotonic() - t0
        settle_seconds = _settle(cluster, t0, args.stable, args.timeout)
        return _measure(name, cluster, pods, create_seconds, settle_seconds)
    finally:
        if cluster is not None:
            cluster.stop_operators()
        cp.stop()


def start_scheduler(
    name: str, cluster: Cluster, kube_config: dict[str, Any] | None, *operator_args: str
) -> Proc:
    """The `wattpack operator` process (for "wattpack") or the real kube-scheduler, once it is
    ready to schedule."""
    if name == "wattpack":
        proc = cluster.start_operator(*operator_args)
        ready = "caches_synced"
    else:
        proc = cluster.cp.start_kube_scheduler(kube_config)
        ready = "Starting Kubernetes Scheduler"
    wait_for_log(proc, ready, 90)
    return proc


def wait_for_log(proc: Proc, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.log.read_text(errors="replace"):
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name}: no '{text}' after {timeout:.0f} s:\n{proc.tail()}")


def _settle(cluster: Cluster, t0: float, stable: float, timeout: float) -> float:
    """Seconds from the first pod created to the last change in the set of bound pods, once it
    has not changed for `stable` seconds and every unbound pod has been looked at."""
    last: frozenset[str] | None = None
    changed = time.monotonic()
    while True:
        now = time.monotonic()
        pods = cluster.pods(NS)
        state = frozenset(p["metadata"]["name"] for p in bound(pods))
        if state != last:
            last, changed = state, now
        looked_at = all(
            (scheduled_condition(p) or {}).get("status") == "False"
            for p in pods
            if not p["spec"].get("nodeName")
        )
        if state and looked_at and now - changed >= stable:
            return changed - t0
        if now - t0 > timeout:
            print(f"  not settled after {timeout:.0f} s; measuring as is", file=sys.stderr)
            return now - t0
        time.sleep(1)


def _measure(
    name: str,
    cluster: Cluster,
    pods: list[dict[str, Any]],
    create_seconds: float,
    settle_seconds: float,
) -> Result:
    gangs = {p["gang"]: p["gang_size"] for p in pods if "gang" in p}
    raw = cluster.pods(NS)
    on_node = bound(raw)
    members: dict[str, int] = defaultdict(int)
    for p in on_node:
        if gang := (p["metadata"].get("labels") or {}).get("wattpack.io/gang"):
            members[gang] += 1
    complete = sum(1 for g, size in gangs.items() if members[g] == size)
    gang_gpus = {p["gang"]: p["gpus"] for p in pods if "gang" in p}
    held = sum(members[g] * gang_gpus[g] for g, size in gangs.items() if 0 < members[g] < size)
    started = sum(1 for g in gangs if members[g] > 0)

    api = connect(str(cluster.cp.kubeconfig))
    conv, policy = read_once(api)
    snap = conv.snapshot
    running = [(p, p.node) for p in snap.pods if p.node is not None]
    watts = domain_power(snap, running, policy)
    budget = budgets(snap)
    by_kind: dict[str, int] = defaultdict(int)
    for p, _ in running:
        by_kind[p.kind.value] += p.gpus
    return Result(
        scheduler=name,
        pods_total=len(pods),
        pods_present=len(raw),
        pods_bound=len(on_node),
        gpus_total=sum(n.gpus for n in snap.nodes),
        gpus_allocated=sum(p.gpus for p, _ in running),
        gangs_complete=complete,
        gangs_partial=started - complete,
        gangs_not_started=len(gangs) - started,
        gpus_in_partial_gangs=held,
        rack_watts={d: watts[d] for d in budget},
        rack_budget=budget,
        facility_watts=watts["facility"],
        create_seconds=create_seconds,
        settle_seconds=settle_seconds,
        by_kind=dict(by_kind),
    )


def table(results: list[Result], gangs: int) -> str:
    base = next((r for r in results if r.scheduler == "kube-default"), results[0])
    head = (
        "| scheduler | pods bound | GPUs allocated | vs kube-default | gangs complete / partial / "
        "not started | max rack power (% of budget) | racks over budget | W over budget | "
        "facility kW | settled s |"
    )
    lines = [head, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lost = r.pods_total - r.pods_present
        pods = f"{r.pods_bound} / {r.pods_total}" + (f" ({lost} preempted)" if lost else "")
        held = r.gpus_in_partial_gangs
        partial = f"; {held} GPUs held by partial" if held else ""
        lines.append(
            f"| {r.scheduler} | {pods} | {r.gpus_allocated} / {r.gpus_total} "
            f"({100 * r.allocation:.2f}%) | {r.allocation / base.allocation:.4f} | "
            f"{r.gangs_complete} / {r.gangs_partial} / {r.gangs_not_started} "
            f"(of {gangs}{partial}) | "
            f"{r.max_rack_pct:.1f}% | {r.racks_over} of {len(r.rack_budget)} | "
            f"{r.watts_over:,} | {r.facility_watts / 1000:.1f} | {r.settle_seconds:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes-per-rack", type=int, default=16)
    ap.add_argument("--racks", type=int, default=4)
    ap.add_argument("--budget-fraction", type=float, default=0.6)
    ap.add_argument("--pods", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--stable", type=float, default=20.0, help="seconds without a new binding = settled"
    )
    ap.add_argument("--timeout", type=float, default=240.0, help="per run, from the first pod")
    ap.add_argument(
        "--only", action="append", choices=list(SCHEDULERS), help="run only these (repeatable)"
    )
    ap.add_argument("--out", type=Path, help="write results.json here")
    args = ap.parse_args()

    pods = make_pods(args.pods, args.seed)
    gangs = len({p["gang"] for p in pods if "gang" in p})
    demand = sum(p["gpus"] for p in pods)
    gpus = args.racks * args.nodes_per_rack * GPUS_PER_NODE
    budget = int(args.nodes_per_rack * GPUS_PER_NODE * TDP * args.budget_fraction)
    print(
        f"{args.racks} racks x {args.nodes_per_rack} KWOK nodes x {GPUS_PER_NODE} H100 = {gpus} "
        f"GPUs; rack budget {budget:,} W ({args.budget_fraction:.0%} of nameplate); "
        f"{len(pods)} pods (seed {args.seed}) asking for {demand} GPUs ({demand / gpus:.0%})"
    )
    bin_dir = binaries()
    root = Path(tempfile.mkdtemp(prefix="wattpack-kube-bench-"))
    print(f"logs under {root}")
    results = []
    for name in args.only or list(SCHEDULERS):
        t = time.monotonic()
        r = run_one(name, bin_dir, root, args, pods)
        print(
            f"  {name}: {r.pods_bound} pods bound, {r.gpus_allocated} GPUs, "
            f"max rack {r.max_rack_pct:.1f}% of budget, settled {r.settle_seconds:.1f} s "
            f"(pods created in {r.create_seconds:.1f} s; run {time.monotonic() - t:.0f} s)",
            flush=True,
        )
        results.append(r)
    print()
    print(table(results, gangs))
    print()
    for r in results:
        racks = ", ".join(
            f"{d} {100 * r.rack_watts[d] / b:.1f}%" for d, b in sorted(r.rack_budget.items())
        )
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.by_kind.items()))
        print(f"{r.scheduler}: racks {racks}; GPUs by kind: {kinds}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "results": [asdict(r) for r in results],
        }
        (args.out / "results.json").write_text(json.dumps(payload, indent=2))
        print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
