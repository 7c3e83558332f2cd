"""Kubernetes objects to the snapshot (operators.kube.convert): what the operator and `export`
both plan from. Objects are written as the API server sends them."""

from __future__ import annotations

from typing import Any

import pytest

from operators.kube.convert import ClusterObjects, convert
from scheduler.model import GpuModel, HealthState, PodKind

H100 = GpuModel(name="H100-SXM", tdp_watts=700, idle_watts=75, memory_mi_b=81920)


def node(name: str, gpus: int = 8, domain: str = "rack-a", **extra: Any) -> dict[str, Any]:
    labels = {"wattpack.io/power-domain": domain, "wattpack.io/gpu-model": "H100-SXM"}
    labels.update(extra.pop("labels", {}))
    alloc = {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": str(gpus)}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": extra.pop("spec", {}),
        "status": {
            "allocatable": alloc,
            "conditions": extra.pop("conditions", [{"type": "Ready", "status": "True"}]),
        },
    }


def pod(
    name: str,
    gpus: int = 1,
    node_name: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    scheduler: str = "wattpack",
    phase: str = "Pending",
    **spec: Any,
) -> dict[str, Any]:
    res: dict[str, Any] = {"requests": {"cpu": "2", "memory": "8Gi"}}
    if gpus:
        res["limits"] = {"nvidia.com/gpu": str(gpus)}
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {"schedulerName": scheduler, "containers": [{"resources": res}], **spec},
        "status": {"phase": phase},
    }
    if node_name:
        body["spec"]["nodeName"] = node_name
    return body


DOMAINS = [
    {"metadata": {"name": "facility"}, "spec": {"budgetWatts": 100000}},
    {"metadata": {"name": "rack-a"}, "spec": {"parent": "facility", "budgetWatts": 9000}},
]


def run(nodes: list, pods: list, gpunodes: list | None = None):  # type: ignore[no-untyped-def]
    return convert(ClusterObjects(nodes, pods, gpunodes or [], DOMAINS, [H100]))


def test_labels_and_annotations_become_the_pod() -> None:
    conv = run(
        [node("n1")],
        [
            pod(
                "inf",
                gpus=0,
                labels={"wattpack.io/kind": "inference", "wattpack.io/app": "chat"},
                annotations={
                    "wattpack.io/gpu-milli": "250",
                    "wattpack.io/max-per-node": "2",
                    "wattpack.io/preemptible": "false",
                    "wattpack.io/gpu-models": "H100-SXM",
                },
                priority=500,
            )
        ],
    )
    (p,) = conv.snapshot.pods
    assert (p.kind, p.gpus, p.gpu_milli, p.app, p.max_per_node) == (
        PodKind.INFERENCE,
        1,
        250,
        "chat",
        2,
    )
    assert (p.preemptible, p.priority, p.gpu_models, p.cpu_milli, p.memory_mi_b) == (
        False,
        500,
        ["H100-SXM"],
        2000,
        8192,
    )
    assert conv.uids["ml/inf"] == "uid-inf"
    n = conv.snapshot.nodes[0]
    assert (n.gpus, n.cpu_milli, n.memory_mi_b, n.power_domain, n.schedulable) == (
        8,
        96000,
        1024 * 1024,
        "rack-a",
        True,
    )


