"""A differential test of the filters that depend on other pods (PodTopologySpread with
DoNotSchedule, InterPodAffinity: required affinity and anti-affinity, and existing pods'
anti-affinity) against the real kube-scheduler, the oracle.

Nodes with hostname and zone labels (some without a zone), pods already running on them (bound
by name, some with anti-affinity of their own), then random pods one at a time: labels from a
small vocabulary, affinity and anti-affinity terms over hostname and zone with every selector
operator, namespaces by name and by namespace selector, spread constraints with maxSkew,
minDomains and both node inclusion policies, sometimes a nodeSelector. kube-scheduler decides
each before the next is made; one it finds no node for is deleted, so that it is not retried
later against another state. Then wattpack replays the same pods in the same order, each through
its conversion and its filters as the planner asks them (scheduler.fit.pod_rules on a
ClusterState), with the pods kube-scheduler bound before it in place: where kube-scheduler
bound a pod, wattpack must let it onto that node; where it found none, wattpack must find none.

Seeded: WATTPACK_RULES_SEED (default 5) and WATTPACK_RULES_CASES (default 500); CI runs the
default, a wider search sets other seeds and more cases (README)."""

from __future__ import annotations

import copy
import json
import os
import random
import time
from typing import Any

import pytest
from kube import H100, QUICK, Cluster, scheduled_condition

from operators.kube.convert import ClusterObjects, convert
from scheduler.fit.pod_rules import PodRules
from scheduler.fit.state import ClusterState
from scheduler.model import GpuModel, PackingPolicy

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("WATTPACK_RULES_SEED", "5"))
CASES = int(os.environ.get("WATTPACK_RULES_CASES", "500"))
NODES = 10
ZONES = ["z1", "z2", "z3"]
# "group" is rare: the first pod of a group with affinity to its own kind has no partner yet.
LABELS = {"app": ["web", "db", "cache"], "tier": ["fe", "be"], "group": ["g1", "g2", "g3", "g4"]}
RARE = {"group": 0.15}
HOST = "kubernetes.io/hostname"
NAMESPACES = {"ml": {"team": "ml"}, "other": {"team": "other"}}


def _labels(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(v) for k, v in LABELS.items() if rng.random() < RARE.get(k, 0.6)}


def _selector(rng: random.Random) -> dict[str, Any] | None:
    r = rng.random()
    if r < 0.03:
        return None  # selects nothing
    if r < 0.06:
        return {}  # selects everything
    if r < 0.55:
        key = rng.choice(list(LABELS))
        return {"matchLabels": {key: rng.choice(LABELS[key])}}
    key = rng.choice(list(LABELS))
    op = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"])
    expr: dict[str, Any] = {"key": key, "operator": op}
    if op in ("In", "NotIn"):
        expr["values"] = rng.sample(LABELS[key], rng.randint(1, len(LABELS[key])))
    return {"matchExpressions": [expr]}


def _term(rng: random.Random) -> dict[str, Any]:
    term: dict[str, Any] = {"topologyKey": rng.choice([HOST, HOST, "zone"])}
    sel = _selector(rng)
    if sel is not None:
        term["labelSelector"] = sel
    r = rng.random()
    if r < 0.1:
        term["namespaces"] = ["other"]
    elif r < 0.15:
        term["namespaceSelector"] = {"matchLabels": {"team": rng.choice(["ml", "other"])}}
    elif r < 0.2:
        term["namespaceSelector"] = {}  # every namespace
    return term


def _spread(rng: random.Random, key: str) -> dict[str, Any]:
    c: dict[str, Any] = {
        "maxSkew": rng.choice([1, 1, 2]),
        "topologyKey": key,
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": _selector(rng) or {"matchLabels": {"app": "web"}},
    }
    if rng.random() < 0.2:
        c["minDomains"] = rng.randint(1, 4)
    if rng.random() < 0.2:
        c["nodeAffinityPolicy"] = rng.choice(["Honor", "Ignore"])
    if rng.random() < 0.2:
        c["nodeTaintsPolicy"] = rng.choice(["Honor", "Ignore"])
    return c


def _rules(rng: random.Random) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    affinity: dict[str, Any] = {}
    if rng.random() < 0.35:
        terms = [_term(rng) for _ in range(rng.randint(1, 2))]
        affinity["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": terms}
    if rng.random() < 0.45:
        terms = [_term(rng) for _ in range(rng.randint(1, 2))]
        affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": terms}
    if affinity:
        spec["affinity"] = affinity
    if rng.random() < 0.4:
        keys = rng.sample([HOST, "zone"], rng.randint(1, 2))  # one constraint per key
        spec["topologySpreadConstraints"] = [_spread(rng, k) for k in keys]
    if rng.random() < 0.15:
        spec["nodeSelector"] = {"zone": rng.choice(ZONES)}
    return spec


