"""`wattpack export` then `wattpack plan` gives the plan the operator makes on the same state,
and the operator's --dry-run writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kube import Cluster, not_in, required_affinity, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MODELS = [
    {"name": "H100-SXM", "tdpWatts": 700, "idleWatts": 75, "memoryMiB": 81920},
    {"name": "A100-SXM4-80GB", "tdpWatts": 400, "idleWatts": 50, "memoryMiB": 81920},
]
# One deterministic worker: the same snapshot gives the same plan in any process.
HOST = "kubernetes.io/hostname"
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
POLICY = {"solver": {"timeLimitSeconds": 10, "workers": 1, "deterministic": True}}


def _wattpack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "operators.cli", *args], capture_output=True, text=True, cwd=REPO
    )


def _plans(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{") and '"bindings"' in line:
            out.append(json.loads(line))
    return out


def test_export_then_plan_is_what_the_operator_plans(cluster: Cluster, tmp_path: Path) -> None:
    cluster.set_config(POLICY, MODELS)
    cluster.power_domain("facility", None, 60_000)
    cluster.power_domain("rack-h", "facility", 20_000)
    cluster.power_domain("rack-a", "facility", 12_000)
    # The A100 pool is tainted and labelled as managed pools are; kube-scheduler's filters hold.
    pool_taint = [{"key": "pool", "value": "a100", "effect": "NoSchedule"}]
    for i in range(4):
        cluster.gpu_node(f"h-{i}", "rack-h", labels={"zone": "z1" if i < 2 else "z2"})
        cluster.gpu_node(
            f"a-{i}", "rack-a", model="A100-SXM4-80GB", labels={"pool": "a100"}, taints=pool_taint
        )
    cluster.nodes_ready(8)
    cluster.namespace("ml")
    cluster.priority_class("high", 1000)
    for i in range(3):
        cluster.pod(f"gang-{i}", gpus=4, gang="big", gang_size=3, priority_class="high")
    for i in range(20):
        cluster.pod(f"ft-{i}", gpus=1 + i % 4, kind="fine-tuning")
    for i in range(12):
        cluster.pod(
            f"inf-{i}", milli=250 * (1 + i % 3), kind="inference", app="chat", max_per_node=3
        )
    cluster.pod("h100-only", gpus=2, annotations={"wattpack.io/gpu-models": "H100-SXM"})
    tolerate_pool = [
        {"key": "nvidia.com/gpu", "operator": "Exists"},
        {"key": "pool", "operator": "Equal", "value": "a100", "effect": "NoSchedule"},
    ]
    for i in range(4):
        cluster.pod(f"a100-ok-{i}", gpus=2, tolerations=tolerate_pool)
    cluster.pod("zone-2", gpus=1, nodeSelector={"zone": "z2"})
    cluster.pod(
        "not-z1",
        gpus=1,
        affinity=required_affinity(not_in("zone", "z1")),
    )
    cluster.pod("bad-share", gpus=2, annotations={"wattpack.io/gpu-milli": "300"})
    # Rules on other pods: replicas one per node, a pod near the gang's zone, a zone spread,
    # and an anti-affinity over every namespace (namespace labels go into the export).
    web = {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": HOST}
    for i in range(3):
        cluster.pod(
            f"web-{i}", gpus=1, kind="inference", labels={"app": "web"},
            affinity={"podAntiAffinity": {REQUIRED: [{**web, "namespaceSelector": {}}]}},
        )  # fmt: skip
    near = {"labelSelector": {"matchLabels": {"wattpack.io/gang": "big"}}, "topologyKey": "zone"}
    cluster.pod("near-gang", gpus=1, affinity={"podAffinity": {REQUIRED: [near]}})
    spread = {
        "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "spread"}},
    }  # fmt: skip
    for i in range(4):
        cluster.pod(
            f"spread-{i}", gpus=1, labels={"app": "spread"}, topologySpreadConstraints=[spread]
        )
    before = cluster.pods("ml")

    op = cluster.start_operator("--dry-run", "--interval=2")
    wait_until(lambda: _plans(op.log), 60, "the operator's first dry-run plan")
    operator_plan = _plans(op.log)[0]

    snap, pol = tmp_path / "snapshot.yaml", tmp_path / "policy.yaml"
    exp = _wattpack(
        "export",
        f"--kubeconfig={cluster.cp.kubeconfig}",
        "--out",
        str(snap),
        "--policy-out",
        str(pol),
    )
    assert exp.returncode == 0, exp.stderr
    assert "bad-share" in exp.stderr  # left out, and said so
    planned = _wattpack("plan", str(snap), "--policy", str(pol), "--output", "json")
    assert planned.returncode == 0, planned.stderr
    file_plan = json.loads(planned.stdout)

    assert operator_plan["bindings"], "the scenario is meant to bind pods"
    assert operator_plan["unplaced"], "and to leave some waiting"
    for part in ("bindings", "evictions", "unplaced"):
        assert file_plan[part] == operator_plan[part], part
    where = {b["pod"]: b["node"] for b in operator_plan["bindings"]}
    # Only tolerating pods on the tainted pool; the selector and the affinity held.
    assert all(n.startswith("a-") is p.startswith("ml/a100-ok") for p, n in where.items())
    assert where.get("ml/zone-2") in (None, "h-2", "h-3")
    assert where.get("ml/not-z1") in (None, "h-2", "h-3", "a-0", "a-1", "a-2", "a-3")
    assert file_plan["summary"]["objective"] == operator_plan["summary"]["objective"]
    webs = [where.get(f"ml/web-{i}") for i in range(3)]
    assert None not in webs and len(set(webs)) == 3
    zone = {"h-0": "z1", "h-1": "z1", "h-2": "z2", "h-3": "z2"}
    gang_zones = {zone[where[f"ml/gang-{i}"]] for i in range(3) if f"ml/gang-{i}" in where}
    assert where.get("ml/near-gang") is None or zone[where["ml/near-gang"]] in gang_zones
    spread_zones = [zone[where[f"ml/spread-{i}"]] for i in range(4) if f"ml/spread-{i}" in where]
    assert len(spread_zones) == 4 and spread_zones.count("z1") == 2

    # A dry run writes nothing: no pod bound, annotated or given a condition, no Event.
    after = cluster.pods("ml")
    assert [p["spec"].get("nodeName") for p in after] == [None] * len(before)
    for p in after:
        assert "wattpack.io/gpu-indices" not in (p["metadata"].get("annotations") or {})
        assert not p.get("status", {}).get("conditions")
    assert not cluster.events("ml")
    assert '"would_bind"' in op.log.read_text()
