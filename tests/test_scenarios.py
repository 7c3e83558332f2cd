"""Scenario files: a snapshot, a policy and what the plan must do, checked against the planner.

Every file in tests/scenarios holds `snapshot:` and either `policy:` + `expect:` or a list of
`cases:` (each a name, an optional policy and an expect) that share the snapshot. Every plan must
also pass the independent feasibility checker and explain every pod it leaves pending. `xfail:`
(on the file or a case) names a known planner bug that the scenario reproduces.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import policy

from scheduler.model import ClusterSnapshot, Plan
from scheduler.planner import plan
from scheduler.verify import check_plan, explanation_problems, final_placement

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.yaml"))


def _cases() -> list[Any]:
    out = []
    for path in SCENARIOS:
        doc = yaml.safe_load(path.read_text())
        cases = doc.get("cases") or [{"policy": doc.get("policy"), "expect": doc["expect"]}]
        for case in cases:
            name = f"{path.stem}-{case['name']}" if "name" in case else path.stem
            # A known planner bug: strict, so the fix shows up as a failure to remove the mark.
            xfail = case.get("xfail") or doc.get("xfail")
            marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
            args = (doc["snapshot"], case.get("policy") or {}, case["expect"])
            out.append(pytest.param(*args, id=name, marks=marks))
    return out


def _key(name: str) -> str:
    return name if "/" in name else f"default/{name}"


def _keys(names: list[str]) -> set[str]:
    return {_key(n) for n in names}


def test_every_required_scenario_is_there():
    assert len(SCENARIOS) >= 7


@pytest.mark.parametrize(("snapshot_doc", "policy_doc", "expect"), _cases())
def test_scenario(snapshot_doc: dict, policy_doc: dict, expect: dict):
    snap = ClusterSnapshot.model_validate(snapshot_doc)
    pol = policy(**policy_doc)
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    assert explanation_problems(snap, result) == []
    check_expectations(snap, result, expect)


def check_expectations(snap: ClusterSnapshot, result: Plan, expect: dict[str, Any]) -> None:
    unknown = set(expect) - set(_CHECKS)
    assert not unknown, f"unknown expectations {sorted(unknown)}; known: {sorted(_CHECKS)}"
    for name, want in expect.items():
        _CHECKS[name](snap, result, want)


def _bound(snap, result, want):
    bound = {b.pod for b in result.bindings}
    assert _keys(want) <= bound, f"not bound: {sorted(_keys(want) - bound)}; plan: {result}"


def _bound_count(snap, result, want):
    assert len(result.bindings) == want, result.bindings


def _pending(snap, result, want):
    bound = {b.pod for b in result.bindings}
    assert not _keys(want) & bound, f"bound but should wait: {sorted(_keys(want) & bound)}"


def _pending_count(snap, result, want):
    bound = {b.pod for b in result.bindings}
    assert sum(p.node is None and p.key not in bound for p in snap.pods) == want


def _evicted(snap, result, want):
    assert {e.pod for e in result.evictions} == _keys(want)


def _unused_gpus(snap, result, want):
    used = {(n, i) for n, idx in final_placement(snap, result).values() for i in idx}
    for node, indices in want.items():
        assert not used & {(node, i) for i in indices}, f"{node} GPUs {indices} in use: {used}"


def _same_gpu(snap, result, want):
    final = final_placement(snap, result)
    for group in want:
        gpus = {(final[k][0], final[k][1]) for k in _keys(group)}
        assert len(gpus) == 1, f"{group} spread over {gpus}"


def _on_nodes(snap, result, want):
    final = final_placement(snap, result)
    for pod, nodes in want.items():
        assert final[_key(pod)][0] in nodes, f"{pod} on {final[_key(pod)][0]}, want {nodes}"


def _app_per_node(snap, result, want):
    pods = {p.key: p for p in snap.pods}
    count = Counter((pods[k].app, n) for k, (n, _) in final_placement(snap, result).items())
    for app, per_node in want.items():
        got = {n: c for (a, n), c in count.items() if a == app}
        assert got == per_node, f"app {app}: {got}, want {per_node}"


def _reason_mentions(snap, result, want):
    reasons = {u.pod: u.reason for u in result.unplaced}
    for pod, word in want.items():
        assert word.lower() in reasons.get(_key(pod), "").lower(), (pod, reasons.get(_key(pod)))


def _reason_lacks(snap, result, want):
    reasons = {u.pod: u.reason for u in result.unplaced}
    for pod, word in want.items():
        assert word.lower() not in reasons.get(_key(pod), "").lower(), (pod, reasons.get(_key(pod)))


_CHECKS = {
    "bound": _bound,
    "boundCount": _bound_count,
    "pending": _pending,
    "pendingCount": _pending_count,
    "evicted": _evicted,
    "unusedGpus": _unused_gpus,
    "sameGpu": _same_gpu,
    "onNodes": _on_nodes,
    "appPerNode": _app_per_node,
    "reasonMentions": _reason_mentions,
    "reasonLacks": _reason_lacks,
}
