"""Seeded, realistic AI-factory snapshots for benchmarks (distribution: benchmarks/README.md).

All randomness comes from one random.Random(seed): the same arguments give the same snapshot.
Run as a script to write one to a file:
    python3 benchmarks/instances.py --nodes 4096 --pods 10000 --seed 1 -o /tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script from a checkout: make the repository's `scheduler` importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from scheduler.model import (
    ClusterSnapshot,
    Gang,
    GpuHealth,
    GpuModel,
    HealthState,
    Node,
    Pod,
    PodKind,
    PowerDomain,
    SnapshotMeta,
)

# name -> (tdpWatts, idleWatts, memoryMiB); public figures, docs/power-and-health.md.
MODELS = {
    "H100-SXM": (700, 75, 81920),
    "H200": (700, 80, 143360),
    "A100-SXM": (400, 60, 81920),
}
# Share of racks per model; racks are homogeneous, the rest are H100-SXM.
RACK_SHARE = {"H200": 0.15, "A100-SXM": 0.15}
# Allocatable per GPU (DGX-class hosts: ~224-256 vCPU, 2 TiB, minus system reserve).
NODE_PER_GPU = {"H100-SXM": (27500, 245760), "H200": (27500, 245760), "A100-SXM": (31000, 245760)}

# Pending pods by count: shares of training, fine-tuning (rest inference). Tuned so that the
# requested GPUs are ~108% of the free ones in an empty cluster.
TRAIN_SHARE, FT_SHARE = 0.32, 0.20
GANG_SIZES = {1: 0.30, 2: 0.25, 4: 0.20, 8: 0.15, 16: 0.10}  # 1 = a standalone pod
FT_GPUS = {1: 0.30, 2: 0.30, 4: 0.25, 8: 0.15}
# Pod specs are templated: (cpuMilli, memoryMiB) per GPU, one template per job or app.
TRAIN_SPEC = [(24000, 196608), (16000, 131072), (12000, 98304)]
FT_SPEC = [(16000, 131072), (12000, 98304), (8000, 65536)]
INFER_SPEC = {1000: [(8000, 65536), (4000, 32768)], 500: [(4000, 32768)], 250: [(2000, 16384)]}
INFER_MILLI = {1000: 0.50, 500: 0.25, 250: 0.25}
APP_REPLICAS = {2: 0.35, 4: 0.30, 8: 0.20, 16: 0.10, 32: 0.05}
MAX_PER_NODE = {1: 0.4, 2: 0.3, 4: 0.2, None: 0.1}
DEV_SHARE = 0.25  # inference pods that are lone dev notebooks (250 milli, no app)
SCALE_UP = 0.3  # pending apps that add replicas to an app already running
PRIORITY = {
    PodKind.TRAINING: {0: 0.50, 100: 0.35, 1000: 0.15},
    PodKind.FINE_TUNING: {0: 0.40, 100: 0.50, 1000: 0.10},
    PodKind.INFERENCE: {100: 0.30, 1000: 0.70},
}
# (probability, acceptable models) per kind; the rest may run anywhere.
CONSTRAINTS = {
    PodKind.TRAINING: [(0.20, ["H100-SXM", "H200"]), (0.05, ["H200"])],
    PodKind.FINE_TUNING: [(0.10, ["A100-SXM"])],
    PodKind.INFERENCE: [(0.10, ["H200"])],
}
HEALTH = {HealthState.DEGRADED: 0.5, HealthState.SUSPECT: 0.4, HealthState.FAILED: 0.1}
REASONS = {
    HealthState.SUSPECT: ["corrected ECC rate rising", "row remap pending", "PCIe replays rising"],
    HealthState.DEGRADED: ["XID 94 contained ECC error, repeated", "NVLink CRC errors rising"],
    HealthState.FAILED: ["XID 79 fell off the bus", "row remap failure"],
}


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml is ~10x faster when present


def _pick(rng: random.Random, weights: dict):
    return rng.choices(list(weights), weights=list(weights.values()))[0]


@dataclass
class _App:
    name: str
    milli: int
    cpu: int
    mem: int
    max_per_node: int | None
    priority: int
    models: list[str]
    replicas: int = 0
    per_node: dict[str, int] = field(default_factory=dict)

    def pod(self, node: str | None = None, gpu: int | None = None) -> Pod:
        self.replicas += 1
        if node is not None:
            self.per_node[node] = self.per_node.get(node, 0) + 1
        return Pod(
            name=f"{self.name}-{self.replicas - 1}",
            namespace="serve",
            kind=PodKind.INFERENCE,
            priority=self.priority,
            gpus=1,
            gpu_milli=self.milli,
            gpu_models=self.models,
            cpu_milli=self.cpu,
            memory_mi_b=self.mem,
            app=self.name,
            max_per_node=self.max_per_node,
            preemptible=self.priority < 1000,
            node=node,
            gpu_indices=[] if gpu is None else [gpu],
        )

    def fits(self, node: Node) -> bool:
        if self.models and node.gpu_model not in self.models:
            return False
        return self.max_per_node is None or self.per_node.get(node.name, 0) < self.max_per_node


class _Gen:
    """One instance's state: the random stream, counters, apps, and what each node holds."""

    def __init__(self, seed: int, gpus_per_node: int) -> None:
        self.rng = random.Random(seed)
        self.g = gpus_per_node
        self.serial = 0
        self.apps: list[_App] = []

    def next_id(self) -> int:
        self.serial += 1
        return self.serial

    def models(self, kind: PodKind, on: str | None = None) -> list[str]:
        """A drawn model constraint; for a pod already running on model `on`, one it meets."""
        u = self.rng.random()
        for p, models in CONSTRAINTS[kind]:
            if u < p:
                return list(models) if on is None or on in models else []
            u -= p
        return []

    def new_app(self, milli: int | None = None, on: str | None = None) -> _App:
        milli = milli if milli is not None else _pick(self.rng, INFER_MILLI)
        cpu, mem = self.rng.choice(INFER_SPEC[milli])
        app = _App(
            name=f"svc-{self.next_id():05d}",
            milli=milli,
            cpu=cpu,
            mem=mem,
            max_per_node=_pick(self.rng, MAX_PER_NODE),
            priority=_pick(self.rng, PRIORITY[PodKind.INFERENCE]),
            models=self.models(PodKind.INFERENCE, on),
        )
        self.apps.append(app)
        return app

    def training(self, size: int, nodes: list[Node] | None = None) -> list[Pod]:
        job = f"pretrain-{self.next_id():05d}"
        cpu, mem = self.rng.choice(TRAIN_SPEC)
        prio = _pick(self.rng, PRIORITY[PodKind.TRAINING])
        models = self.models(PodKind.TRAINING, nodes[0].gpu_model if nodes else None)
        gang = Gang(name=job, size=size) if size > 1 else None
        return [
            Pod(
                name=f"{job}-{m}",
                namespace="train",
                kind=PodKind.TRAINING,
                priority=prio,
                gpus=self.g,
                gpu_models=models,
                cpu_milli=cpu * self.g,
                memory_mi_b=mem * self.g,
                gang=gang,
                preemptible=prio < 1000,
                node=nodes[m].name if nodes else None,
                gpu_indices=list(range(self.g)) if nodes else [],
            )
            for m in range(size)
        ]

    def fine_tuning(self, gpus: int, node: Node | None = None, first: int = 0) -> Pod:
        cpu, mem = self.rng.choice(FT_SPEC)
        prio = _pick(self.rng, PRIORITY[PodKind.FINE_TUNING])
        models = self.models(PodKind.FINE_TUNING, node.gpu_model if node else None)
        return Pod(
            name=f"ft-{self.next_id():05d}",
            namespace="tune",
            kind=PodKind.FINE_TUNING,
            priority=prio,
            gpus=gpus,
            gpu_models=models,
            cpu_milli=cpu * gpus,
            memory_mi_b=mem * gpus,
            preemptible=prio < 1000,
            node=node.name if node else None,
            gpu_indices=list(range(first, first + gpus)) if node else [],
        )

    def notebook(self) -> Pod:
        return Pod(
            name=f"nb-{self.next_id():05d}",
            namespace="dev",
            kind=PodKind.INFERENCE,
            gpus=1,
            gpu_milli=250,
            cpu_milli=4000,
            memory_mi_b=32768,
        )


