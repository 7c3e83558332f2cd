"""Seeded cluster states as a live cluster has them, not as a fresh one: running work scattered
over the nodes after hours of churn, a few degraded GPUs and cordoned nodes, tight budgets at
every level, and a mixed queue of every kind waiting. Also the same state after a facility power
event that cut two racks' budgets below what already runs in them.

    python3 benchmarks/live_states.py --nodes 1024 --seed 1 -o /tmp/live.json
    python3 benchmarks/live_states.py --nodes 1024 --seed 1 --over-budget 2 -o /tmp/cut.json

Distribution (benchmarks/README.md, "Live states"): 8-GPU H100/H200/A100 nodes in racks of 32
(homogeneous racks, models in blocks), rack budgets at 80% of nameplate, rows of 8 racks at 76%,
the facility at 72%; running pods of 1, 2, 4 and 8 GPUs and GPU shares on random GPUs of random
nodes until `fill` of the GPUs are busy (each running pod within every budget as it started);
2% of nodes with one degraded GPU, 0.5% cordoned; 2.5 pending pods per node by default.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from instances import MODELS, _cluster, _domains, _Gen, _pick, describe, write_snapshot

from scheduler.model import (
    ClusterSnapshot,
    Gang,
    GpuHealth,
    GpuModel,
    HealthState,
    Node,
    PackingPolicy,
    Pod,
    PodKind,
    PowerDomain,
    SnapshotMeta,
)

RUNNING_SIZE = {1: 0.35, 2: 0.25, 4: 0.20, 8: 0.10, 0: 0.10}  # 0 = GPU shares of one GPU
SHARE_MILLI = {250: 0.4, 500: 0.35, 750: 0.25}
PER_GPU = {  # (cpuMilli, memoryMiB) per GPU, by kind
    PodKind.TRAINING: [(24000, 196608), (16000, 131072), (12000, 98304)],
    PodKind.FINE_TUNING: [(16000, 131072), (12000, 98304), (8000, 65536)],
    PodKind.INFERENCE: [(8000, 65536), (4000, 32768)],
}
RUNNING_PRIORITY = {0: 0.45, 100: 0.35, 1000: 0.20}
PENDING_PRIORITY = {0: 0.35, 100: 0.40, 1000: 0.25}
# Pending units by count: (kind, what). Gangs are of whole 8-GPU nodes.
PENDING_MIX = {"gang": 0.06, "training": 0.20, "fine-tuning": 0.24, "share": 0.20, "app": 0.30}
GANG_NODES = {2: 0.4, 4: 0.35, 8: 0.25}
SINGLE_GPUS = {1: 0.35, 2: 0.25, 4: 0.25, 8: 0.15}
PINNED = 0.15  # pods pinned to one or two models


class _Power:
    """Draw against every budget as pods start, by the default policy's power model."""

    def __init__(self, nodes: list[Node], domains: list[PowerDomain]) -> None:
        self.policy = PackingPolicy()
        parent = {d.name: d.parent for d in domains}
        self.budget = {d.name: d.budget_watts for d in domains if d.budget_watts is not None}
        self.draw = dict.fromkeys(parent, 0)
        self.chain: dict[str, list[str]] = {}
        for leaf in parent:
            chain, cur = [], leaf
            while cur is not None:
                chain.append(cur)
                cur = parent[cur]
            self.chain[leaf] = chain
        for n in nodes:
            self.add(n, n.gpus * MODELS[n.gpu_model][1])

    def watts(self, pod: Pod, node: Node) -> int:
        tdp, idle, _ = MODELS[node.gpu_model]
        factor = self.policy.power_factors.model_dump()[pod.kind.value.replace("-", "_")]
        share = pod.gpu_milli / 1000 if pod.fractional else pod.gpus
        return math.ceil((tdp - idle) * factor * share)

    def fits(self, node: Node, watts: int) -> bool:
        return all(
            self.draw[d] + watts <= self.budget[d]
            for d in self.chain[node.power_domain]
            if d in self.budget
        )

    def add(self, node: Node, watts: int) -> None:
        for d in self.chain[node.power_domain]:
            self.draw[d] += watts