@pytest.mark.parametrize(
    ("labels", "annotations", "gpus", "names"),
    [
        ({"wattpack.io/kind": "train"}, {}, 1, "wattpack.io/kind"),
        ({}, {"wattpack.io/gpu-milli": "abc"}, 0, "wattpack.io/gpu-milli"),
        ({}, {"wattpack.io/gpu-milli": "2000"}, 0, "wattpack.io/gpu-milli"),
        ({}, {"wattpack.io/gpu-milli": "500"}, 2, "wattpack.io/gpu-milli"),
        ({"wattpack.io/gang": "g"}, {}, 1, "wattpack.io/gang-size"),
        ({}, {"wattpack.io/max-per-node": "2"}, 1, "wattpack.io/app"),
        ({}, {"wattpack.io/preemptible": "maybe"}, 1, "wattpack.io/preemptible"),
    ],
)
def test_a_malformed_pending_pod_is_left_out_with_the_field_named(
    labels: dict, annotations: dict, gpus: int, names: str
) -> None:
    conv = run([node("n1")], [pod("bad", gpus, labels=labels, annotations=annotations), pod("ok")])
    assert [p.name for p in conv.snapshot.pods] == ["ok"]
    (problem,) = conv.problems
    assert problem.pod == "ml/bad" and problem.uid == "uid-bad" and not problem.waiting
    assert names in problem.reason


def test_a_gang_waits_until_every_member_exists() -> None:
    g = {"wattpack.io/gang": "g"}
    size3 = {"wattpack.io/gang-size": "3"}
    conv = run([node("n1")], [pod(f"m{i}", labels=g, annotations=size3) for i in range(2)])
    assert conv.snapshot.pods == []
    assert all(p.waiting and "2 of 3" in p.reason for p in conv.problems)
    conv = run([node("n1")], [pod(f"m{i}", labels=g, annotations=size3) for i in range(3)])
    assert len(conv.snapshot.pods) == 3 and not conv.problems


def test_running_pods_keep_their_gpus_and_unannotated_ones_take_free_ones() -> None:
    conv = run(
        [node("n1", gpus=4)],
        [
            pod("a", 2, "n1", annotations={"wattpack.io/gpu-indices": "0,1"}, phase="Running"),
            # kube-scheduler placed this one: no annotation; it gets GPUs nobody else holds.
            pod("b", 1, "n1", scheduler="default-scheduler", phase="Running"),
            # A stale annotation that collides with a is not believed.
            pod("c", 1, "n1", annotations={"wattpack.io/gpu-indices": "1"}, phase="Running"),
            pod("done", 4, "n1", phase="Succeeded"),  # finished pods hold nothing
        ],
    )
    by = {p.name: p for p in conv.snapshot.pods}
    assert set(by) == {"a", "b", "c"}
    assert by["a"].gpu_indices == [0, 1]
    assert sorted(by["b"].gpu_indices + by["c"].gpu_indices) == [2, 3]
    assert not by["b"].preemptible  # another scheduler's pod is never ours to evict
    assert by["a"].preemptible


def test_nodes_wattpack_cannot_use_are_left_out_or_closed() -> None:
    conv = run(
        [
            node("cordoned", spec={"unschedulable": True}),
            node("tainted", spec={"taints": [{"key": "k", "effect": "NoSchedule"}]}),
            node("not-ready", conditions=[{"type": "Ready", "status": "False"}]),
            node("unknown-model", labels={"wattpack.io/gpu-model": "B200"}),
            node("no-domain", domain="nowhere"),
            node("cpu-only", gpus=0),
        ],
        [],
        gpunodes=[
            {
                "metadata": {"name": "no-domain"},
                "status": {
                    "gpus": [
                        {"index": 0, "health": "healthy"},
                        {"index": 3, "health": "degraded", "reasons": ["ecc"]},
                    ]
                },
            }
        ],
    )
    nodes = {n.name: n for n in conv.snapshot.nodes}
    assert set(nodes) == {"cordoned", "tainted", "not-ready", "no-domain"}
    assert not nodes["not-ready"].schedulable
    # Cordoned and tainted nodes are closed by kube-scheduler's filters, through their taints.
    assert [(t.key, t.effect) for t in nodes["cordoned"].taints] == [
        ("node.kubernetes.io/unschedulable", "NoSchedule")
    ]
    assert [(t.key, t.effect) for t in nodes["tainted"].taints] == [("k", "NoSchedule")]
    assert nodes["no-domain"].power_domain == "unassigned"
    assert [(h.index, h.state) for h in nodes["no-domain"].gpu_health] == [
        (3, HealthState.DEGRADED)
    ]
    assert any("B200" in n for n in conv.notes) and any("nowhere" in n for n in conv.notes)