def _cluster(gen: _Gen, nodes: int, nodes_per_rack: int) -> list[Node]:
    racks = math.ceil(nodes / nodes_per_rack)
    rack_models = [m for m, share in RACK_SHARE.items() for _ in range(round(share * racks))]
    rack_models = (rack_models + ["H100-SXM"] * racks)[:racks]
    gen.rng.shuffle(rack_models)
    out = []
    for i in range(nodes):
        rack = i // nodes_per_rack
        model = rack_models[rack]
        cpu, mem = NODE_PER_GPU[model]
        out.append(
            Node(
                name=f"gpu-{rack:03d}-{i % nodes_per_rack:02d}",
                power_domain=f"rack-{rack:03d}",
                gpu_model=model,
                gpus=gen.g,
                cpu_milli=cpu * gen.g,
                memory_mi_b=mem * gen.g,
            )
        )
    return out


def _domains(nodes: list[Node], racks_per_row: int, fractions: tuple) -> list[PowerDomain]:
    rack_f, row_f, facility_f = fractions
    rack_tdp: dict[str, int] = {}
    for n in nodes:
        rack_tdp[n.power_domain] = rack_tdp.get(n.power_domain, 0) + n.gpus * MODELS[n.gpu_model][0]
    row_of = {r: f"row-{int(r.split('-')[1]) // racks_per_row:02d}" for r in rack_tdp}
    row_tdp: dict[str, int] = {}
    for r, w in rack_tdp.items():
        row_tdp[row_of[r]] = row_tdp.get(row_of[r], 0) + w

    def cap(f: float | None, watts: int) -> int | None:
        return None if f is None else math.floor(f * watts)

    total = cap(facility_f, sum(rack_tdp.values()))
    return [
        PowerDomain(name="facility", budget_watts=total),
        *(
            PowerDomain(name=w, parent="facility", budget_watts=cap(row_f, t))
            for w, t in row_tdp.items()
        ),
        *(
            PowerDomain(name=r, parent=row_of[r], budget_watts=cap(rack_f, t))
            for r, t in rack_tdp.items()
        ),
    ]


