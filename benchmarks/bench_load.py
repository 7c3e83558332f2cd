"""Load: pods bound per second, cycle time and operator memory, wattpack against kube-scheduler.

    python3 benchmarks/bench_load.py --nodes 100 --pods 1000 --burst 250        # minutes
    python3 benchmarks/bench_load.py --nodes 1000 --pods 10000 --burst 1000 --out /tmp/load1k
    python3 benchmarks/bench_load.py --nodes 5000 --pods 50000 --burst 5000 --timeout 14400 \\
        --out /tmp/load5k
    python3 benchmarks/bench_load.py --nodes 1000 --pods 10000 --burst 1000 --only wattpack \\
        --soak-seconds 3600 --soak-burst 200 --burst-interval 60 --out /tmp/soak  # one hour

Each scheduler gets a fresh loopback control plane (etcd, kube-apiserver, KWOK; the binaries of
tests/e2e/k8sbin/build.sh), as in bench_kube_scheduler.py: the real kube-scheduler with its
default profile, and the real `wattpack operator` process. Both get the same KWOK nodes (H100s,
no power budget) and the same pods (whole GPUs, from one seeded generator, every one of which
fits), created in bursts of --burst every --burst-interval seconds once the scheduler is up;
only `schedulerName` differs.

Measured, per scheduler:
- creation: how long each burst took to create (threads on the Python client), apart from
  binding;
- throughput: pods bound / seconds from the first burst's creation to the last binding, as seen
  by a `kubectl get --watch` on bound pods; the same over only the seconds while some created
  pod waited (a scheduler that keeps up with the bursts idles between them, and its end-to-end
  rate is then the arrival rate); and the median and peak of the per-second rate. The
  comparison is kube-scheduler's own scheduler_perf, which reports pods/s as its
  SchedulingThroughput (average and percentiles of the per-second rate);
- latency: from a pod's creation to its binding (p50, p99);
- memory: the scheduler process's resident set (/proc/PID/status VmRSS), sampled;
- for wattpack, the cycles from its JSON log: time in each cycle, split into planning (the
  planner's `chosen` line), API writes (from the cycle's first `bound` line to its end) and the
  rest (snapshot, checks); the time between cycles; and how many created pods a cycle's start did
  not see yet (watch lag).

With --soak-seconds, once the load is bound the wattpack run goes on that long with churn (every
--burst-interval the oldest --soak-burst pods are deleted and as many created), and its memory
over the soak is reported as first / last / max RSS and the least-squares slope (MiB per hour):
it must stay flat. Choose a churn the operator keeps up with (--soak-burst / --burst-interval
below its pods/s), or the backlog, not a leak, is what grows.

Creation goes at about 200 pods/s on an idle 2-core control plane (threads on the Python client
and `kubectl create` of one List alike: the server is the limit) and slower while a scheduler
binds, so a scheduler that binds faster than pods are made shows the creation rate. --backlog
creates every pod first, then starts the scheduler, and times from its start (the scheduler_perf
way of keeping creation out of the figure).

kube-scheduler runs with its default client rate limit (50 QPS, burst 100) unless --kube-qps is
given; scheduler_perf raises it, and so can this script.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_kube_scheduler import MODELS, NS, POLICY, SCHEDULERS, start_scheduler  # noqa: E402
from controlplane import ControlPlane, Proc, binaries, free_port  # noqa: E402
from kube import Cluster, pod_body, scrape  # noqa: E402

RUNS = ("kube-default", "wattpack")
BURST_LABEL = "load.wattpack.io/burst"
CREATE_THREADS = 8


def pod_spec(i: int, seed: int) -> dict[str, Any]:
    """Pod i of the seeded mix: 80% 1-GPU inference (three apps), 15% 2-GPU fine-tuning, 5%
    4-GPU training; 1.3 GPUs on average."""
    r = random.Random(seed * 1_000_003 + i).random()
    if r < 0.80:
        return dict(gpus=1, kind="inference", app=f"serve-{i % 3}")
    if r < 0.95:
        return dict(gpus=2, kind="fine-tuning")
    return dict(gpus=4, kind="training")


def pod_name(i: int) -> str:
    return f"p{i:06d}"


@dataclass
class Run:
    scheduler: str
    pods: int
    bound: int
    create_seconds: list[float]  # per burst
    start: float  # the first creation; with --backlog, the scheduler ready
    last_bind: float
    pods_per_second: float
    busy_seconds: float  # while some created pod was not bound yet
    busy_pods_per_second: float
    per_second_median: float
    per_second_peak: float
    latency_p50: float
    latency_p99: float
    rss_mib: list[tuple[float, float]]  # (seconds since `start`, MiB)
    cycles: dict[str, Any] = field(default_factory=dict)
    soak: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    gpus: dict[str, int] = field(default_factory=dict)  # wattpack: what its bindings hold


class BoundWatch:
    """When each pod was first seen bound: `kubectl get --watch` on pods with a nodeName (a Go
    process decodes the events; this one only reads names). Restarted if the watch ends."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        args = [str(self.cp.bin / "kubectl"), f"--kubeconfig={self.cp.kubeconfig}"]
        args += ["get", "pods", "-n", NS, "--watch", "--field-selector=spec.nodeName!="]
        args += ["-o", "name"]
        while not self._stop.is_set():
            self._proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                name = line.strip().removeprefix("pod/")
                if name and name not in self.seen:
                    self.seen[name] = time.time()
            self._proc.wait()
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)