def test_a_running_gang_missing_a_member_is_no_longer_all_or_nothing() -> None:
    g = {"wattpack.io/gang": "g"}
    size = {"wattpack.io/gang-size": "2", "wattpack.io/gpu-indices": "0"}
    conv = run([node("n1")], [pod("m0", 1, "n1", labels=g, annotations=size, phase="Running")])
    (p,) = conv.snapshot.pods
    assert p.gang is None and p.node == "n1"


def test_a_pending_pod_has_waited_since_its_creation_as_of_the_export() -> None:
    made = pod("old")
    made["metadata"]["creationTimestamp"] = "2026-11-24T10:00:00Z"
    unstamped = pod("new")
    objs = ClusterObjects([node("n1")], [made, unstamped], [], DOMAINS, [H100])
    conv = convert(objs, exported_at="2026-11-24T10:31:15Z")
    waits = {p.name: p.waiting_seconds for p in conv.snapshot.pods}
    assert waits == {"old": 1875.0, "new": None}
    # Without the export's own time there is no "now" to count from.
    assert all(p.waiting_seconds is None for p in convert(objs).snapshot.pods)


def _pdb(name: str, selector: dict | None, allowed: int | None, observed: bool = True) -> dict:
    status = {} if allowed is None else {"disruptionsAllowed": allowed}
    if observed:
        status["observedGeneration"] = 1
    return {
        "metadata": {"name": name, "namespace": "ml", "generation": 1},
        "spec": {"selector": selector, "maxUnavailable": 1},
        "status": status,
    }


def test_disruption_budgets_cover_the_running_pods_their_selectors_match() -> None:
    running = [
        pod("web-0", node_name="n1", labels={"app": "web", "tier": "a"}, phase="Running"),
        pod("web-1", node_name="n1", labels={"app": "web", "tier": "b"}, phase="Running"),
        pod("job", node_name="n1", labels={"app": "job"}, phase="Running"),
    ]
    pending = [pod("web-2", labels={"app": "web"})]  # pending: nothing to disrupt
    other_ns = pod("web-x", node_name="n1", labels={"app": "web"}, phase="Running")
    other_ns["metadata"]["namespace"] = "elsewhere"
    pdbs = [
        _pdb("web", {"matchLabels": {"app": "web"}}, 1),
        _pdb(
            "not-a",
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
            0,
        ),
        _pdb("has-tier", {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, 2),
        _pdb("unseen", {"matchLabels": {"app": "job"}}, 3, observed=False),
        _pdb("none", None, 5),  # a null selector selects nothing in policy/v1
        _pdb("all", {}, 4),  # an empty one, every pod of its namespace
    ]
    objs = ClusterObjects([node("n1")], [*running, *pending, other_ns], [], DOMAINS, [H100], pdbs)
    budgets = {b.name: b for b in convert(objs).snapshot.disruption_budgets}
    assert budgets["web"].pods == ["ml/web-0", "ml/web-1"]
    assert budgets["web"].disruptions_allowed == 1
    assert budgets["not-a"].pods == ["ml/job", "ml/web-1"]  # no tier label is not in ["a"]
    assert budgets["has-tier"].pods == ["ml/web-0", "ml/web-1"]
    # Not observed yet by the disruption controller: the Eviction API allows nothing either.
    assert budgets["unseen"].pods == ["ml/job"] and budgets["unseen"].disruptions_allowed == 0
    assert "none" not in budgets
    assert budgets["all"].pods == ["ml/job", "ml/web-0", "ml/web-1"]


def _owned(raw: dict, kind: str, uid: str) -> dict:
    raw["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": kind, "name": uid, "uid": uid, "controller": True}
    ]
    return raw


def _deployment(uid: str, replicas: int, **strategy: Any) -> dict:
    return {
        "metadata": {"name": f"d-{uid}", "namespace": "ml", "uid": uid},
        "spec": {"replicas": replicas, **({"strategy": strategy} if strategy else {})},
    }


