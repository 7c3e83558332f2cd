"""kube-scheduler's node filters in the core: taints and tolerations, nodeSelector and required
node affinity. Every planner path keeps to them (the independent checker reads them afresh),
and a pod they keep out says so as kube-scheduler does."""

from __future__ import annotations

import random

import pytest
from builders import gang, node, pod, policy, snapshot
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from scheduler.fit.filters import refusal
from scheduler.model import Node, Pod
from scheduler.model.node_rules import Requirement, Taint, Toleration
from scheduler.planner import plan
from scheduler.verify import check_plan

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def _node(name: str, gpus: int = 4, labels=None, taints=(), **kw) -> dict:  # type: ignore[no-untyped-def]
    return {**node(name, gpus, **kw), "labels": labels or {}, "taints": list(taints)}


def _pod(name: str, gpus: int = 1, tolerations=(), selector=None, affinity=None, **kw) -> dict:  # type: ignore[no-untyped-def]
    p = {**pod(name, gpus=gpus, **kw), "tolerations": list(tolerations)}
    if selector:
        p["nodeSelector"] = selector
    if affinity is not None:
        p["nodeAffinity"] = affinity
    return p


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        (
            {"key": "k", "operator": "Exists"},
            {"key": "k", "value": "v", "effect": "NoSchedule"},
            True,
        ),
        ({"operator": "Exists"}, {"key": "any", "effect": "NoExecute"}, True),
        ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
        ({"key": "k", "value": "w"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, False),
        (
            {"key": "k", "operator": "Exists", "effect": "NoExecute"},
            {"key": "k", "effect": "NoSchedule"},
            False,
        ),
        ({"key": "other", "operator": "Exists"}, {"key": "k", "effect": "NoSchedule"}, False),
    ],
)
def test_tolerations_match_taints_as_kubernetes_matches_them(toleration, taint, tolerated):  # type: ignore[no-untyped-def]
    assert Toleration.model_validate(toleration).tolerates(Taint.model_validate(taint)) is tolerated


@pytest.mark.parametrize(
    ("operator", "values", "labels", "matches"),
    [
        ("In", ["a", "b"], {"k": "b"}, True),
        ("In", ["a"], {}, False),
        ("NotIn", ["a"], {}, True),
        ("NotIn", ["a"], {"k": "a"}, False),
        ("Exists", [], {"k": ""}, True),
        ("DoesNotExist", [], {"k": "x"}, False),
        ("Gt", ["7"], {"k": "8"}, True),
        ("Gt", ["7"], {"k": "7"}, False),
        ("Lt", ["7"], {"k": "x"}, False),  # not an integer: no match
    ],
)
def test_selector_requirements(operator, values, labels, matches):  # type: ignore[no-untyped-def]
    r = Requirement(key="k", operator=operator, values=values)
    assert r.matches(labels) is matches


def test_a_tainted_gpu_pool_takes_only_the_pods_that_tolerate_it_and_the_rest_say_why():
    snap = snapshot(
        [
            _node("gpu-a", 8, labels={"pool": "h100"}, taints=[GPU_TAINT]),
            _node("gpu-b", 8, labels={"pool": "h100"}, taints=[GPU_TAINT]),
            _node("plain", 4, labels={"pool": "cpu-ish"}),
        ],
        [
            _pod("tolerant", 8, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]),
            *gang("g", 2, gpus=4),
            _pod("picky", 1, selector={"pool": "h100"}),
            _pod(
                "pinned",
                1,
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}],
                affinity=[
                    {
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": ["gpu-b"]}
                        ]
                    }
                ],
            ),
        ],
    )
    pol = policy()
    result = plan(snap, pol)
    bound = {b.pod.split("/")[1]: b.node for b in result.bindings}
    assert bound["tolerant"] in ("gpu-a", "gpu-b") and bound["pinned"] == "gpu-b"
    assert bound.get("g-0") == bound.get("g-1") == "plain" or "g-0" not in bound
    reasons = {u.pod.split("/")[1]: u.reason for u in result.unplaced}
    assert reasons["picky"] == (
        "0/3 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: present}, "
        "1 node(s) didn't match Pod's node affinity/selector."
    )
    assert check_plan(snap, pol, result) == []