class RssSampler:
    """The process's resident set every `every` seconds: (time.time(), MiB)."""

    def __init__(self, pid: int, every: float) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples.append((time.time(), int(line.split()[1]) / 1024))
            except OSError:
                return  # the process is gone
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()


class Creator:
    """Creates the pods of a burst on threads; the body is posted and the answer not decoded
    (a typed V1Pod per answer would cost this process more than the scheduler under test)."""

    def __init__(self, cluster: Cluster, scheduler: str, seed: int) -> None:
        self.cluster, self.scheduler, self.seed = cluster, scheduler, seed
        self.created: dict[str, float] = {}
        self.pool = ThreadPoolExecutor(CREATE_THREADS)

    def burst(self, k: int, first: int, size: int) -> float:
        t = time.time()
        list(self.pool.map(lambda i: self._create(k, i), range(first, first + size)))
        return time.time() - t

    def _create(self, k: int, i: int) -> None:
        name = pod_name(i)
        body = pod_body(
            name, scheduler=self.scheduler, labels={BURST_LABEL: str(k)}, **pod_spec(i, self.seed)
        )
        _drain(self.cluster.core.create_namespaced_pod(NS, body, _preload_content=False))
        self.created[name] = time.time()

    def delete(self, names: list[str]) -> None:
        def one(name: str) -> None:
            _drain(
                self.cluster.core.delete_namespaced_pod(
                    name, NS, grace_period_seconds=0, _preload_content=False
                )
            )

        list(self.pool.map(one, names))


def _drain(resp: Any) -> None:
    """Read the answer before the connection goes back to the pool: an unread body would be
    the next request's status line."""
    resp.read()
    resp.release_conn()


