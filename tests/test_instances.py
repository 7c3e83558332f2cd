"""The benchmark instance generator: deterministic per seed, valid and self-consistent."""

from __future__ import annotations

from collections import Counter

import pytest
from synthetic import instances

from scheduler.model import ClusterSnapshot, PackingPolicy, PodKind
from scheduler.power import budgets, domain_power


def _dump(snap: ClusterSnapshot) -> dict:
    return snap.model_dump(mode="json", by_alias=True)


def test_same_seed_same_snapshot_other_seed_other_snapshot():
    a = instances.make_instance(64, 200, seed=7, fill_fraction=0.4)
    b = instances.make_instance(64, 200, seed=7, fill_fraction=0.4)
    c = instances.make_instance(64, 200, seed=8, fill_fraction=0.4)
    assert _dump(a) == _dump(b)
    assert _dump(a) != _dump(c)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_instance_is_valid_and_has_every_kind(seed):
    snap = instances.make_instance(64, 200, seed)
    ClusterSnapshot.model_validate(_dump(snap))  # round-trips through the wire format
    pending = [p for p in snap.pods if p.node is None]
    assert len(pending) == 200 and len(snap.pods) == 200
    assert {p.kind for p in pending} == set(PodKind)
    assert any(p.gang for p in pending) and any(p.fractional for p in pending)
    assert {p.priority for p in pending} <= {0, 100, 1000}
    assert all(d.budget_watts is not None for d in snap.power_domains if d.parent)


def test_rack_and_row_budgets_are_fractions_of_nameplate():
    snap = instances.make_instance(64, 10, 1, nodes_per_rack=16, racks_per_row=2)
    tdp = {m.name: m.tdp_watts for m in snap.gpu_models}
    rack_nameplate = Counter()
    for n in snap.nodes:
        rack_nameplate[n.power_domain] += n.gpus * tdp[n.gpu_model]
    racks = {d.name: d for d in snap.power_domains if d.name.startswith("rack-")}
    assert len(racks) == 4
    for name, watts in rack_nameplate.items():
        assert racks[name].budget_watts == int(0.7 * watts)
    rows = [d for d in snap.power_domains if d.name.startswith("row-")]
    assert len(rows) == 2


@pytest.mark.parametrize("seed", [1, 2])
def test_running_work_is_consistent(seed):
    snap = instances.make_instance(96, 50, seed, fill_fraction=0.5, gpus_per_node=8)
    nodes = {n.name: n for n in snap.nodes}
    running = [p for p in snap.pods if p.node is not None]
    assert sum(p.milli_total for p in running) >= 0.3 * 96 * 8 * 1000
    per_app = Counter((p.app, p.node) for p in running if p.app)
    limit = {p.app: p.max_per_node for p in snap.pods if p.app}
    assert all(limit[a] is None or c <= limit[a] for (a, _), c in per_app.items())
    cpu, mem = Counter(), Counter()
    for p in running:
        assert not p.gpu_models or nodes[p.node].gpu_model in p.gpu_models
        cpu[p.node] += p.cpu_milli
        mem[p.node] += p.memory_mi_b
    assert all(cpu[n] <= nodes[n].cpu_milli and mem[n] <= nodes[n].memory_mi_b for n in cpu)
    gangs = Counter(p.gang_key for p in running if p.gang)
    assert all(
        len({nodes[p.node].gpu_model for p in running if p.gang_key == g}) == 1 for g in gangs
    )
    power = domain_power(snap, [(p, p.node) for p in running], PackingPolicy())
    assert all(power[d] <= b for d, b in budgets(snap).items())


def test_four_gpu_nodes_and_describe():
    snap = instances.make_instance(32, 100, 5, gpus_per_node=4, rack_budget_fraction=None)
    assert all(n.gpus == 4 for n in snap.nodes)
    assert all(p.gpus <= 4 for p in snap.pods)
    facts = instances.describe(snap)
    assert facts["pending_pods"] == 100 and facts["gpus"] == 128
    assert facts["requested_gpus"] > 0
