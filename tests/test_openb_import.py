"""The openb importer against the real trace (read in place, never copied) and against bad rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from traces import trace_dir

from scheduler.errors import UserError
from scheduler.model import PodKind
from scheduler.traces import read_openb, snapshot_from_openb

TRACE = trace_dir("alibaba-gpu-v2023-openb")
GPU_NODES = TRACE / "openb_node_list_gpu_node.csv"

NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model\n"
POD_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)
GOOD_NODE = "n-0,32000,262144,8,G2\n"
GOOD_POD = "p-0,4000,8192,1,500,,LS,Running,0,10,0\n"


def test_default_trace_matches_the_published_counts():
    snap = read_openb(GPU_NODES, TRACE / "openb_pod_list_default.csv")
    pods = snap.pods
    assert len(snap.nodes) == 1213
    assert sum(n.gpus for n in snap.nodes) == 6212
    assert len(pods) == 8152
    assert sum(1 for p in pods if p.gpus == 0) == 1088
    assert sum(1 for p in pods if p.fractional) == 3078
    assert sum(1 for p in pods if p.gpus == 1 and not p.fractional) == 3911
    assert sum(p.milli_total for p in pods) == 6_086_800
    assert all(p.node is None and p.priority == 0 for p in pods)
    assert Counter(p.kind for p in pods)[PodKind.TRAINING] == 75
    assert all(d.budget_watts is None for d in snap.power_domains)
    # 1213 nodes in racks of 16 and rows of 8: 76 racks, 10 rows, one facility.
    assert len(snap.power_domains) == 1 + 10 + 76


def test_gpu_spec_becomes_deduplicated_model_constraints():
    snap = read_openb(GPU_NODES, TRACE / "openb_pod_list_gpuspec33.csv")
    constrained = [p for p in snap.pods if p.gpu_models]
    assert len(constrained) == 2388
    assert all(len(set(p.gpu_models)) == len(p.gpu_models) for p in constrained)


def test_multigpu_variant_without_qos_is_read_as_best_effort():
    snap = read_openb(GPU_NODES, TRACE / "openb_pod_list_multigpu50.csv")
    assert len(snap.pods) == 9061
    assert sum(1 for p in snap.pods if p.gpus >= 2) == 984
    assert abs(sum(p.milli_total for p in snap.pods) / 1000 - 11359) < 1
    whole_single = {p.kind for p in snap.pods if p.gpus == 1 and not p.fractional}
    assert whole_single == {PodKind.FINE_TUNING}


def test_all_node_list_keeps_cpu_only_nodes_and_budgets_follow_nameplate():
    snap = read_openb(
        TRACE / "openb_node_list_all_node.csv",
        TRACE / "openb_pod_list_default.csv",
        rack_budget_fraction=0.5,
        facility_budget_fraction=0.9,
        pending=False,
    )
    assert len(snap.nodes) == 1523
    assert sum(1 for n in snap.nodes if n.gpus == 0) == 310
    assert snap.pods == []
    tdp = {m.name: m.tdp_watts for m in snap.gpu_models}
    nameplate = sum(n.gpus * tdp[n.gpu_model] for n in snap.nodes)
    facility = next(d for d in snap.power_domains if d.name == "facility")
    assert facility.budget_watts == int(0.9 * nameplate)
    rows = [d for d in snap.power_domains if d.name.startswith("row-")]
    assert all(d.budget_watts is None for d in rows)


def test_rows_as_mappings_need_no_file():
    snap = snapshot_from_openb(
        [{"sn": "a", "cpu_milli": 8000, "memory_mib": 1024, "gpu": 2, "model": "T4"}],
        [{"name": "p", "cpu_milli": 1, "memory_mib": 1, "num_gpu": 2, "gpu_milli": 1000}],
        rack_budget_fraction=0.5,
    )
    assert snap.pods[0].kind == PodKind.TRAINING
    rack = next(d for d in snap.power_domains if d.name == "rack-000")
    assert rack.budget_watts == 70


def _write(tmp_path: Path, nodes: str, pods: str) -> tuple[Path, Path]:
    node_file, pod_file = tmp_path / "nodes.csv", tmp_path / "pods.csv"
    node_file.write_text(nodes)
    pod_file.write_text(pods)
    return node_file, pod_file


@pytest.mark.parametrize(
    ("bad_file", "row", "column"),
    [
        ("pods", "p-1,4000,lots,1,1000,,LS,Running,0,1,0", "memory_mib"),
        ("pods", "p-1,4000,8192,-1,1000,,LS,Running,0,1,0", "num_gpu"),
        ("pods", "p-1,4000,8192,1,1000,V100M16|H9,,,,,", "gpu_spec"),
        ("pods", "p-1,4000,8192", "num_gpu"),
        ("pods", "p-1,4000,8192,2,500,,BE,,,,", "gpu_milli"),
        ("pods", "p-0,4000,8192,1,1000,,BE,,,,", "name"),
        ("nodes", "n-1,32000,262144,4,Z80", "model"),
        ("nodes", "n-1,32000,x,4,T4", "memory_mib"),
        ("nodes", "n-0,32000,262144,4,T4", "sn"),
    ],
)
def test_bad_row_names_file_line_and_column(tmp_path, bad_file, row, column):
    extra_node = row + "\n" if bad_file == "nodes" else ""
    extra_pod = row + "\n" if bad_file == "pods" else ""
    node_file, pod_file = _write(
        tmp_path, NODE_HEADER + GOOD_NODE + extra_node, POD_HEADER + GOOD_POD + extra_pod
    )
    with pytest.raises(UserError) as err:
        read_openb(node_file, pod_file)
    assert f"{bad_file}.csv line 3, column '{column}'" in str(err.value)


def test_missing_column_in_header_is_reported_on_line_1(tmp_path):
    node_file, pod_file = _write(
        tmp_path, NODE_HEADER + GOOD_NODE, "name,cpu_milli,num_gpu,gpu_milli\np,1,1,1000\n"
    )
    with pytest.raises(UserError, match=r"pods\.csv line 1, column 'memory_mib'"):
        read_openb(node_file, pod_file)


def test_five_column_pod_list_is_accepted(tmp_path):
    node_file, pod_file = _write(
        tmp_path,
        NODE_HEADER + GOOD_NODE,
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1000,1024,1,1000\nb,1000,1024,0,0\n",
    )
    snap = read_openb(node_file, pod_file)
    assert [p.kind for p in snap.pods] == [PodKind.FINE_TUNING, PodKind.FINE_TUNING]
    assert snap.pods[1].gpus == 0 and snap.pods[1].gpu_milli == 1000


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_openb(tmp_path / "none.csv", tmp_path / "none.csv")