def run_one(name: str, bin_dir: Path, root: Path, args: argparse.Namespace) -> Run:
    scheduler_name, kube_config = SCHEDULERS[name]
    cp = ControlPlane(bin_dir, root=root / name)
    cp.root.mkdir(parents=True)
    cluster: Cluster | None = None
    watch: BoundWatch | None = None
    rss: RssSampler | None = None
    try:
        cp.start()
        cp.start_kwok(lease_seconds=args.kwok_lease_seconds)
        cluster = Cluster(cp)
        cluster.apply_manifests(REPO / "manifests")
        cluster.set_config(POLICY, MODELS)
        cluster.power_domain("facility", None, None)
        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(
                pool.map(
                    lambda i: cluster.gpu_node(f"gpu-{i:05d}", "facility", gpus=args.gpus_per_node),
                    range(args.nodes),
                )
            )
        cluster.nodes_ready(args.nodes, timeout=max(60.0, args.nodes / 10))
        cluster.namespace(NS)

        port = free_port()
        if args.kube_qps and name != "wattpack":
            kube_config = {
                **(kube_config or {}),
                "clientConnection": {
                    "kubeconfig": str(cp.kubeconfig),
                    "qps": args.kube_qps,
                    "burst": 2 * args.kube_qps,
                },
            }
        watch = BoundWatch(cp)
        creator = Creator(cluster, scheduler_name, args.seed)
        bursts = _bursts(args.pods, args.burst)
        create_seconds: list[float] = []
        if args.backlog:
            _create(creator, watch, bursts, 0.0, create_seconds)
        proc = start_scheduler(name, cluster, kube_config, f"--metrics-port={port}")
        ready = time.time()
        rss = RssSampler(_pid(proc), args.sample_seconds)
        if not args.backlog:
            _create(creator, watch, bursts, args.burst_interval, create_seconds)
        start = ready if args.backlog else min(creator.created.values())
        _wait_bound(watch, proc, args.pods, args.stable, start + args.timeout)
        run = _throughput(name, creator.created, dict(watch.seen), create_seconds, args.pods, start)

        if name == "wattpack":
            run.gpus = gpus_held(cluster.pods(NS))
            _wait_cycle_logged(proc.log, run.last_bind, 60)
            run.metrics = {k: v for k, v in scrape(port).items() if "_seconds_" in k}
            run.cycles = cycles(proc.log, creator.created, dict(watch.seen), run.metrics, start)
            if args.soak_seconds > 0:
                run.soak = _soak(creator, watch, rss, bursts, args)
        rss.stop()
        run.rss_mib = [(round(t - start, 1), round(m, 1)) for t, m in rss.samples]
        return run
    finally:
        if rss is not None:
            rss.stop()
        if watch is not None:
            watch.stop()
        if cluster is not None:
            cluster.stop_operators()
        cp.stop()


def gpus_held(pods: list[dict[str, Any]]) -> dict[str, int]:
    """What wattpack's bindings hold (its GPU annotation): bound pods, and those whose
    annotation does not name as many GPUs as they ask for (missing), GPUs held by two (twice)."""
    holders: dict[tuple[str, str], int] = {}
    out = {"bound": 0, "missing": 0, "twice": 0}
    for p in pods:
        node = p["spec"].get("nodeName")
        if not node:
            continue
        out["bound"] += 1
        text = (p["metadata"].get("annotations") or {}).get("wattpack.io/gpu-indices", "")
        gpus = [g for g in text.split(",") if g]
        limits = p["spec"]["containers"][0]["resources"].get("limits") or {}
        if len(gpus) != int(limits.get("nvidia.com/gpu", 0)):
            out["missing"] += 1
        for g in gpus:
            holders[(node, g)] = holders.get((node, g), 0) + 1
    out["twice"] = sum(1 for n in holders.values() if n > 1)
    return out


def _create(
    creator: Creator,
    watch: BoundWatch,
    bursts: list[tuple[int, int]],
    interval: float,
    create_seconds: list[float],
) -> None:
    t0 = time.time()
    for k, (first, size) in enumerate(bursts):
        _sleep_until(t0 + k * interval)
        create_seconds.append(creator.burst(k, first, size))
        print(
            f"    burst {k}: {size} pods created in {create_seconds[-1]:.1f} s; "
            f"{len(watch.seen)} bound so far",
            flush=True,
        )


def _pid(proc: Proc) -> int:
    assert proc.popen is not None
    return proc.popen.pid


def _bursts(pods: int, burst: int) -> list[tuple[int, int]]:
    return [(first, min(burst, pods - first)) for first in range(0, pods, burst)]


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def _wait_bound(watch: BoundWatch, proc: Proc, pods: int, stable: float, deadline: float) -> None:
    """Until every pod is bound, or no pod has been bound for `stable` seconds, or the deadline."""
    last, changed = -1, time.time()
    while len(watch.seen) < pods:
        now = time.time()
        if len(watch.seen) != last:
            last, changed = len(watch.seen), now
        if now - changed > stable or now > deadline or not proc.alive():
            print(f"    stopped waiting: {last} of {pods} bound", file=sys.stderr)
            return
        time.sleep(0.5)