def _kind(rng: random.Random) -> PodKind:
    return _pick(rng, {PodKind.TRAINING: 0.4, PodKind.FINE_TUNING: 0.3, PodKind.INFERENCE: 0.3})


def _pod(gen: _Gen, kind: PodKind, gpus: int, milli: int = 1000, **kw) -> Pod:
    cpu, mem = gen.rng.choice(PER_GPU[kind])
    prio = kw.pop("priority", None)
    if prio is None:
        prio = _pick(gen.rng, PENDING_PRIORITY)
    scale = gpus if milli == 1000 else max(1, milli // 250) / 4
    return Pod(
        name=kw.pop("name", f"{kind.value}-{gen.next_id():06d}"),
        namespace={"training": "train", "fine-tuning": "tune", "inference": "serve"}[kind.value],
        kind=kind,
        priority=prio,
        gpus=gpus,
        gpu_milli=milli,
        cpu_milli=int(cpu * scale),
        memory_mi_b=int(mem * scale),
        preemptible=prio < 1000,
        **kw,
    )


def _scatter(gen: _Gen, nodes: list[Node], power: _Power, fill: float) -> list[Pod]:
    """Running pods on random GPUs of random nodes, as churn leaves them, until `fill` of the
    GPUs is busy; a pod starts only within its node's CPU, memory and every budget."""
    rng = gen.rng
    g = gen.g
    free = [list(range(g)) for _ in nodes]
    cpu = [n.cpu_milli for n in nodes]
    mem = [n.memory_mi_b for n in nodes]
    target = fill * len(nodes) * g
    busy = 0.0
    pods: list[Pod] = []
    misses = 0
    while busy < target and misses < 20 * len(nodes):
        i = rng.randrange(len(nodes))
        node = nodes[i]
        size = _pick(rng, RUNNING_SIZE)
        kind = PodKind.INFERENCE if size == 0 else _kind(rng)
        prio = _pick(rng, RUNNING_PRIORITY)
        gpus = 1 if size == 0 else size
        if len(free[i]) < gpus:
            misses += 1
            continue
        picks = sorted(rng.sample(free[i], gpus))
        if size == 0:
            # Shares of one GPU: one app's replicas stacked until the GPU is full or churn
            # took some away.
            milli = _pick(rng, SHARE_MILLI)
            app = f"svc-{gen.next_id():05d}"
            group = [
                _pod(gen, kind, 1, milli, priority=prio, app=app, node=node.name, gpu_indices=picks)
                for _ in range(rng.randint(1, 1000 // milli))
            ]
        else:
            group = [_pod(gen, kind, gpus, priority=prio, node=node.name, gpu_indices=picks)]
        need_cpu = sum(p.cpu_milli for p in group)
        need_mem = sum(p.memory_mi_b for p in group)
        watts = sum(power.watts(p, node) for p in group)
        if need_cpu > cpu[i] or need_mem > mem[i] or not power.fits(node, watts):
            misses += 1
            continue
        for x in picks:
            free[i].remove(x)
        cpu[i] -= need_cpu
        mem[i] -= need_mem
        power.add(node, watts)
        pods += group
        busy += sum(p.milli_total for p in group) / 1000
    return pods


def _health(gen: _Gen, nodes: list[Node], degraded: float, cordoned: float) -> list[Node]:
    rng = gen.rng
    out = list(nodes)
    picks = rng.sample(range(len(nodes)), round(degraded * len(nodes)))
    for i in picks:
        gpu = rng.randrange(gen.g)
        health = [GpuHealth(index=gpu, state=HealthState.DEGRADED, reasons=["XID 94, repeated"])]
        out[i] = out[i].model_copy(update={"gpu_health": health})
    for i in rng.sample(range(len(nodes)), max(1, round(cordoned * len(nodes)))):
        out[i] = out[i].model_copy(update={"schedulable": False})
    return out


def _models(rng: random.Random) -> list[str]:
    if rng.random() >= PINNED:
        return []
    return rng.choice([["H200"], ["H100-SXM", "H200"], ["A100-SXM"]])


def _pending(gen: _Gen, count: int) -> list[Pod]:
    rng, g = gen.rng, gen.g
    pods: list[Pod] = []
    while len(pods) < count:
        what = _pick(rng, PENDING_MIX)
        models = _models(rng)
        prio = _pick(rng, PENDING_PRIORITY)
        if what == "gang":
            size = _pick(rng, GANG_NODES)
            job = f"gang-{gen.next_id():05d}"
            pods += [
                _pod(
                    gen,
                    PodKind.TRAINING,
                    g,
                    name=f"{job}-{m}",
                    priority=prio,
                    gpu_models=models,
                    gang=Gang(name=job, size=size),
                )
                for m in range(size)
            ]
        elif what in ("training", "fine-tuning"):
            kind = PodKind(what)
            pods.append(_pod(gen, kind, _pick(rng, SINGLE_GPUS), priority=prio, gpu_models=models))
        elif what == "share":
            milli = _pick(rng, SHARE_MILLI)
            pods.append(_pod(gen, PodKind.INFERENCE, 1, milli, priority=prio, gpu_models=models))
        else:
            app = f"app-{gen.next_id():05d}"
            milli = _pick(rng, {1000: 0.5, **{k: v / 2 for k, v in SHARE_MILLI.items()}})
            replicas = _pick(rng, {2: 0.3, 4: 0.3, 8: 0.25, 16: 0.15})
            pods += [
                _pod(
                    gen,
                    PodKind.INFERENCE,
                    1,
                    milli,
                    priority=prio,
                    gpu_models=models,
                    app=app,
                    max_per_node=4,
                )
                for _ in range(replicas)
            ]
    return pods  # the last unit may run past count: a gang is never cut


def scattered_state(
    nodes: int,
    seed: int,
    *,
    pending: int | None = None,
    fill: float = 0.45,
    fractions: tuple[float | None, float | None, float | None] = (0.80, 0.76, 0.72),
    degraded: float = 0.02,
    cordoned: float = 0.005,
    over_budget_racks: int = 0,
) -> ClusterSnapshot:
    """A live cluster's state; `over_budget_racks` racks then have their budget cut to 90% of
    what already runs in them (a facility power event)."""
    gen = _Gen(seed, 8)
    node_list = _cluster(gen, nodes, 32)
    domains = _domains(node_list, 8, fractions)
    power = _Power(node_list, domains)
    running = _scatter(gen, node_list, power, fill)
    node_list = _health(gen, node_list, degraded, cordoned)
    queue = _pending(gen, round(2.5 * nodes) if pending is None else pending)
    if over_budget_racks:
        racks = sorted({n.power_domain for n in node_list})
        cut = set(gen.rng.sample(racks, min(over_budget_racks, len(racks))))
        domains = [
            d.model_copy(update={"budget_watts": int(0.9 * power.draw[d.name])})
            if d.name in cut
            else d
            for d in domains
        ]
    name = f"live-{nodes}n-s{seed}" + (f"-cut{over_budget_racks}" if over_budget_racks else "")
    return ClusterSnapshot(
        metadata=SnapshotMeta(name=name),
        gpu_models=[
            GpuModel(name=m, tdp_watts=t, idle_watts=i, memory_mi_b=mem)
            for m, (t, i, mem) in MODELS.items()
        ],
        power_domains=domains,
        nodes=node_list,
        pods=running + queue,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1024)
    ap.add_argument("--pending", type=int, default=None, help="default 2.5 per node")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fill", type=float, default=0.45)
    ap.add_argument("--over-budget", type=int, default=0, help="racks cut below their draw")
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)
    snap = scattered_state(
        args.nodes,
        args.seed,
        pending=args.pending,
        fill=args.fill,
        over_budget_racks=args.over_budget,
    )
    if args.output:
        write_snapshot(Path(args.output), snap)
    print(json.dumps(describe(snap), indent=2))


if __name__ == "__main__":
    main()
