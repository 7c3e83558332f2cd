"""A differential test of the node filters against the real kube-scheduler, the oracle.

Random nodes (labels, taints of every effect, some cordoned, an extended resource or not) and
random pods (tolerations, nodeSelector, required node affinity with every operator and
matchFields, some asking for the extended resource) on a real API
server. kube-scheduler (default profile) places each pod; the pods ask for so little that none
takes room another needs, so each is judged as if alone. Then the same pod objects go through
wattpack's conversion and its filters (scheduler.fit.filters, as the planner asks them): where
kube-scheduler bound a pod, wattpack (its filters and NodeResourcesFit) must let it onto that
node; where kube-scheduler found no
node, wattpack must find none.

Seeded: WATTPACK_DIFF_SEED (default 14) and WATTPACK_DIFF_CASES (default 500); CI runs the
default, a wider search sets other seeds and more cases (README)."""

from __future__ import annotations

import copy
import json
import os
import random
from typing import Any

import pytest
from kube import H100, QUICK, Cluster, required_affinity, scheduled_condition, wait_until

from operators.kube.convert import ClusterObjects, convert
from scheduler.fit.state import ClusterState
from scheduler.model import GpuModel, PackingPolicy

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("WATTPACK_DIFF_SEED", "14"))
CASES = int(os.environ.get("WATTPACK_DIFF_CASES", "500"))
NODES = 16
KEYS = {"pool": ["a", "b", "c"], "zone": ["z1", "z2"], "gen": ["1", "2", "3", "4"]}
TAINT_KEYS = {"nvidia.com/gpu": ["present"], "dedicated": ["ml", "infra"], "spot": ["", "true"]}
EFFECTS = ["NoSchedule", "NoExecute", "PreferNoSchedule"]
RDMA = "example.com/rdma"


def _node(rng: random.Random) -> dict[str, Any]:
    labels = {k: rng.choice(v) for k, v in KEYS.items() if rng.random() < 0.75}
    taints = []
    for key, values in TAINT_KEYS.items():
        if rng.random() < 0.3:
            taint = {"key": key, "effect": rng.choice(EFFECTS)}
            value = rng.choice(values)
            if value:
                taint["value"] = value
            taints.append(taint)
    return {
        "labels": labels,
        "taints": taints,
        "unschedulable": rng.random() < 0.1,
        # Plenty or none, so that no pod takes what another needs (each is judged alone).
        "extended": {RDMA: "1000"} if rng.random() < 0.5 else {},
    }