def _fill_mixed(gen: _Gen, node: Node) -> list[Pod]:
    """Part of one node with fine-tunes and inference: leaves free and partly used GPUs."""
    rng, pods = gen.rng, []
    want, gpu = rng.choice([gen.g // 2, 3 * gen.g // 4, gen.g]), 0
    while gpu < want:
        u = rng.random()
        if u < 0.4:
            size = _pick(rng, {k: v for k, v in FT_GPUS.items() if k <= want - gpu} or {1: 1})
            pods.append(gen.fine_tuning(size, node, gpu))
            gpu += size
            continue
        milli = 1000 if u < 0.7 else rng.choice([500, 250])
        apps = [a for a in gen.apps if a.milli == milli and a.fits(node)]
        reuse = apps and rng.random() < 0.7
        app = rng.choice(apps) if reuse else gen.new_app(milli, node.gpu_model)
        used = 0
        # Stack replicas of one app on this GPU; sometimes stop early to leave a partial GPU.
        while used + milli <= 1000 and app.fits(node):
            pods.append(app.pod(node.name, gpu))
            used += milli
            if rng.random() < 0.25:
                break
        gpu += 1
    return pods


class _Headroom:
    """Watts left under each budget. Running work must fit its budgets, so a node takes work
    only if all its GPUs at full training draw still fit (a bound on any mix placed there)."""

    def __init__(self, nodes: list[Node], domains: list[PowerDomain]) -> None:
        parent = {d.name: d.parent for d in domains}
        self.left = {d.name: d.budget_watts for d in domains if d.budget_watts is not None}
        self.chain: dict[str, list[str]] = {}
        for leaf in parent:
            chain, cur = [], leaf
            while cur is not None:
                chain.append(cur)
                cur = parent[cur]
            self.chain[leaf] = [d for d in chain if d in self.left]
        for n in nodes:
            self._add(n, n.gpus * MODELS[n.gpu_model][1])

    def _add(self, node: Node, watts: int) -> None:
        for d in self.chain[node.power_domain]:
            self.left[d] -= watts

    def take(self, node: Node) -> bool:
        tdp, idle, _ = MODELS[node.gpu_model]
        watts = node.gpus * (tdp - idle)
        if any(self.left[d] < watts for d in self.chain[node.power_domain]):
            return False
        self._add(node, watts)
        return True


def _fill(
    gen: _Gen, nodes: list[Node], domains: list[PowerDomain], fill_fraction: float
) -> list[Pod]:
    """Running work on nodes in random order until `fill_fraction` of the GPUs is in use, or
    no node fits under its power budgets any more."""
    target = round(fill_fraction * len(nodes) * gen.g * 1000)
    order = list(range(len(nodes)))
    gen.rng.shuffle(order)
    taken = [False] * len(nodes)
    room = _Headroom(nodes, domains)
    pods: list[Pod] = []
    used = 0
    for i in order:
        if used >= target:
            break
        if taken[i] or not room.take(nodes[i]):
            continue
        taken[i] = True
        if gen.rng.random() < 0.5:
            # A running gang sits on one GPU model, as its scheduler would have placed it.
            size = _pick(gen.rng, GANG_SIZES)
            members = [i]
            for j in order:
                if len(members) == size:
                    break
                same = nodes[j].gpu_model == nodes[i].gpu_model
                if not taken[j] and same and room.take(nodes[j]):
                    taken[j] = True
                    members.append(j)
            new = gen.training(len(members), [nodes[j] for j in members])
        else:
            new = _fill_mixed(gen, nodes[i])
        pods += new
        used += sum(p.milli_total for p in new)
    return pods


def _health(gen: _Gen, nodes: list[Node], running: list[Pod], fraction: float) -> list[Node]:
    busy = {(p.node, i) for p in running for i in p.gpu_indices}
    count = round(fraction * len(nodes) * gen.g)
    picks = gen.rng.sample(range(len(nodes) * gen.g), min(count, len(nodes) * gen.g))
    marks: dict[int, list[GpuHealth]] = {}
    for k in sorted(picks):
        node, idx = divmod(k, gen.g)
        state = _pick(gen.rng, HEALTH)
        if state == HealthState.FAILED and (nodes[node].name, idx) in busy:
            state = HealthState.DEGRADED  # a failed GPU would have killed its pod already
        reason = gen.rng.choice(REASONS[state])
        marks.setdefault(node, []).append(GpuHealth(index=idx, state=state, reasons=[reason]))
    out = list(nodes)
    for node, health in marks.items():
        # A node with a failed GPU is cordoned for repair.
        cordon = any(h.state == HealthState.FAILED for h in health)
        out[node] = nodes[node].model_copy(update={"gpu_health": health, "schedulable": not cordon})
    return out


def _pending(gen: _Gen, count: int) -> list[Pod]:
    rng = gen.rng
    n_train = round(TRAIN_SHARE * count)
    n_ft = round(FT_SHARE * count)
    units: list[list[Pod]] = []
    left = n_train
    while left > 0:
        size = min(_pick(rng, GANG_SIZES), left)
        units.append(gen.training(size))
        left -= size
    sizes = {k: v for k, v in FT_GPUS.items() if k <= gen.g}
    units += [[gen.fine_tuning(_pick(rng, sizes))] for _ in range(n_ft)]
    left = count - n_train - n_ft
    running_apps = list(gen.apps)
    while left > 0:
        if rng.random() < DEV_SHARE:
            units.append([gen.notebook()])
            left -= 1
            continue
        scale_up = running_apps and rng.random() < SCALE_UP
        app = rng.choice(running_apps) if scale_up else gen.new_app()
        replicas = min(_pick(rng, APP_REPLICAS), left)
        units.append([app.pod() for _ in range(replicas)])
        left -= replicas
    rng.shuffle(units)
    return [p for unit in units for p in unit]


def make_instance(
    nodes: int,
    pending_pods: int,
    seed: int,
    *,
    gpus_per_node: int = 8,
    nodes_per_rack: int = 32,
    racks_per_row: int = 8,
    rack_budget_fraction: float | None = 0.7,
    row_budget_fraction: float | None = 0.8,
    facility_budget_fraction: float | None = None,
    fill_fraction: float = 0.0,
    unhealthy_fraction: float = 0.002,
) -> ClusterSnapshot:
    """A cluster of `nodes` homogeneous-rack nodes with `pending_pods` pods waiting.

    Budgets are fractions of nameplate (summed GPU TDP) per rack, row and facility; None = no
    budget. `fill_fraction` of the GPUs already run work; `unhealthy_fraction` of the GPUs are
    suspect, degraded or failed (a node with a failed GPU is cordoned).
    """
    if nodes < 1 or pending_pods < 0 or gpus_per_node < 1:
        raise ValueError("need nodes >= 1, pending_pods >= 0 and gpus_per_node >= 1")
    gen = _Gen(seed, gpus_per_node)
    node_list = _cluster(gen, nodes, nodes_per_rack)
    fractions = (rack_budget_fraction, row_budget_fraction, facility_budget_fraction)
    domains = _domains(node_list, racks_per_row, fractions)
    running = _fill(gen, node_list, domains, fill_fraction)
    node_list = _health(gen, node_list, running, unhealthy_fraction)
    pods = running + _pending(gen, pending_pods)
    return ClusterSnapshot(
        metadata=SnapshotMeta(name=f"synthetic-{nodes}n-{pending_pods}p-s{seed}"),
        gpu_models=[
            GpuModel(name=m, tdp_watts=t, idle_watts=i, memory_mi_b=mem)
            for m, (t, i, mem) in MODELS.items()
        ],
        power_domains=domains,
        nodes=node_list,
        pods=pods,
    )


def describe(snap: ClusterSnapshot) -> dict:
    """Headline numbers: capacity, demand and their ratio (demand over free healthy GPUs)."""
    used: dict[tuple[str, int], int] = {}
    for p in snap.pods:
        for i in p.gpu_indices:
            used[(p.node, i)] = used.get((p.node, i), 0) + (p.gpu_milli if p.fractional else 1000)
    free = sum(
        1000 - used.get((n.name, i), 0)
        for n in snap.nodes
        if n.schedulable
        for i in range(n.gpus)
        if n.health_of(i) == HealthState.HEALTHY
    )
    pending = [p for p in snap.pods if p.node is None]
    demand = sum(p.milli_total for p in pending)
    kinds = {k.value: sum(1 for p in pending if p.kind == k) for k in PodKind}
    return {
        "nodes": len(snap.nodes),
        "gpus": sum(n.gpus for n in snap.nodes),
        "running_pods": len(snap.pods) - len(pending),
        "pending_pods": len(pending),
        "pending_by_kind": kinds,
        "free_healthy_gpus": free / 1000,
        "requested_gpus": demand / 1000,
        "demand_ratio": round(demand / free, 3) if free else None,
    }


def write_snapshot(out: Path, snap: ClusterSnapshot) -> None:
    """The snapshot as `wattpack plan` reads it: YAML for .yaml or .yml, else JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    data = snap.model_dump(mode="json", by_alias=True)
    if out.suffix in (".yaml", ".yml"):
        out.write_text(yaml.dump(data, Dumper=_DUMPER, sort_keys=False))
    else:
        out.write_text(json.dumps(data))


def print_and_write(named, describe, output: str | None) -> None:
    """Each (name, snapshot): its headline numbers, and, given a folder, <name>.json there."""
    for name, snap in named:
        print(name, json.dumps(describe(snap)))
        if output:
            write_snapshot(Path(output) / f"{name}.json", snap)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=4096)
    ap.add_argument("--pods", type=int, default=10000, help="pending pods")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fill", type=float, default=0.0, help="fraction of GPUs already busy")
    ap.add_argument("-o", "--output", help="write the snapshot here (.json, .yaml or .yml)")
    args = ap.parse_args(argv)
    snap = make_instance(args.nodes, args.pods, args.seed, fill_fraction=args.fill)
    if args.output:
        write_snapshot(Path(args.output), snap)
    print(json.dumps(describe(snap), indent=2))


if __name__ == "__main__":
    main()
