"""Inter-pod affinity, anti-affinity and topology spread in the planner (scheduler.fit.pod_rules,
scheduler.planner.rules_first) and in the independent checker (scheduler.verify.pod_rules).
kube-scheduler itself is the oracle for the filters in tests/e2e/test_pod_rules_against_kube_
scheduler.py; here: what the planner does with them."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from builders import bind, node, pod, policy, snapshot
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from scheduler.model import ClusterSnapshot
from scheduler.planner.cycle import plan
from scheduler.verify.feasibility import check_plan

HOST = "kubernetes.io/hostname"


def _node(name: str, zone: str | None = None, gpus: int = 4, **kw: Any) -> dict[str, Any]:
    labels = {HOST: name, **({"zone": zone} if zone else {})}
    return {**node(name, gpus, **kw), "labels": labels}


def _term(key: str, **labels: str) -> dict[str, Any]:
    return {"labelSelector": {"matchLabels": labels}, "topologyKey": key}


def _with(p: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**p, **fields}


def _placed(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {b.pod.split("/")[1]: b.node for b in result.bindings}


def test_anti_affinity_puts_one_replica_per_node_and_the_rest_say_why():
    nodes = [_node(f"n{i}") for i in range(3)]
    anti = [_term(HOST, app="web")]
    pods = [
        _with(pod(f"web-{i}", "inference"), labels={"app": "web"}, podAntiAffinity=anti)
        for i in range(5)
    ]
    snap = snapshot(nodes, pods)
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    assert sorted(_placed(result).values()) == ["n0", "n1", "n2"]
    assert len(result.unplaced) == 2
    for u in result.unplaced:
        assert (
            u.reason == "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
        )


def test_a_running_pods_anti_affinity_keeps_the_pods_it_selects_off_its_node():
    nodes = [_node("n0"), _node("n1")]
    guard = _with(
        pod("guard", on=("n0", [0])),
        labels={"app": "guard"},
        podAntiAffinity=[_term(HOST, app="noisy")],
    )
    noisy = [_with(pod(f"noisy-{i}"), labels={"app": "noisy"}) for i in range(6)]
    snap = snapshot(nodes, [guard, *noisy])
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    # n0 has three free GPUs, but the guard's rule keeps noisy pods off it.
    assert set(_placed(result).values()) == {"n1"}
    assert len(result.bindings) == 4
    assert all("existing pods anti-affinity" in u.reason for u in result.unplaced)


def test_affinity_follows_its_partner_and_a_self_affine_group_starts_anywhere_then_stays():
    nodes = [_node(n, f"z{n[0]}", 8) for n in ("a0", "a1", "b0", "b1")]
    db = _with(pod("db", on=("b1", [0])), labels={"app": "db"})
    near_db = [
        _with(pod(f"api-{i}", gpus=2), labels={"app": "api"}, podAffinity=[_term("zone", app="db")])
        for i in range(3)
    ]
    # A group with affinity to itself: the first goes anywhere, the others into its zone.
    group = [
        _with(pod(f"g-{i}"), labels={"team": "g"}, podAffinity=[_term("zone", team="g")])
        for i in range(3)
    ]
    lonely = _with(pod("lonely"), labels={"app": "x"}, podAffinity=[_term("zone", app="nobody")])
    snap = snapshot(nodes, [db, *near_db, *group, lonely])
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    where = _placed(result)
    zone = {n["name"]: n["labels"]["zone"] for n in nodes}
    assert {zone[where[f"api-{i}"]] for i in range(3)} == {"zb"}
    assert len({zone[where[f"g-{i}"]] for i in range(3)}) == 1
    assert "lonely" not in where
    (why,) = [u.reason for u in result.unplaced if u.pod == "default/lonely"]
    # Every node is counted once, by its first refusal (a full one: NodeResourcesFit's).
    assert why.startswith("0/4 nodes are available: ") and "didn't match pod affinity rules" in why
    counts = [int(part.split()[0]) for part in why.split(": ", 1)[1].rstrip(".").split(", ")]
    assert sum(counts) == 4


def test_zone_spread_keeps_the_skew_and_min_domains_counts_missing_zones_as_empty():
    nodes = [_node("a0", "za", 8), _node("b0", "zb", 8), _node("nozone", None, 8)]
    spread = [{"maxSkew": 1, "topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "s"}}}]
    pods = [_with(pod(f"s-{i}"), labels={"app": "s"}, topologySpread=spread) for i in range(6)]
    snap = snapshot(nodes, pods)
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    assert Counter(_placed(result).values()) == {"a0": 3, "b0": 3}  # never the node without zone
    # With minDomains 3 and only two zones, the least is taken as 0: at most maxSkew per zone.
    spread3 = [{**spread[0], "minDomains": 3}]
    pods = [_with(pod(f"s-{i}"), labels={"app": "s"}, topologySpread=spread3) for i in range(6)]
    snap = snapshot(nodes, pods)
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    assert Counter(_placed(result).values()) == {"a0": 1, "b0": 1}
    assert {u.reason for u in result.unplaced} == {
        "0/3 nodes are available: 2 node(s) didn't match pod topology spread constraints, "
        "1 node(s) didn't match pod topology spread constraints (missing required label)."
    }


def test_the_checker_reads_the_rules_itself():
    nodes = [_node("a0", "za"), _node("b0", "zb")]
    web = _with(pod("web-0", on=("a0", [0])), labels={"app": "web"})
    anti = _with(pod("anti"), labels={"app": "web"}, podAntiAffinity=[_term(HOST, app="web")])
    near = _with(pod("near"), podAffinity=[_term("zone", app="web")])
    spread = [
        {"maxSkew": 1, "topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "web"}}}
    ]
    spreader = _with(pod("spreader"), labels={"app": "web"}, topologySpread=spread)
    snap = snapshot(nodes, [web, anti, near, spreader])
    bad = plan(snap, policy()).model_copy(
        update={
            "bindings": [bind("anti", "a0", 1), bind("near", "b0", 0), bind("spreader", "a0", 2)]
        }
    )
    problems = check_plan(snap, policy(), bad)
    assert any("default/anti on a0" in p and "anti-affinity" in p for p in problems), problems
    assert any("default/near on b0" in p and "affinity is not met" in p for p in problems)
    assert any("default/spreader on a0" in p and "maxSkew" in p for p in problems)
    good = bad.model_copy(
        update={
            "bindings": [bind("anti", "b0", 1), bind("near", "a0", 1), bind("spreader", "a0", 2)]
        }
    )
    # anti on b0 and web-0 on a0: one web pod per zone, so spreader may go to a0.
    assert check_plan(snap, policy(), good) == []


def test_pods_under_the_rules_are_not_moved_and_nothing_else_moves_into_their_way():
    """Migration moves work off a degraded GPU; a pod whose place depends on others stays."""
    nodes = [_node("n0", health={0: "degraded"}), _node("n1")]
    ruled = _with(
        pod("ruled", "inference", on=("n0", [0]), milli=500),
        labels={"app": "web"},
        podAntiAffinity=[_term(HOST, app="web")],
    )
    plain = pod("plain", "training", on=("n0", [0]), milli=500)
    snap = snapshot(nodes, [ruled, plain])
    result = plan(snap, policy())
    assert check_plan(snap, policy(), result) == []
    assert {m.pod for m in result.moves} == {"default/plain"}


_KEYS = ["app", "tier"]
_VALUES = ["a", "b", "c"]


def _selector(rng: random.Random) -> dict[str, Any]:
    key = rng.choice(_KEYS)
    if rng.random() < 0.6:
        return {"matchLabels": {key: rng.choice(_VALUES)}}
    op = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"])
    values = [rng.choice(_VALUES)] if op in ("In", "NotIn") else []
    return {"matchExpressions": [{"key": key, "operator": op, "values": values}]}


def _rules(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    key = lambda: rng.choice([HOST, "zone"])  # noqa: E731
    if rng.random() < 0.3:
        out["podAffinity"] = [{"labelSelector": _selector(rng), "topologyKey": key()}]
    if rng.random() < 0.4:
        out["podAntiAffinity"] = [{"labelSelector": _selector(rng), "topologyKey": key()}]
    if rng.random() < 0.3:
        c = {"maxSkew": rng.randint(1, 2), "topologyKey": key(), "labelSelector": _selector(rng)}
        if rng.random() < 0.3:
            c["minDomains"] = rng.randint(1, 4)
        out["topologySpread"] = [c]
    return out


@st.composite
def _ruled(draw) -> ClusterSnapshot:  # type: ignore[no-untyped-def]
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    nodes = [
        _node(f"n{i}", rng.choice(["za", "zb", "zc", None]), rng.choice([2, 4, 8]))
        for i in range(rng.randint(2, 6))
    ]
    pods: list[dict[str, Any]] = []
    for i in range(rng.randint(0, 6)):  # running
        n = rng.choice(nodes)
        labels = {k: rng.choice(_VALUES) for k in _KEYS if rng.random() < 0.6}
        extra = {"podAntiAffinity": _rules(rng).get("podAntiAffinity", [])}
        pods.append(_with(pod(f"r{i}", on=(n["name"], [i % n["gpus"]]), milli=100), **extra))
        pods[-1]["labels"] = labels
    for i in range(rng.randint(1, 14)):
        labels = {k: rng.choice(_VALUES) for k in _KEYS if rng.random() < 0.6}
        kind = rng.choice(["training", "inference"])
        size = rng.choice([1, 1, 2])
        if rng.random() < 0.15:
            pods += [
                _with(pod(f"g{i}-{j}", kind, size, gang=(f"g{i}", 2)), labels=labels, **_rules(rng))
                for j in range(2)
            ]
        else:
            pods.append(
                _with(
                    pod(f"p{i}", kind, size, priority=rng.randint(0, 2)),
                    labels=labels,
                    **_rules(rng),
                )
            )
    return snapshot(nodes, pods)


@seed(5)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ruled())
def test_every_plan_keeps_to_the_rules_on_random_clusters(snap):  # type: ignore[no-untyped-def]
    pol = policy(solver={"timeLimitSeconds": 1})
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    assert result.summary.placed_pods == len(result.bindings)
    pending = [p for p in snap.pods if p.node is None]
    assert result.summary.pending_pods == len(pending)
    assert {b.pod for b in result.bindings} | {u.pod for u in result.unplaced} == {
        p.key for p in pending
    }