def _throughput(
    name: str,
    created: dict[str, float],
    seen: dict[str, float],
    create_seconds: list[float],
    pods: int,
    first: float,
) -> Run:
    """The rates from `first` (the first creation; with a backlog, the scheduler ready) to the
    last binding; a pod made before `first` counts as made then."""
    created = {n: max(t, first) for n, t in created.items()}
    bound = {n: t for n, t in seen.items() if n in created}
    last = max(bound.values(), default=first)
    per_second: dict[int, int] = {}
    for t in bound.values():
        per_second[int(t - first)] = per_second.get(int(t - first), 0) + 1
    rates = [per_second.get(s, 0) for s in range(int(last - first) + 1)]
    latencies = sorted(bound[n] - created[n] for n in bound)
    busy = _busy_seconds(created, bound)
    return Run(
        scheduler=name,
        pods=pods,
        bound=len(bound),
        create_seconds=[round(s, 2) for s in create_seconds],
        start=first,
        last_bind=last,
        pods_per_second=len(bound) / max(last - first, 1e-9),
        busy_seconds=busy,
        busy_pods_per_second=len(bound) / max(busy, 1e-9),
        per_second_median=statistics.median(rates) if rates else 0.0,
        per_second_peak=max(rates, default=0),
        latency_p50=_quantile(latencies, 0.5),
        latency_p99=_quantile(latencies, 0.99),
        rss_mib=[],
    )


def _busy_seconds(created: dict[str, float], bound: dict[str, float]) -> float:
    """Seconds during which some created pod waited: a scheduler that keeps up with the bursts
    is idle between them, and its rate from first creation to last binding is the arrival rate,
    not what it can do."""
    steps = sorted([(t, 1) for t in created.values()] + [(t, -1) for t in bound.values()])
    busy, waiting, since = 0.0, 0, 0.0
    for t, d in steps:
        if waiting > 0:
            busy += t - since
        waiting, since = waiting + d, t
    return busy


