"""benchmarks/openb_batches.py: openb default as one batch, five formulations that differ only
as described (CPU-only pods, the facility budget, kinds) over one node inventory."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest
from traces import trace_dir

from scheduler.model import ClusterSnapshot, PodKind
from scheduler.power import domain_chain

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "openb_batches.py"
_spec = importlib.util.spec_from_file_location("benchmark_openb_batches", _PATH)
batches = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules[_spec.name] = batches  # type: ignore[union-attr]
_spec.loader.exec_module(batches)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def snaps() -> dict[str, ClusterSnapshot]:
    trace_dir("alibaba-gpu-v2023-openb")  # a missing trace fails loudly, never a skip
    return dict(batches.openb_batches())


def _kinds(snap: ClusterSnapshot) -> Counter[PodKind]:
    return Counter(p.kind for p in snap.pods)


def test_five_formulations_over_one_inventory_all_pending(snaps) -> None:
    assert list(snaps) == [
        "openb-default",
        "openb-gpu-only",
        "openb-gpu-only-facility",
        "openb-kinds-by-qos",
        "openb-gpu-only-facility-kinds-by-qos",
    ]
    first = snaps["openb-default"]
    assert len(first.nodes) == 1213 and sum(n.gpus for n in first.nodes) == 6212
    for name, snap in snaps.items():
        assert snap.metadata.name == name
        assert snap.nodes == first.nodes and snap.gpu_models == first.gpu_models
        assert [d.name for d in snap.power_domains] == [d.name for d in first.power_domains]
        assert all(p.node is None for p in snap.pods)
        ClusterSnapshot.model_validate(snap.model_dump(mode="json", by_alias=True))


def test_gpu_only_formulations_drop_exactly_the_cpu_only_pods(snaps) -> None:
    default = snaps["openb-default"]
    cpu_only = {p.name for p in default.pods if p.gpus == 0}
    assert len(default.pods) == 8152 and len(cpu_only) == 1088
    for name in (
        "openb-gpu-only",
        "openb-gpu-only-facility",
        "openb-gpu-only-facility-kinds-by-qos",
    ):
        names = [p.name for p in snaps[name].pods]
        assert names == [p.name for p in default.pods if p.name not in cpu_only]
    assert sum(p.gpus == 0 for p in snaps["openb-kinds-by-qos"].pods) == 1088
    # The facility budget changes no pod; 5 is 4's GPU pods.
    assert snaps["openb-gpu-only-facility"].pods == snaps["openb-gpu-only"].pods
    gpu_pods_4 = [p for p in snaps["openb-kinds-by-qos"].pods if p.gpus > 0]
    assert snaps["openb-gpu-only-facility-kinds-by-qos"].pods == gpu_pods_4


def test_the_facility_budget_covers_nameplate_over_every_node(snaps) -> None:
    for name, snap in snaps.items():
        budgets = {d.name: d.budget_watts for d in snap.power_domains}
        if "facility" not in name:
            assert set(budgets.values()) == {None}
            continue
        tdp = {m.name: m.tdp_watts for m in snap.gpu_models}
        plate = sum(n.gpus * tdp[n.gpu_model] for n in snap.nodes)
        assert budgets.pop("facility") >= plate == 1_687_590
        assert set(budgets.values()) == {None}  # the facility alone is budgeted
        chains = domain_chain(snap)
        assert all(chains[n.power_domain][-1] == "facility" for n in snap.nodes)


def test_kinds_by_qos_differ_from_the_importers(snaps) -> None:
    default, by_qos = snaps["openb-default"], snaps["openb-kinds-by-qos"]
    assert _kinds(default) == {
        PodKind.TRAINING: 75,
        PodKind.FINE_TUNING: 1079,
        PodKind.INFERENCE: 6998,
    }
    assert _kinds(by_qos) == {
        PodKind.TRAINING: 1079,
        PodKind.FINE_TUNING: 100,
        PodKind.INFERENCE: 6973,
    }
    # Only the kind changes; shares stay inference.
    for a, b in zip(default.pods, by_qos.pods, strict=True):
        assert a.model_copy(update={"kind": b.kind}) == b
        assert b.kind == PodKind.INFERENCE or not b.fractional
    combined = snaps["openb-gpu-only-facility-kinds-by-qos"]
    assert _kinds(combined) == {
        PodKind.TRAINING: 629,
        PodKind.FINE_TUNING: 99,
        PodKind.INFERENCE: 6336,
    }
    assert _kinds(combined) != _kinds(snaps["openb-gpu-only-facility"])
