"""300 pods of every kind on 64 KWOK GPU nodes in 4 racks with a tight rack budget, scheduled by
the real operator process against the real API server; the outcome is judged from the API
objects, with the independent feasibility checker for power and for "this pod would fit"."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from kube import Cluster, bound, scheduled_condition, wait_until

from scheduler.model import (
    Binding,
    ClusterSnapshot,
    PackingPolicy,
    Plan,
    PlanSummary,
)
from scheduler.power import budgets, domain_power
from scheduler.verify.feasibility import check_plan

pytestmark = pytest.mark.slow

MODELS = [{"name": "H100-SXM", "tdpWatts": 700, "idleWatts": 75, "memoryMiB": 81920}]
POLICY = {"solver": {"timeLimitSeconds": 10, "workers": 2}}
RACKS, NODES_PER_RACK, GPUS = 4, 16, 8
# Tight: 60% of nameplate GPU power per rack, so power, not GPUs, binds.
RACK_BUDGET = int(NODES_PER_RACK * GPUS * 700 * 0.60)
REPO = Path(__file__).resolve().parents[2]


def make_pods(c: Cluster) -> dict[str, dict]:
    rng = random.Random(7)
    made: dict[str, dict] = {}

    def pod(name: str, **kw) -> None:  # type: ignore[no-untyped-def]
        made[name] = c.pod(name, **kw)

    for g in range(8):  # training gangs of 4 x 8 GPUs
        for m in range(4):
            pod(f"train-g{g}-{m}", gpus=8, gang=f"g{g}", gang_size=4, priority_class="normal")
    for i in range(60):
        pod(f"ft-{i}", gpus=rng.choice([1, 2, 4]), kind="fine-tuning", priority_class="normal")
    for a in range(3):
        for i in range(20):
            pod(
                f"serve-{a}-{i}",
                gpus=1,
                kind="inference",
                app=f"serve-{a}",
                max_per_node=2,
                priority_class="high",
            )
    for i in range(100):
        pod(
            f"share-{i}",
            milli=rng.choice([250, 500]),
            kind="inference",
            cpu="1",
            memory="4Gi",
            priority_class="high",
        )
    for i in range(45):
        pod(f"train-{i}", gpus=rng.choice([1, 2, 4, 8]), priority_class="low")
    pod("too-big-0", gpus=16)
    pod("too-big-1", gpus=12)
    pod("bad-kind", gpus=1, kind="train")  # a typo: wattpack says which label and what to do
    assert len(made) == 300
    return made


def test_300_pods_on_64_nodes_under_a_tight_rack_budget(cluster: Cluster, tmp_path: Path) -> None:
    cluster.set_config(POLICY, MODELS)
    cluster.power_domain("facility", None, None)
    for r in range(RACKS):
        cluster.power_domain(f"rack-{r}", "facility", RACK_BUDGET)
        for i in range(NODES_PER_RACK):
            cluster.gpu_node(f"gpu-{r}-{i:02d}", f"rack-{r}")
    cluster.nodes_ready(RACKS * NODES_PER_RACK)
    cluster.namespace("ml")
    for name, value in (("high", 1000), ("normal", 100), ("low", 10)):
        cluster.priority_class(name, value)
    # The operator is up first: pods arrive over several cycles, as in a live cluster.
    cluster.start_operator("--interval=5")
    made = make_pods(cluster)

    def settled() -> list[dict] | None:
        pods = cluster.pods("ml")
        waiting = [p for p in pods if not p["spec"].get("nodeName")]
        explained = [p for p in waiting if (scheduled_condition(p) or {}).get("status") == "False"]
        running = [p for p in bound(pods) if p["status"].get("phase") == "Running"]
        ok = len(pods) == len(made) and len(explained) == len(waiting)
        return pods if ok and len(running) == len(bound(pods)) and bound(pods) else None

    wait_until(settled, 240, "every pod bound and Running, or explained", every=2)
    # Settled means nothing moves any more: look twice, a cycle apart.
    first = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in cluster.pods("ml")}
    wait_until(lambda: settled() is not None, 60, "still settled", every=6)
    pods = cluster.pods("ml")
    assert {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods} == first
    by_name = {p["metadata"]["name"]: p for p in pods}

    # No GPU given twice (read from the pods' own annotations, not through wattpack's model).
    used: dict[tuple[str, int], int] = defaultdict(int)
    for p in bound(pods):
        milli = int(p["metadata"]["annotations"].get("wattpack.io/gpu-milli", 1000))
        for i in p["metadata"]["annotations"]["wattpack.io/gpu-indices"].split(","):
            used[(p["spec"]["nodeName"], int(i))] += milli
    assert max(used.values()) <= 1000

    # No gang partial.
    for g in range(8):
        members = [by_name[f"train-g{g}-{m}"]["spec"].get("nodeName") for m in range(4)]
        assert sum(1 for n in members if n) in (0, 4), f"gang g{g} is partial: {members}"

    # Every pod left waiting says why, on the pod and in an Event, as kube-scheduler does.
    events = defaultdict(list)
    for e in cluster.events("ml"):
        if e["reason"] == "FailedScheduling":
            events[e["involvedObject"]["name"]].append(e["message"])
    waiting = [p for p in pods if not p["spec"].get("nodeName")]
    assert waiting, "the budget is meant to be tight: some pods must wait"
    for p in waiting:
        cond = scheduled_condition(p)
        name = p["metadata"]["name"]
        assert cond["reason"] == "Unschedulable" and cond["message"], name
        assert cond["message"] in events[name], name
    assert "wattpack.io/kind" in scheduled_condition(by_name["bad-kind"])["message"]
    assert "gpu" in scheduled_condition(by_name["too-big-0"])["message"].lower()

    # The exported state: no budget exceeded, and no waiting pod would fit anywhere on its own
    # (judged by the independent checker, one candidate binding at a time).
    snap_file = tmp_path / "snapshot.yaml"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "operators.cli",
            "export",
            f"--kubeconfig={cluster.cp.kubeconfig}",
            "--out",
            str(snap_file),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    snap = ClusterSnapshot.model_validate(yaml.safe_load(snap_file.read_text()))
    policy = PackingPolicy.model_validate(POLICY)
    running = [(p, p.node) for p in snap.pods if p.node is not None]
    watts = domain_power(snap, running, policy)
    for domain, budget in budgets(snap).items():
        assert watts[domain] <= budget, f"{domain}: {watts[domain]} W > {budget} W"
    assert max(watts[f"rack-{r}"] for r in range(RACKS)) > 0.9 * RACK_BUDGET
    for pod in snap.pods:
        if pod.node is None and pod.gang is None:
            fits = _fits_somewhere(snap, policy, pod)
            assert fits is None, f"{pod.key} waits but fits on {fits}"


def _fits_somewhere(snap: ClusterSnapshot, policy: PackingPolicy, pod) -> str | None:  # type: ignore[no-untyped-def]
    milli: dict[tuple[str, int], int] = defaultdict(int)
    for p in snap.pods:
        for i in p.gpu_indices:
            milli[(p.node, i)] += p.milli_total if p.fractional else 1000  # type: ignore[index]
    share = pod.gpu_milli if pod.fractional else 1000
    for node in snap.nodes:
        free = [i for i in range(node.gpus) if milli[(node.name, i)] + share <= 1000]
        if len(free) < pod.gpus:
            continue
        plan = Plan(
            bindings=[Binding(pod=pod.key, node=node.name, gpu_indices=free[: pod.gpus])],
            summary=PlanSummary(
                status="CHECK",
                solve_seconds=0,
                gpu_allocation_before=0,
                gpu_allocation=0,
                objective=0,
                bound=0,
                gap=0,
                power_watts={},
                power_budget_watts={},
            ),
        )
        if not check_plan(snap, policy, plan):
            return node.name
    return None