def _replicaset(uid: str, deployment: str | None, replicas: int) -> dict:
    raw = {"metadata": {"name": uid, "namespace": "ml", "uid": uid}, "spec": {"replicas": replicas}}
    return _owned(raw, "Deployment", deployment) if deployment else raw


def test_how_a_running_pod_may_move_follows_its_owner() -> None:
    """Surge only where a Deployment's one active ReplicaSet owns an inference replica and the
    strategy allows a surge; restart where any controller recreates the pod; never without one."""
    inference = {"wattpack.io/kind": "inference"}
    training = {"wattpack.io/kind": "training"}
    running = [
        _owned(pod("web", node_name="n1", labels=inference, phase="Running"), "ReplicaSet", "rs-a"),
        _owned(
            pod("nosurge", node_name="n1", labels=inference, phase="Running"), "ReplicaSet", "rs-b"
        ),
        _owned(
            pod("mid", node_name="n1", labels=inference, phase="Running"), "ReplicaSet", "rs-c1"
        ),
        _owned(
            pod("bare-rs", node_name="n1", labels=inference, phase="Running"), "ReplicaSet", "rs-x"
        ),
        _owned(pod("train", node_name="n1", labels=training, phase="Running"), "Job", "job-1"),
        pod("alone", node_name="n1", labels=inference, phase="Running"),
        # A custom controller may not make an evicted pod again: it never moves.
        _owned(pod("custom", node_name="n1", labels=training, phase="Running"), "PyTorchJob", "pt"),
    ]
    deployments = [
        _deployment("d-a", 1),  # default strategy: RollingUpdate, maxSurge 25%
        _deployment("d-b", 1, type="RollingUpdate", rollingUpdate={"maxSurge": 0}),
        _deployment("d-c", 1),  # mid-rollout: two ReplicaSets with replicas
    ]
    replicasets = [
        _replicaset("rs-a", "d-a", 1),
        _replicaset("rs-b", "d-b", 1),
        _replicaset("rs-c1", "d-c", 1),
        _replicaset("rs-c2", "d-c", 1),
        _replicaset("rs-x", None, 1),
    ]
    # A Deployment an autoscaler scales does not surge: the autoscaler would undo the replica.
    running.append(
        _owned(
            pod("scaled", node_name="n1", labels=inference, phase="Running"), "ReplicaSet", "rs-h"
        )
    )
    deployments.append(_deployment("d-h", 1))
    replicasets.append(_replicaset("rs-h", "d-h", 1))
    hpa = {
        "metadata": {"name": "h", "namespace": "ml"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d-d-h"}},
    }
    objs = ClusterObjects(
        [node("n1")], running, [], DOMAINS, [H100], [], replicasets, deployments, [hpa]
    )
    conv = convert(objs)
    how = {p.name: p.move_by for p in conv.snapshot.pods}
    assert how == {
        "web": "surge",
        "nosurge": "restart",
        "mid": "restart",
        "bare-rs": "restart",
        "train": "restart",
        "alone": "none",
        "custom": "none",
        "scaled": "restart",
    }
    assert conv.owners["ml/train"] == "job-1" and "ml/alone" not in conv.owners
    assert list(conv.scalers) == ["ml/web"] and conv.scalers["ml/web"].name == "d-d-a"


def test_placement_rules_and_gates_are_read_as_kube_scheduler_reads_them() -> None:
    spec = {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"pool": "h100"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
    }
    spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] = [
        {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}
    ]
    gated = pod("gated", schedulingGates=[{"name": "example.com/quota"}])
    bad = pod(
        "bad",
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "Near"}]}
                    ]
                }
            }
        },
    )
    conv = run([node("n1", labels={"pool": "h100", "zone": "a"})], [pod("p", **spec), gated, bad])
    pods = {p.name: p for p in conv.snapshot.pods}
    assert set(pods) == {"p"}  # a gated pod is not planned (nor reported): it waits
    p = pods["p"]
    assert p.node_selector == {"pool": "h100"} and p.tolerations[0].operator == "Exists"
    assert p.node_affinity is not None and p.node_affinity[0].match_expressions[0].values == ["a"]
    (preferred,) = p.preferred_node_affinity
    assert preferred.weight == 30 and preferred.preference.match_expressions[0].key == "disk"
    (problem,) = conv.problems
    assert problem.pod == "ml/bad" and problem.reason.startswith("spec.affinity.nodeAffinity:")