def _requirement(rng: random.Random) -> dict[str, Any]:
    key = rng.choice(list(KEYS))
    op = rng.choice(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"])
    if op in ("In", "NotIn"):
        values = rng.sample(KEYS[key], rng.randint(1, len(KEYS[key])))
    elif op in ("Gt", "Lt"):
        key, values = "gen", [str(rng.randint(0, 4))]
    else:
        values = []
    return {"key": key, "operator": op, **({"values": values} if values else {})}


def _pod_spec(rng: random.Random, node_names: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    tolerations = []
    for key, values in TAINT_KEYS.items():
        if rng.random() < 0.45:
            t: dict[str, Any] = {"key": key}
            if rng.random() < 0.5:
                t["operator"] = "Exists"
            else:
                t["operator"] = "Equal"
                t["value"] = rng.choice([*values, "other"])
            if rng.random() < 0.5:
                t["effect"] = rng.choice(["NoSchedule", "NoExecute"])
            tolerations.append(t)
    if rng.random() < 0.05:
        tolerations.append({"operator": "Exists"})  # tolerates everything
    if rng.random() < 0.1:
        tolerations.append(
            {
                "key": "node.kubernetes.io/unschedulable",
                "operator": "Exists",
                "effect": "NoSchedule",
            }
        )
    spec["tolerations"] = tolerations
    if rng.random() < 0.3:
        spec["nodeSelector"] = {
            k: rng.choice(v) for k, v in KEYS.items() if rng.random() < 0.4
        } or {"pool": "a"}
    if rng.random() < 0.4:
        terms = []
        for _ in range(rng.randint(1, 2)):
            term: dict[str, Any] = {
                "matchExpressions": [_requirement(rng) for _ in range(rng.randint(1, 2))]
            }
            if rng.random() < 0.15:
                term["matchFields"] = [
                    {
                        "key": "metadata.name",
                        "operator": rng.choice(["In", "NotIn"]),
                        "values": [rng.choice(node_names)],  # the API allows one
                    }
                ]
            terms.append(term)
        spec["affinity"] = required_affinity(*terms)
    return spec


def test_filters_agree_with_kube_scheduler(cluster: Cluster) -> None:
    rng = random.Random(SEED)
    cluster.set_config(QUICK, [H100])
    cluster.power_domain("facility", None, None)
    names = [f"n{i:02d}" for i in range(NODES)]
    for name in names:
        cluster.gpu_node(name, "facility", gpus=8, pods=5000, **_node(rng))
    cluster.nodes_ready(NODES)
    cluster.namespace("ml")
    cluster.cp.start_kube_scheduler()
    specs = {}
    for i in range(CASES):
        spec = _pod_spec(rng, names)
        tolerations = spec.pop("tolerations")
        name = f"case-{i:04d}"
        # NodeResourcesFit for an extended resource.
        extended = {RDMA: str(rng.randint(1, 2))} if rng.random() < 0.2 else None
        cluster.pod(
            name, gpus=0, cpu="1m", memory="1Mi", scheduler="default-scheduler",
            tolerations=tolerations, extended=extended, **spec,
        )  # fmt: skip
        specs[name] = spec

    def decided():
        pods = cluster.pods("ml")
        done = [
            p
            for p in pods
            if p["spec"].get("nodeName")
            or (scheduled_condition(p) or {}).get("reason") == "Unschedulable"
        ]
        return pods if len(done) == CASES else None

    pods = wait_until(decided, 300, f"kube-scheduler's verdict on {CASES} pods", every=1)
    nodes = json.loads(cluster.core.list_node(_preload_content=False).data)["items"]
    # The same pods, as wattpack would plan them: its scheduler name, not bound.
    mine = []
    for p in pods:
        q = copy.deepcopy(p)
        q["spec"]["schedulerName"] = "wattpack"
        q["spec"].pop("nodeName", None)
        q["status"] = {"phase": "Pending"}
        mine.append(q)
    model = GpuModel.model_validate(H100)
    conv = convert(ClusterObjects(nodes, mine, [], [], [model]), exported_at=None)
    assert not conv.problems, conv.problems[:3]
    # The filters and NodeResourcesFit as the planner asks them, on every node, cordoned ones
    # included (a state with every pod pending: nothing is taken yet).
    state = ClusterState.unclassed(conv.snapshot, PackingPolicy())
    index = {n.name: i for i, n in enumerate(conv.snapshot.nodes)}
    assert len(index) == NODES
    by_name = {p.name: p for p in conv.snapshot.pods}
    disagreements = []
    bound = unschedulable = 0
    for p in pods:
        name = p["metadata"]["name"]
        pod = by_name[name]
        admitted = {n for n, i in index.items() if state.model_ok(pod, i) and state.host_ok(pod, i)}
        node = p["spec"].get("nodeName")
        if node:
            bound += 1
            if node not in admitted:
                disagreements.append(f"{name}: kube-scheduler bound it to {node}, wattpack refuses")
        else:
            unschedulable += 1
            if admitted:
                why = scheduled_condition(p)["message"]
                disagreements.append(
                    f"{name}: kube-scheduler found no node ({why}), "
                    f"wattpack admits {sorted(admitted)}"
                )
    print(f"{CASES} cases (seed {SEED}): {bound} bound, {unschedulable} unschedulable")
    assert disagreements == [], "\n".join(disagreements[:10])
    assert bound > CASES // 5 and unschedulable > CASES // 10  # both verdicts well exercised