def _quantile(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def _soak(
    creator: Creator,
    watch: BoundWatch,
    rss: RssSampler,
    bursts: list[tuple[int, int]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Churn at a constant population: every interval the oldest --soak-burst pods go and as
    many new ones come. The operator's RSS over this window must stay flat."""
    start = time.time()
    size = args.soak_burst or args.burst
    live = list(creator.created)  # oldest first
    k, first = len(bursts), args.pods
    created = 0
    while time.time() - start < args.soak_seconds:
        _sleep_until(start + (k - len(bursts)) * args.burst_interval)
        creator.delete(live[:size])
        creator.burst(k, first, size)
        live = live[size:] + [pod_name(i) for i in range(first, first + size)]
        k, first, created = k + 1, first + size, created + size
    end = time.time()
    samples = [(t, m) for t, m in rss.samples if start <= t <= end]
    bound = sum(1 for n, t in watch.seen.items() if t >= start and n in creator.created)
    return {
        "seconds": round(end - start, 1),
        "pods_created": created,
        "pods_bound": bound,
        "rss_first_mib": round(samples[0][1], 1) if samples else None,
        "rss_last_mib": round(samples[-1][1], 1) if samples else None,
        "rss_max_mib": round(max(m for _, m in samples), 1) if samples else None,
        "rss_slope_mib_per_hour": round(_slope(samples) * 3600, 2),
    }


def _slope(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return 0.0
    t0 = samples[0][0]
    xs = [t - t0 for t, _ in samples]
    ys = [m for _, m in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def _log_events(log: Path) -> list[tuple[float, dict[str, Any]]]:
    """The operator's cycle_done and bound log lines: (time.time() of the line, the line)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and ('"cycle_done"' in line or '"bound"' in line):
            e = json.loads(line)
            if "timestamp" in e:
                t = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
                out.append((t, e))
    return out


def _wait_cycle_logged(log: Path, last_bind: float, timeout: float) -> None:
    """Until the cycle that made the last binding has logged its end."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(t >= last_bind and e["event"] == "cycle_done" for t, e in _log_events(log)):
            return
        time.sleep(0.5)


def cycles(
    log: Path,
    created: dict[str, float],
    seen: dict[str, float],
    metrics: dict[str, float],
    first: float,
) -> dict[str, Any]:
    """Where the operator's time went from `first` to the last binding, from its JSON log
    (cycles, bindings) and its /metrics (planning: the planner's own time, summed over every
    cycle so far)."""
    done, binds = [], []
    for t, e in _log_events(log):
        if e["event"] == "cycle_done":
            done.append((t, e))
        elif e["event"] == "bound":
            binds.append(t)
    binds.sort()
    created_times = sorted(created.values())
    bound_times = sorted(seen[n] for n in seen if n in created)
    rows = []
    for end, e in done:
        start = end - float(e["seconds"])
        at = bisect.bisect_left(binds, start)
        first_bind = binds[at] if at < len(binds) and binds[at] <= end else None
        writes = end - first_bind if first_bind is not None and e["bound"] else 0.0
        # Created before the cycle began and not bound yet, but not pending in its snapshot.
        truly_pending = _count_le(created_times, start) - _count_le(bound_times, start)
        rows.append(
            dict(
                start=start,
                seconds=float(e["seconds"]),
                writes=writes,
                bound=int(e["bound"]),
                pending=int(e["pending"]),
                unseen=max(0, truly_pending - int(e["pending"])),
            )
        )
    last = max(bound_times, default=first)
    active = [r for r in rows if r["start"] + r["seconds"] >= first and r["start"] <= last]
    busy = [r for r in active if r["bound"]]
    total = sum(r["seconds"] for r in active)
    writes = sum(r["writes"] for r in active)
    # Cycles before the load plan nothing: near all of the planner's time is the load's.
    plan = metrics.get("wattpack_solve_seconds_sum", 0.0)
    return {
        # Within the load (from `first` to the last binding):
        "cycles": len(active),
        "cycles_binding": len(busy),
        "cycle_seconds_p50": _quantile(sorted(r["seconds"] for r in active), 0.5),
        "cycle_seconds_max": max((r["seconds"] for r in active), default=0.0),
        "load_seconds": round(last - first, 2),
        "in_cycles_seconds": round(total, 2),
        "plan_seconds": round(plan, 2),
        "write_seconds": round(writes, 2),
        "other_seconds": round(total - plan - writes, 2),
        "write_ms_per_pod": round(
            1000 * sum(r["writes"] for r in busy) / max(1, sum(r["bound"] for r in busy)), 1
        ),
        "unseen_at_start_mean": round(statistics.fmean([r["unseen"] for r in active]), 1)
        if active
        else 0.0,
        "unseen_at_start_max": max((r["unseen"] for r in active), default=0),
        "rows": rows,
    }


def _count_le(sorted_times: list[float], t: float) -> int:
    return bisect.bisect_right(sorted_times, t)


def report(runs: list[Run]) -> str:
    base = next((r for r in runs if r.scheduler == "kube-default"), None)
    head = (
        "| scheduler | pods bound | pods/s (first creation to last binding) | vs kube-default | "
        "pods/s while pods waited (s) | vs kube-default | per-second rate median / peak | "
        "latency p50 / p99 s | creation s per burst (mean) | RSS max MiB |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        ratio = f"{r.pods_per_second / base.pods_per_second:.2f}" if base else "-"
        busy = f"{r.busy_pods_per_second / base.busy_pods_per_second:.2f}" if base else "-"
        lines.append(
            f"| {r.scheduler} | {r.bound} / {r.pods} | {r.pods_per_second:.1f} | {ratio} | "
            f"{r.busy_pods_per_second:.1f} ({r.busy_seconds:.0f}) | {busy} | "
            f"{r.per_second_median:.0f} / {r.per_second_peak:.0f} | "
            f"{r.latency_p50:.1f} / {r.latency_p99:.1f} | "
            f"{statistics.fmean(r.create_seconds):.1f} | "
            f"{max((m for _, m in r.rss_mib), default=0):.0f} |"
        )
    for r in runs:
        c = r.cycles
        if c:
            lines.append(
                f"\n{r.scheduler} cycles: {c['cycles']} ({c['cycles_binding']} binding), "
                f"p50 {c['cycle_seconds_p50']:.2f} s, max {c['cycle_seconds_max']:.2f} s. "
                f"Of the {c['load_seconds']:.1f} s of load, {c['in_cycles_seconds']:.1f} s in "
                f"cycles: planning {c['plan_seconds']:.1f} s, API writes "
                f"{c['write_seconds']:.1f} s ({c['write_ms_per_pod']:.1f} ms a bound pod), the "
                "rest (snapshot, checks) "
                f"{c['other_seconds']:.1f} s; created pods a cycle did not see at its start: "
                f"mean {c['unseen_at_start_mean']}, max {c['unseen_at_start_max']}"
            )
        if r.gpus:
            g = r.gpus
            lines.append(
                f"\n{r.scheduler} GPUs: {g['bound']} bound pods; GPUs held by two pods: "
                f"{g['twice']}; bound pods whose annotation does not name their GPUs: "
                f"{g['missing']}"
            )
        if r.soak:
            s = r.soak
            lines.append(
                f"\n{r.scheduler} soak {s['seconds']:.0f} s ({s['pods_created']} pods created, "
                f"{s['pods_bound']} bound): RSS first {s['rss_first_mib']} MiB, last "
                f"{s['rss_last_mib']} MiB, max {s['rss_max_mib']} MiB, slope "
                f"{s['rss_slope_mib_per_hour']} MiB/h"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--gpus-per-node", type=int, default=16)
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--burst", type=int, default=250, help="pods per burst")
    ap.add_argument("--burst-interval", type=float, default=10.0, help="seconds between bursts")
    ap.add_argument(
        "--backlog",
        action="store_true",
        help="create every pod before the scheduler starts; time from its start",
    )
    ap.add_argument("--soak-seconds", type=float, default=0.0, help="wattpack: churn this long")
    ap.add_argument(
        "--soak-burst", type=int, help="pods replaced each interval in the soak (default --burst)"
    )
    ap.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling period")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--kwok-lease-seconds",
        type=int,
        default=300,
        help="KWOK node lease (renewed every quarter of it: at 5,000 nodes, 40 s is 500 writes/s)",
    )
    ap.add_argument("--kube-qps", type=int, help="kube-scheduler's client QPS (default: its own)")
    ap.add_argument("--stable", type=float, default=60.0, help="give up after no binding this long")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per run, from the first pod")
    ap.add_argument("--only", action="append", choices=RUNS, help="run only these (repeatable)")
    ap.add_argument("--out", type=Path, help="write results.json here")
    args = ap.parse_args()

    demand = sum(pod_spec(i, args.seed)["gpus"] for i in range(args.pods))
    gpus = args.nodes * args.gpus_per_node
    if demand > gpus:
        raise SystemExit(f"{args.pods} pods ask for {demand} GPUs; {gpus} GPUs: not all can fit")
    print(
        f"{args.nodes} KWOK nodes x {args.gpus_per_node} H100 = {gpus} GPUs, no budget; "
        f"{args.pods} pods asking for {demand} GPUs ({demand / gpus:.0%}) in bursts of "
        f"{args.burst} every {args.burst_interval:g} s; kube-scheduler QPS "
        f"{args.kube_qps or 'default (50)'}"
    )
    bin_dir = binaries()
    root = Path(tempfile.mkdtemp(prefix="wattpack-load-bench-"))
    print(f"logs under {root}")
    runs = []
    for name in args.only or list(RUNS):
        print(f"  {name}:", flush=True)
        r = run_one(name, bin_dir, root, args)
        print(f"  {name}: {r.bound} bound, {r.pods_per_second:.1f} pods/s", flush=True)
        runs.append(r)
    print()
    print(report(runs))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "runs": [asdict(r) for r in runs],
        }
        (args.out / "results.json").write_text(json.dumps(payload, indent=2))
        print(f"\nwrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