def test_the_checker_reads_the_filters_itself():
    snap = snapshot([_node("a", 4, taints=[GPU_TAINT])], [_pod("p")])
    from builders import bind, plan_of

    bad = plan_of([bind("p", "a", 0)])
    assert any(
        "has taint nvidia.com/gpu=present:NoSchedule" in p for p in check_plan(snap, policy(), bad)
    )


def test_preemption_and_moves_keep_to_the_filters():
    """A high-priority pod that may only go to pool x preempts there, not on the node whose
    victims it could not use; a pod on a failed GPU moves only where it is tolerated."""
    snap = snapshot(
        [
            _node("x1", 2, labels={"pool": "x"}),
            _node("y1", 2, labels={"pool": "y"}),
            _node("t1", 2, labels={"pool": "x"}, taints=[GPU_TAINT], health={0: "failed"}),
        ],
        [
            _pod("low-x", 2, on=("x1", [0, 1])),
            _pod("low-y", 2, on=("y1", [0, 1])),
            _pod("urgent", 2, priority=1000, selector={"pool": "x"}),
            _pod(
                "on-failed",
                1,
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}],
                on=("t1", [0]),
            ),
        ],
    )
    pol = policy(preemption=True)
    result = plan(snap, pol)
    assert [e.pod for e in result.evictions] == ["default/low-x"]
    assert {b.pod: b.node for b in result.bindings} == {"default/urgent": "x1"}
    assert [(m.pod, m.to_node) for m in result.moves] == [("default/on-failed", "t1")]
    assert check_plan(snap, pol, result) == []


_KEYS = ["pool", "zone"]
_VALUES = ["a", "b"]


@st.composite
def _filtered(draw):  # type: ignore[no-untyped-def]
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    nodes = []
    for i in range(rng.randint(2, 6)):
        taints = [GPU_TAINT] if rng.random() < 0.4 else []
        if rng.random() < 0.2:
            taints.append({"key": "dedicated", "value": rng.choice(_VALUES), "effect": "NoExecute"})
        labels = {k: rng.choice(_VALUES) for k in _KEYS if rng.random() < 0.8}
        n = _node(f"n{i}", rng.choice([2, 4, 8]), labels=labels, taints=taints)
        if rng.random() < 0.5:
            n["resources"] = {"example.com/rdma": rng.randint(0, 2)}
        nodes.append(n)
    pods = []
    for i in range(rng.randint(1, 10)):
        tol = []
        if rng.random() < 0.5:
            tol.append({"key": "nvidia.com/gpu", "operator": "Exists"})
        if rng.random() < 0.2:
            tol.append({"key": "dedicated", "value": rng.choice(_VALUES)})
        sel = {k: rng.choice(_VALUES) for k in _KEYS if rng.random() < 0.3}
        aff = None
        if rng.random() < 0.3:
            op = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"])
            values = [rng.choice(_VALUES)] if op in ("In", "NotIn") else []
            aff = [
                {"matchExpressions": [{"key": rng.choice(_KEYS), "operator": op, "values": values}]}
            ]
        size = rng.choice([1, 1, 2, 4])
        extra = {"resources": {"example.com/rdma": 1}} if rng.random() < 0.25 else {}
        if rng.random() < 0.2:
            extra["hostPorts"] = [{"port": rng.choice([80, 443])}]
        if rng.random() < 0.2:
            pods += [
                {
                    **_pod(
                        f"g{i}-{j}",
                        size,
                        tolerations=tol,
                        selector=sel,
                        affinity=aff,
                        gang=(f"g{i}", 2),
                    ),
                    **extra,
                }
                for j in range(2)
            ]
        else:
            pods.append(
                {
                    **_pod(
                        f"p{i}",
                        size,
                        tolerations=tol,
                        selector=sel,
                        affinity=aff,
                        priority=rng.randint(0, 2),
                    ),
                    **extra,
                }
            )
    return snapshot(nodes, pods)


@seed(14)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_filtered())
def test_every_plan_keeps_to_the_filters_and_every_refusal_is_real(snap):  # type: ignore[no-untyped-def]
    pol = policy(solver={"timeLimitSeconds": 1})
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    nodes = {n.name: n for n in snap.nodes}
    pods: dict[str, Pod] = {p.key: p for p in snap.pods}
    for u in result.unplaced:
        if u.reason.startswith("0/"):
            # Every node the line counts as refusing does refuse.
            p = pods[u.pod]
            refusing = sum(1 for n in nodes.values() if refusal(p, n) is not None)
            assert f"0/{len(nodes)} nodes are available" in u.reason
            assert refusing > 0 or ("Insufficient" in u.reason and p.resources)