def test_other_resources_and_host_ports_are_read_from_nodes_and_containers() -> None:
    n = node("n1")
    n["status"]["allocatable"].update({"example.com/rdma": "2", "hugepages-2Mi": "1Gi"})
    p = pod("p")
    c = p["spec"]["containers"][0]
    c["resources"]["limits"] = {**c["resources"].get("limits", {}), "example.com/rdma": "1"}
    c["resources"]["requests"]["hugepages-2Mi"] = "512Mi"
    c["ports"] = [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]
    conv = run([n], [p])
    (node_,) = conv.snapshot.nodes
    assert node_.resources == {"example.com/rdma": 2, "hugepages-2Mi": 2**30}
    (pod_,) = conv.snapshot.pods
    assert pod_.resources == {"example.com/rdma": 1, "hugepages-2Mi": 512 * 2**20}
    assert [(h.port, h.protocol) for h in pod_.host_ports] == [(8080, "TCP")]


def test_pod_affinity_and_spread_are_read_and_namespaces_labelled_only_where_selected() -> None:
    term = {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}
    by_ns = {**term, "namespaceSelector": {"matchLabels": {"team": "ml"}}}
    spread = [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
         "minDomains": 2, "nodeTaintsPolicy": "Honor"},
        # Soft: weighs only in kube-scheduler's scores, so it is not a rule here.
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
         "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {}},
    ]  # fmt: skip
    ruled = pod(
        "ruled",
        labels={"app": "web"},
        affinity={
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]},
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [by_ns],
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "podAffinityTerm": term}
                ],
            },
        },
        topologySpreadConstraints=spread,
    )
    bad = pod("bad", topologySpreadConstraints=[{"maxSkew": 0, "topologyKey": "zone"}])
    running = pod("run", node_name="n1", labels={"app": "db"}, scheduler="default-scheduler")
    namespaces = [
        {"metadata": {"name": "ml", "labels": {"team": "ml"}}},
        {"metadata": {"name": "other"}},
    ]
    objs = ClusterObjects(
        [node("n1")], [ruled, bad, running], [], DOMAINS, [H100], namespaces=namespaces
    )
    conv = convert(objs)
    pods = {p.name: p for p in conv.snapshot.pods}
    p = pods["ruled"]
    assert p.labels == {"app": "web"} and pods["run"].labels == {"app": "db"}
    assert [t.topology_key for t in p.pod_affinity] == ["zone"]
    (anti,) = p.pod_anti_affinity
    assert anti.namespace_selector is not None and anti.namespace_selector.match_labels == {
        "team": "ml"
    }
    (c,) = p.topology_spread
    assert (c.max_skew, c.min_domains, c.node_taints_policy, c.node_affinity_policy) == (
        1, 2, "Honor", "Honor",
    )  # fmt: skip
    assert conv.snapshot.namespace_labels == {"ml": {"team": "ml"}, "other": {}}
    (problem,) = conv.problems
    assert problem.pod == "ml/bad" and problem.reason.startswith("spec.topologySpreadConstraints:")
    # Without a namespace selector anywhere, namespaces are not read into the snapshot.
    plain = [pod("plain", labels={"app": "x"})]
    objs = ClusterObjects([node("n1")], plain, [], DOMAINS, [H100], namespaces=namespaces)
    assert convert(objs).snapshot.namespace_labels == {}
