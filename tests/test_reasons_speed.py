"""The Explainer (scheduler/fit/reasons.py) checks every pending shape against all node classes at
once; it must say exactly what the per-class scan it replaced said: the same reasons, the same
shortfalls in the same order, from the same chosen class. The scan is kept here as the reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from synthetic import instances
from synthetic import live_states as live

from scheduler.baselines import best_fit
from scheduler.fit import outcome
from scheduler.fit.classes import fit_shape
from scheduler.fit.cycle import start_cycle
from scheduler.fit.greedy import greedy_fill, units_of
from scheduler.fit.reasons import Explainer, _short_of
from scheduler.fit.state import ClusterState, Placement
from scheduler.model import ClusterSnapshot, PackingPolicy, Pod, Shortfall, Unplaced

NONE = (None, None, None)

CASES: dict[str, Callable[[], ClusterSnapshot]] = {
    "racks": lambda: instances.make_instance(64, 200, 1, fill_fraction=0.45),
    "racks-full": lambda: instances.make_instance(128, 400, 2, fill_fraction=0.6),
    "no-budget": lambda: instances.make_instance(
        96, 300, 3, fill_fraction=0.45, rack_budget_fraction=None, row_budget_fraction=None
    ),
    "tight-rows": lambda: instances.make_instance(
        128, 400, 4, fill_fraction=0.3, row_budget_fraction=0.6, facility_budget_fraction=0.5
    ),
    "no-budget-full": lambda: instances.make_instance(
        64, 800, 6, fill_fraction=0.95, rack_budget_fraction=None, row_budget_fraction=None
    ),
}
LIVE: dict[str, Callable[[], ClusterSnapshot]] = {
    "live": lambda: live.scattered_state(128, 1),
    "live-256": lambda: live.scattered_state(256, 2),
    "live-no-budget": lambda: live.scattered_state(64, 3, fractions=NONE),
    "live-cut": lambda: live.scattered_state(128, 5, over_budget_racks=2),
    "live-full": lambda: live.scattered_state(64, 7, fill=0.95, fractions=NONE, pending=600),
}
ALL = [pytest.param(name, id=name) for name in CASES] + [
    pytest.param(name, id=name) for name in LIVE
]


def snapshot(name: str) -> ClusterSnapshot:
    return {**CASES, **LIVE}[name]()


def final_state(snap: ClusterSnapshot) -> tuple[ClusterState, list[Pod]]:
    """The state best_fit leaves, and every pending pod."""
    cycle = start_cycle(snap, PackingPolicy())
    cycle.state.weigh_stranding = False
    placed: dict[str, Placement] = {}
    greedy_fill(cycle.state, units_of(cycle.pending), placed)
    return cycle.state, cycle.pending


def dumps(unplaced: list[Unplaced]) -> list[dict]:
    return [u.model_dump() for u in unplaced]


@pytest.mark.parametrize("name", ALL)
def test_best_fit_unplaced_as_before(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = snapshot(name)
    plan = best_fit(snap, PackingPolicy())
    monkeypatch.setattr(outcome, "Explainer", ReferenceExplainer)
    before = best_fit(snap, PackingPolicy())
    assert plan.unplaced
    assert dumps(plan.unplaced) == dumps(before.unplaced)


@pytest.mark.parametrize("name", ALL)
def test_every_pending_pod_as_before(name: str) -> None:
    # Pods that were placed too: against the final state they take the other branches.
    state, pending = final_state(snapshot(name))
    new, old = Explainer(state), ReferenceExplainer(state)
    assert dumps([new.explain(p) for p in pending]) == dumps([old.explain(p) for p in pending])


@pytest.mark.parametrize("name", ["racks", "tight-rows", "live"])
def test_power_ties_go_to_the_larger_domain_name(name: str) -> None:
    state, pending = final_state(snapshot(name))
    for d in state.budget:
        state.budget[d] = state.power[d] + 300  # the same headroom at every level
    new, old = Explainer(state), ReferenceExplainer(state)
    got = [new.explain(p) for p in pending]
    assert dumps(got) == dumps([old.explain(p) for p in pending])
    assert any(s.resource == "power" for u in got for s in u.shortfalls)
    assert any(sum(d in state.budget for d in chain) > 1 for chain in state.chain)


@pytest.mark.parametrize("name", ["no-budget", "no-budget-full"])
def test_a_draw_of_exactly_the_headroom_fits(name: str) -> None:
    state, pending = final_state(snapshot(name))
    node = state.classes[0].nodes[0]
    draws = sorted({state.watts(p, node) for p in pending} - {0})
    for w in draws[:: max(1, len(draws) // 4)]:
        for d in state.power:
            state.budget[d] = state.power[d] + w
        new, old = Explainer(state), ReferenceExplainer(state)
        assert dumps([new.explain(p) for p in pending]) == dumps([old.explain(p) for p in pending])


@pytest.mark.parametrize("name", ["no-budget-full", "racks"])
def test_each_class_is_short_of_what_the_scan_lists(name: str) -> None:
    state, pending = final_state(snapshot(name))
    new, old = Explainer(state), ReferenceExplainer(state)
    ids = [int(c) for c in new._columns.ids]
    rooms = [old._class_best(c) for c in ids]
    # Pods that ask for exactly a class's room: where < and <= part.
    edge = [
        p.model_copy(update={"cpu_milli": b.cpu, "memory_mi_b": b.mem, "gpus": b.node_gpus})
        for p, b in zip([p for p in pending if not p.fractional], rooms, strict=False)
    ] + [
        p.model_copy(update={"gpu_milli": b.residual})
        for p, b in zip([p for p in pending if p.fractional], rooms, strict=False)
        if 0 < b.residual < 1000
    ]
    for p in [*pending, *edge]:
        assert list(new._counts(p)) == [len(old._class_shortfalls(p, c)) for c in ids]


def test_the_cases_reach_every_resource() -> None:
    seen = set()
    for name in CASES:
        state, pending = final_state(snapshot(name))
        explainer = Explainer(state)
        seen |= {s.resource for p in pending for s in explainer.explain(p).shortfalls}
    assert {"gpu", "gpuMilli", "power", "cpuMilli", "memoryMiB", "model", "spread"} <= seen


# -- the per-class scan as it was ------------------------------------------------------------


@dataclass
class _ClassBest:
    node_gpus: int
    node_name: str
    residual: int
    cpu: int
    mem: int


class ReferenceExplainer:
    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._best: dict[int, _ClassBest] = {}
        self._by_shape: dict[tuple, tuple[list[Shortfall], str]] = {}

    def _class_best(self, c: int) -> _ClassBest:
        if c not in self._best:
            s = self.state
            nodes = s.classes[c].nodes
            top = max(nodes, key=lambda i: (s.nfree[i], s.cpu[i]))
            res = max((r for i in nodes for r in s.res[i] if r < 1000), default=0)
            self._best[c] = _ClassBest(
                s.nfree[top],
                s.nodes[top].name,
                max(res, 1000 if s.nfree[top] else 0),
                max(s.cpu[i] for i in nodes),
                max(s.mem[i] for i in nodes),
            )
        return self._best[c]

    def explain(self, pod: Pod, gang_note: str | None = None, gang_missing: int = 0) -> Unplaced:
        shape = fit_shape(pod)
        if shape not in self._by_shape:
            self._by_shape[shape] = self._why(pod)
        shortfalls, reason = self._by_shape[shape]
        if not shortfalls and gang_missing:
            shortfalls = [Shortfall(resource="gang", domain="cluster", amount=gang_missing)]
            reason = ""
        if gang_note:
            reason = f"{gang_note}: {reason}" if reason else gang_note
        return Unplaced(pod=pod.key, reason=reason, shortfalls=shortfalls)

    def _why(self, pod: Pod) -> tuple[list[Shortfall], str]:
        shortfalls = self._shortfalls(pod)
        if shortfalls:
            return shortfalls, self._describe(pod, shortfalls[0])
        if self.state.find(pod) is None:
            if pod.app:
                reason = f"spread: every node with room already runs the most pods of app {pod.app}"
                return [Shortfall(resource="spread", domain="cluster", amount=1)], reason
            reason = "node: no single node has the GPUs, CPU, memory and power headroom at once"
            return [Shortfall(resource="node", domain="cluster", amount=1)], reason
        return [], (
            "outbid: it fits on its own, but the capacity went to higher-value work "
            "(priority-weighted GPU allocation)"
        )

    def _describe(self, pod: Pod, s: Shortfall) -> str:
        if s.resource == "model" and pod.gpu_models:
            return f"model: no schedulable node has GPU model {' or '.join(pod.gpu_models)}"
        if s.resource == "node":
            return "node: no schedulable node takes new work"
        if s.resource == "power":
            budget = self.state.budget[s.domain]
            draw = budget + s.amount
            return f"power: {s.domain} would draw {draw} W > {budget} W budget (short {s.amount} W)"
        if s.resource == "gpu":
            named = pod.gpus - s.amount
            roomiest = max(self._classes(pod), key=lambda c: (self._class_best(c).node_gpus, -c))
            best = self._class_best(roomiest)
            roomier = ""
            if best.node_gpus > named:
                why = [
                    _short_of(x)
                    for x in self._class_shortfalls(pod, roomiest)
                    if x.resource != "gpu"
                ]
                roomier = f"; {best.node_name} has {best.node_gpus} free but {', '.join(why)}"
            return (
                f"gpu: needs {pod.gpus} free healthy GPUs on one node; best node {s.domain} "
                f"has {named}{roomier}"
            )
        if s.resource == "gpuMilli":
            return (
                f"gpuMilli: needs {pod.gpu_milli} of one GPU; the roomiest GPU has "
                f"{pod.gpu_milli - s.amount} left"
            )
        if s.resource == "spread":
            return f"spread: every fitting node already runs the most pods of app {pod.app}"
        unit = "cpuMilli" if s.resource == "cpuMilli" else "MiB"
        return f"{s.resource}: short {s.amount} {unit} on the best node {s.domain}"

    def _class_shortfalls(self, pod: Pod, c: int) -> list[Shortfall]:
        s, best = self.state, self._class_best(c)
        node = s.classes[c].nodes[0]
        out: list[Shortfall] = []
        if pod.fractional and best.residual < pod.gpu_milli:
            out.append(
                Shortfall(
                    resource="gpuMilli", domain=best.node_name, amount=pod.gpu_milli - best.residual
                )
            )
        elif not pod.fractional and best.node_gpus < pod.gpus:
            out.append(
                Shortfall(resource="gpu", domain=best.node_name, amount=pod.gpus - best.node_gpus)
            )
        w = s.watts(pod, node)
        over = [
            (s.power[d] + w - s.budget[d], d)
            for d in s.chain[node]
            if d in s.budget and s.power[d] + w > s.budget[d]
        ]
        if over:
            amount, domain = max(over)
            out.append(Shortfall(resource="power", domain=domain, amount=amount))
        if best.cpu < pod.cpu_milli:
            out.append(
                Shortfall(
                    resource="cpuMilli", domain=best.node_name, amount=pod.cpu_milli - best.cpu
                )
            )
        if best.mem < pod.memory_mi_b:
            out.append(
                Shortfall(
                    resource="memoryMiB", domain=best.node_name, amount=pod.memory_mi_b - best.mem
                )
            )
        return out

    def _classes(self, pod: Pod) -> list[int]:
        s = self.state
        return [
            c.id for c in s.classes if c.nodes and (not pod.gpu_models or c.model in pod.gpu_models)
        ]

    def _gap(self, pod: Pod, c: int) -> int:
        b = self._class_best(c)
        return max(pod.gpu_milli - b.residual if pod.fractional else pod.gpus - b.node_gpus, 0)

    def _shortfalls(self, pod: Pod) -> list[Shortfall]:
        s = self.state
        classes = self._classes(pod)
        if not classes:
            resource = "model" if pod.gpu_models else "node"
            return [Shortfall(resource=resource, domain="cluster", amount=max(pod.gpus, 1))]
        best: list[Shortfall] | None = None
        best_gap = 0
        for c in classes:
            short = self._class_shortfalls(pod, c)
            if not short:
                best = []
                break
            # Fewest resources short; of those, the most of the GPU room the pod asks for.
            if best is None or (len(short), self._gap(pod, c)) < (len(best), best_gap):
                best, best_gap = short, self._gap(pod, c)
        if not best and s.spread_limit(pod) is not None:
            return [Shortfall(resource="spread", domain="cluster", amount=1)]
        return best or []