def test_a_snapshot_without_filters_plans_as_before():
    """No labels, taints or rules: the filters say nothing and take no time (trivial)."""
    from scheduler.fit.filters import NodeFilters

    snap = snapshot([node("a", 4)], [pod("p")])
    assert NodeFilters(snap).trivial
    assert isinstance(snap.nodes[0], Node)


def test_other_resources_are_fitted_as_kube_scheduler_fits_them():
    """NodeResourcesFit for a resource beyond GPUs, CPU and memory (an RDMA device): only the
    node that has it free takes a pod that asks for it; the second such pod says what is short,
    and the checker counts it itself."""
    rdma = "example.com/rdma"
    snap = snapshot(
        [{**node("with", 4), "resources": {rdma: 1}}, node("without", 4)],
        [
            {**pod("r1"), "resources": {rdma: 1}},
            {**pod("r2"), "resources": {rdma: 1}},
            pod("plain"),
        ],
    )
    pol = policy()
    result = plan(snap, pol)
    bound = {b.pod.split("/")[1]: b.node for b in result.bindings}
    assert sorted(bound) in (["plain", "r1"], ["plain", "r2"])
    assert "with" in {bound.get("r1"), bound.get("r2")}
    (waiting,) = result.unplaced
    assert waiting.reason == "0/2 nodes are available: 2 Insufficient example.com/rdma."
    assert check_plan(snap, pol, result) == []
    from builders import bind, plan_of

    both = plan_of([bind("r1", "with", 0), bind("r2", "with", 1)])
    assert any(f"{rdma} 2 > allocatable 1" in p for p in check_plan(snap, pol, both))


def test_host_ports_keep_two_pods_that_bind_one_off_one_node():
    """NodePorts: one port, TCP 8080 on every address, binds once per node; a pod binding it
    on one address only conflicts as well, UDP 8080 does not."""
    port = [{"port": 8080}]
    snap = snapshot(
        [node("a", 4), node("b", 4)],
        [
            {**pod("p1"), "hostPorts": port},
            {**pod("p2"), "hostPorts": port},
            {**pod("p3"), "hostPorts": [{"port": 8080, "hostIp": "10.0.0.1"}]},
            {**pod("udp"), "hostPorts": [{"port": 8080, "protocol": "UDP"}]},
        ],
    )
    pol = policy()
    result = plan(snap, pol)
    bound = {b.pod.split("/")[1]: b.node for b in result.bindings}
    assert "udp" in bound and len(bound) == 3
    tcp = [n for p, n in bound.items() if p != "udp"]
    assert sorted(tcp) == ["a", "b"]
    (waiting,) = result.unplaced
    assert waiting.reason == (
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."
    )
    assert check_plan(snap, pol, result) == []
    from builders import bind, plan_of

    clash = plan_of([bind("p1", "a", 0), bind("p3", "a", 1)])
    assert any("both bind port TCP/8080" in p for p in check_plan(snap, pol, clash))


def test_a_pod_every_node_refuses_reads_as_kube_scheduler_counts_it():
    """Filters on some nodes, capacity on the rest: one line that counts every node by why,
    as kube-scheduler's does, then what falls short."""
    tolerate = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    nodes = [_node(f"t{i}", 8, taints=[GPU_TAINT]) for i in range(3)]
    nodes += [_node(f"open{i}", 4) for i in range(2)]
    running = [
        {
            **_pod(f"r{i}", 2, tolerations=tolerate, preemptible=False),
            "node": f"open{i}",
            "gpuIndices": [0, 1],
        }
        for i in range(2)
    ]
    snap = snapshot(nodes, [*running, _pod("big", 4), _pod("small", 1)])
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    reasons = {u.pod.split("/")[1]: u.reason for u in result.unplaced}
    assert reasons["big"].startswith(
        "0/5 nodes are available: 3 node(s) had untolerated taint {nvidia.com/gpu: present}, "
        "2 Insufficient nvidia.com/gpu. gpu: needs 4 free healthy GPUs on one node;"
    ), reasons["big"]
    # Room on the open nodes: a pod that fits one is placed, never told the cluster is full.
    assert "small" not in reasons