def _verdict(cluster: Cluster, ns: str, name: str, timeout: float = 30) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        raw = json.loads(cluster.core.read_namespaced_pod(name, ns, _preload_content=False).data)
        if raw["spec"].get("nodeName"):
            return raw
        if (scheduled_condition(raw) or {}).get("reason") == "Unschedulable":
            return raw
        time.sleep(0.02)
    raise AssertionError(f"kube-scheduler gave no verdict on {ns}/{name} in {timeout} s")


def test_pod_rules_agree_with_kube_scheduler(cluster: Cluster) -> None:
    rng = random.Random(SEED)
    cluster.set_config(QUICK, [H100])
    cluster.power_domain("facility", None, None)
    names = [f"n{i:02d}" for i in range(NODES)]
    for name in names:
        zone = {"zone": rng.choice(ZONES)} if rng.random() < 0.85 else {}
        taints = [{"key": "spot", "effect": "NoSchedule"}] if rng.random() < 0.15 else None
        cluster.gpu_node(name, "facility", gpus=8, pods=5000, labels=zone, taints=taints)
    cluster.nodes_ready(NODES)
    for ns, labels in NAMESPACES.items():
        cluster.core.create_namespace({"metadata": {"name": ns, "labels": labels}})
    # Pods already running: bound by name, a few with anti-affinity of their own.
    for i in range(3 * NODES):
        spec: dict[str, Any] = {"nodeName": rng.choice(names)}
        if rng.random() < 0.2:
            spec["affinity"] = {
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [_term(rng)]}
            }
        cluster.pod(
            f"run-{i:03d}", ns=rng.choice(["ml", "ml", "other"]), gpus=0, cpu="1m",
            memory="1Mi", scheduler="default-scheduler", labels=_labels(rng), **spec,
        )  # fmt: skip
    cluster.cp.start_kube_scheduler()
    time.sleep(3)  # the scheduler's cache has the running pods before the first case
    decided: list[dict[str, Any]] = []
    tolerate_spot = [{"key": "spot", "operator": "Exists"}]
    for i in range(CASES):
        ns = "ml" if rng.random() < 0.85 else "other"
        name = f"case-{i:04d}"
        cluster.pod(
            name, ns=ns, gpus=0, cpu="1m", memory="1Mi", scheduler="default-scheduler",
            labels=_labels(rng), tolerations=tolerate_spot if rng.random() < 0.5 else [],
            **_rules(rng),
        )  # fmt: skip
        raw = _verdict(cluster, ns, name)
        decided.append(raw)
        if not raw["spec"].get("nodeName"):
            cluster.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)

    nodes = json.loads(cluster.core.list_node(_preload_content=False).data)["items"]
    namespaces = json.loads(cluster.core.list_namespace(_preload_content=False).data)["items"]
    running = [p for p in cluster.pods() if p["metadata"]["name"].startswith("run-")]
    # The cases as wattpack would plan them: its scheduler name, not bound.
    cases = []
    for p in decided:
        q = copy.deepcopy(p)
        q["spec"]["schedulerName"] = "wattpack"
        q["spec"].pop("nodeName", None)
        q["status"] = {"phase": "Pending"}
        cases.append(q)
    model = GpuModel.model_validate(H100)
    objs = ClusterObjects(nodes, running + cases, [], [], [model], namespaces=namespaces)
    conv = convert(objs, exported_at=None)
    assert not conv.problems, conv.problems[:3]
    state = ClusterState.unclassed(conv.snapshot, PackingPolicy())
    state.follow_pod_rules(PodRules(conv.snapshot))
    index = {n.name: i for i, n in enumerate(conv.snapshot.nodes)}
    by_key = {p.key: p for p in conv.snapshot.pods}
    disagreements = []
    bound = unschedulable = 0
    for p in decided:
        md = p["metadata"]
        pod = by_key[f"{md['namespace']}/{md['name']}"]
        admitted = {n for n, i in index.items() if state.model_ok(pod, i) and state.host_ok(pod, i)}
        node = p["spec"].get("nodeName")
        if node:
            bound += 1
            if node not in admitted:
                why = [state.pod_rules.refusal(pod, index[node])] if state.pod_rules else []
                disagreements.append(
                    f"{pod.key}: kube-scheduler bound it to {node}, wattpack {why}"
                )
            state.place(pod, index[node], ())
        else:
            unschedulable += 1
            if admitted:
                why = scheduled_condition(p)["message"]
                disagreements.append(
                    f"{pod.key}: kube-scheduler found no node ({why}), "
                    f"wattpack admits {sorted(admitted)}"
                )
    print(f"{CASES} cases (seed {SEED}): {bound} bound, {unschedulable} unschedulable")
    assert disagreements == [], "\n".join(disagreements[:10])
    assert bound > CASES // 5 and unschedulable > CASES // 10  # both verdicts well exercised
