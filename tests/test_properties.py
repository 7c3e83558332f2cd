"""Properties of the planner on random small clusters.

Every plan passes the independent feasibility checker and reports totals that agree with it; on
tiny instances the plan is optimal, against an exhaustive search written here from scratch (with
running pods and preemption too, in the slow tests).
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from builders import H100, L40, domain, node, plan_of, pod, policy, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from soundness import assert_carried_out_safely

from scheduler.baselines import best_fit
from scheduler.model import Binding, ClusterSnapshot, Eviction, PackingPolicy, Plan, Pod, PodKind
from scheduler.planner import plan
from scheduler.planner.moves import plan_moves
from scheduler.power import budgets, domain_chain, domain_power, idle_watts_by_domain, pod_watts
from scheduler.verify import (
    check_plan,
    explanation_problems,
    final_placement,
    gpu_allocation,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KINDS = ["training", "fine-tuning", "inference"]
# Whole GPUs dominate; CPU-only and fractional pods show up often enough to matter.
SIZES = ["cpu", "frac", 1, 1, 2, 3, 4]
PRIORITIES = [-2000, 0, 0, 10, 100, 500]


def value(pod: Pod, pol: PackingPolicy) -> int:
    """The objective's worth of a placed pod, as the policy documents it."""
    weight = pol.kind_weights.of(pod.kind)
    return pod.milli_total * weight * max(1, pol.priority_base + pod.priority)


# ---------------------------------------------------------------------------------------------
# Random instances


@st.composite
def policies(draw, *, preemption: bool) -> PackingPolicy:
    fields: dict = {"solver": {"relativeGap": 0}, "preemption": preemption and draw(st.booleans())}
    fields["preemptInference"] = draw(st.booleans())
    if draw(st.booleans()):
        fields["inferenceMaxPerNode"] = draw(st.integers(1, 2))
    if draw(st.booleans()):
        fields["newWorkOn"] = ["healthy", "suspect"]
    # A base of 1 lets negative priorities hit the floor of 1 per milli-GPU.
    fields["priorityBase"] = draw(st.sampled_from([1, 1000]))
    if draw(st.booleans()):
        fields["kindWeights"] = {"inference": draw(st.sampled_from([5, 30]))}
    # Running pods on bad GPUs move (scheduler.planner.moves): off suspect GPUs too, gangs by
    # a member, or within a tight budget, sometimes.
    fields["moves"] = {
        "migrateOn": draw(st.sampled_from([["degraded"], ["suspect", "degraded"], []])),
        "replaceGangMember": draw(st.booleans()),
        "perCycle": draw(st.sampled_from([16, 1])),
    }
    return policy(**fields)


def _domains(draw, nodes: list[dict], models: list[dict]) -> list[dict]:
    """dc over racks r0 and r1; each domain may get a budget between its idle and full draw."""
    by_name = {m["name"]: m for m in models}
    idle: dict[str, int] = defaultdict(int)
    dyn: dict[str, int] = defaultdict(int)
    for n in nodes:
        m = by_name[n["gpuModel"]]
        for d in (n["powerDomain"], "dc"):
            idle[d] += n["gpus"] * m["idleWatts"]
            dyn[d] += n["gpus"] * (m["tdpWatts"] - m["idleWatts"])

    def budget(d: str) -> int | None:
        frac = draw(st.sampled_from([None, None, None, 0.3, 0.6, 0.9]))
        return None if frac is None else idle[d] + int(frac * dyn[d])

    return [domain("dc", budget("dc")), *(domain(r, budget(r), "dc") for r in ("r0", "r1"))]


def _pods(draw, model_names: list[str], max_pods: int) -> list[dict]:
    count = draw(st.integers(1, max_pods))
    gang_size = draw(st.sampled_from([0, 0, 2, 3]))
    gang_size = gang_size if gang_size <= count else 0
    # One kind and one limit per app: mixed apps have their own scenario (spread-mixed-app).
    limits = {app: draw(st.sampled_from([None, 1, 2])) for app in ("a", "b")}
    app_kinds = {app: draw(st.sampled_from(KINDS)) for app in ("a", "b")}
    pods = []
    for i in range(count):
        size = draw(st.sampled_from(SIZES))
        if size == "cpu":
            gpus, milli = 0, 1000
        elif size == "frac":
            gpus, milli = 1, draw(st.sampled_from([1, 250, 500, 600, 999]))
        else:
            gpus, milli = size, 1000
        app = draw(st.sampled_from([None, None, "a", "b"]))
        models = draw(st.sampled_from([(), (), *((m,) for m in model_names)])) if gpus else ()
        pods.append(
            pod(
                f"p{i}",
                app_kinds[app] if app else draw(st.sampled_from(KINDS)),
                gpus,
                milli=milli,
                priority=draw(st.sampled_from(PRIORITIES)),
                models=models,
                cpu=draw(st.sampled_from([0, 0, 4_000, 12_000])),
                mem=draw(st.sampled_from([0, 0, 16_384, 40_000])),
                gang=("g", gang_size) if i < gang_size else None,
                app=app,
                max_per_node=limits.get(app),
                preemptible=draw(st.sampled_from([True, True, False])),
            )
        )
    return pods


def _run_some(draw, base: ClusterSnapshot, pol: PackingPolicy) -> dict[str, Binding]:
    """Place a random subset of pods (gangs whole) where the checker says they fit."""
    chosen: dict[str, Binding] = {}
    units: dict[str, list[Pod]] = defaultdict(list)
    for p in base.pods:
        units[p.gang_key or p.key].append(p)
    for members in units.values():
        if not draw(st.sampled_from([True, True, False])):
            continue
        trial = dict(chosen)
        for p in members:
            b = _first_fit(base, pol, trial, p)
            if b is None:
                break
            trial[p.key] = b
        else:
            if not check_plan(base, pol, plan_of(list(trial.values()))):
                chosen = trial
    return chosen


def _first_fit(base, pol, chosen: dict[str, Binding], p: Pod) -> Binding | None:
    for n in base.nodes:
        want = 0 if p.gpus == 0 else 1 if p.fractional else p.gpus
        for idx in itertools.combinations(range(n.gpus), want):
            b = Binding(pod=p.key, node=n.name, gpu_indices=list(idx))
            found = check_plan(base, pol, plan_of([*chosen.values(), b]))
            # Gang members go one at a time; a gang placed in part is judged once it is whole.
            if not [f for f in found if not f.startswith("gang ")]:
                return b
    return None


@st.composite
def instances(
    draw,
    *,
    running: bool = True,
    preemption: bool = True,
    max_nodes: int = 3,
    max_gpus: int = 4,
    max_pods: int = 6,
    plain_victims: bool = False,
) -> tuple[PackingPolicy, ClusterSnapshot]:
    pol = draw(policies(preemption=preemption))
    models = [H100, L40] if draw(st.booleans()) else [H100]
    names = [m["name"] for m in models]
    nodes = [
        node(
            f"n{i}",
            draw(st.integers(1, max_gpus)),
            model=draw(st.sampled_from(names)),
            domain=f"r{i % 2}",
            cpu=draw(st.sampled_from([16_000, 64_000])),
            mem=draw(st.sampled_from([65_536, 262_144])),
        )
        for i in range(draw(st.integers(1, max_nodes)))
    ]
    pods = _pods(draw, sorted({n["gpuModel"] for n in nodes}), max_pods)
    domains = _domains(draw, nodes, models)
    base = snapshot(nodes, pods, models=models, domains=domains)
    placed = _run_some(draw, base, pol) if running else {}
    for p in pods:
        b = placed.get(f"default/{p['name']}")
        if b is not None:
            p["node"], p["gpuIndices"] = b.node, b.gpu_indices
            # Running work skews low, so that pending work has something to preempt.
            p["priority"] = min(p["priority"], draw(st.sampled_from([-2000, 0, 10])))
    if plain_victims:
        # The planner's preemption rules: gang members are never victims, and what a victim
        # frees goes only to strictly higher priority. Where every running pod is below every
        # pending one and no gang runs, those rules agree with the brute force's.
        for p in pods:
            p["gang"] = None
        low = min((p["priority"] for p in pods if p.get("node") is None), default=0)
        for p in pods:
            if p.get("node") is not None:
                p["priority"] = min(p["priority"], low - 1)
    # Health and cordons come after placement: running pods may sit on GPUs that went bad.
    for n in nodes:
        n["schedulable"] = draw(st.sampled_from([True, True, True, True, True, False]))
        if draw(st.booleans()):
            i = draw(st.integers(0, n["gpus"] - 1))
            state = draw(st.sampled_from(["suspect", "degraded", "failed"]))
            n["gpuHealth"] = [{"index": i, "state": state}]
    return pol, snapshot(nodes, pods, models=models, domains=domains)


# ---------------------------------------------------------------------------------------------
# Every plan is feasible and its summary tells the truth


def assert_sound(snap: ClusterSnapshot, pol: PackingPolicy, result: Plan) -> None:
    # Feasible at the end and at every step of carrying it out, moves included; no pod lost.
    assert_carried_out_safely(snap, pol, result)
    assert explanation_problems(snap, result) == []
    pods = {p.key: p for p in snap.pods}
    final = final_placement(snap, result)
    s = result.summary
    assert s.placed_pods == len(result.bindings)
    assert s.pending_pods == sum(p.node is None for p in snap.pods)
    watts = domain_power(snap, [(pods[k], n) for k, (n, _) in final.items()], pol)
    assert s.power_watts == watts
    assert s.gpu_allocation == pytest.approx(gpu_allocation(snap, pol, final), abs=1e-5)
    achieved = sum(value(pods[b.pod], pol) for b in result.bindings) - sum(
        value(pods[e.pod], pol) for e in result.evictions
    )
    assert s.objective == pytest.approx(achieved)
    assert s.bound >= s.objective - 1e-6 * abs(s.objective)


def test_allocation_counts_pods_on_gpus_that_take_no_new_work():
    # The doc: capacity in use (every placed pod) over the capacity that can take work.
    snap = snapshot([node("n", 2, health={0: "degraded"})], [pod("old", on=("n", [0])), pod("new")])
    # Migration off (it would move `old` to GPU 1): the pod stays on the degraded GPU.
    pol = policy(moves={"migrateOn": []})
    result = plan(snap, pol)
    assert [b.gpu_indices for b in result.bindings] == [[1]]
    assert result.summary.gpu_allocation == pytest.approx(2 / 1)


@FAST
@given(instances())
def test_every_plan_is_feasible(instance):
    pol, snap = instance
    assert_sound(snap, pol, plan(snap, pol))


@FAST
@given(instances())
def test_best_fit_plans_are_feasible(instance):
    pol, snap = instance
    result = best_fit(snap, pol)
    assert check_plan(snap, pol, result) == []
    assert explanation_problems(snap, result) == []


@FAST
@given(instances())
def test_plan_is_never_below_the_greedy_floor(instance):
    """Best fit, as the baseline places, and the stranding-aware greedy are candidates of every
    cycle: whatever the model does, the plan is worth at least as much as either."""
    pol, snap = instance
    result = plan(snap, pol)
    floor = best_fit(snap, pol)
    assert result.summary.objective >= floor.summary.objective
    if result.summary.objective == floor.summary.objective:
        assert result.summary.gpu_allocation >= floor.summary.gpu_allocation


@pytest.mark.slow
@SLOW
@given(instances())
def test_every_plan_is_feasible_many(instance):
    pol, snap = instance
    assert_sound(snap, pol, plan(snap, pol))


# ---------------------------------------------------------------------------------------------
# Tiny instances: the plan is optimal


def brute_force(snap: ClusterSnapshot, pol: PackingPolicy) -> tuple[int, Plan]:
    """The best objective any feasible plan reaches, and one plan reaching it."""
    return _Search(snap, pol).run()


def _evictions(victims: list[Pod]) -> list[Eviction]:
    return [Eviction(pod=v.key, node=v.node or "", reason="brute force") for v in victims]


class _Search:
    """Depth-first over decisions: keep or evict each running pod preemption may take, then place
    each pending pod on a node or leave it; gang members decide together.

    The objective is the worth of pods bound minus the worth of pods evicted. GPUs on a node that
    are free and usable are interchangeable, so a pod takes the lowest free ones, or shares a GPU
    with room: that loses no optimum and keeps the search small. Plans that evict are judged by
    the feasibility checker, which also holds the rule that an eviction needs a beneficiary.
    """

    def __init__(self, snap: ClusterSnapshot, pol: PackingPolicy) -> None:
        self.snap, self.pol = snap, pol
        self.models = {m.name: m for m in snap.gpu_models}
        self.nodes = {n.name: n for n in snap.nodes}
        self.chains = domain_chain(snap)
        self.budget = budgets(snap)
        self.power = idle_watts_by_domain(snap)
        self.used: dict[tuple[str, int], int] = defaultdict(int)  # milli-GPU; 1000 held whole
        self.cpu: dict[str, int] = defaultdict(int)
        self.mem: dict[str, int] = defaultdict(int)
        self.spread: dict[tuple[str, str], list[int]] = defaultdict(list)  # limits per app, node
        self.gang_in: dict[str, bool] = {}  # a gang's decision, set by its first member
        running = [p for p in snap.pods if p.node is not None]
        for p in running:
            self.place(p, self.nodes[p.node], tuple(p.gpu_indices), +1)  # type: ignore[index]
            if p.gang_key is not None and not self.evictable(p):
                self.gang_in[p.gang_key] = True
        order = lambda p: (p.gang_key or "~", p.key)  # noqa: E731
        self.victims = sorted((p for p in running if self.evictable(p)), key=order)
        self.pending = sorted((p for p in snap.pods if p.node is None), key=order)
        worth = [value(p, pol) for p in self.pending]
        self.rest = [sum(worth[i:]) for i in range(len(worth) + 1)]
        self.best: tuple[int, list[Binding], list[Pod]] = (-1, [], [])

    def evictable(self, p: Pod) -> bool:
        # The planner's rule (scheduler.fit.cycle.evictable): a pod on a cordoned node is never a
        # victim, since evicting it frees nothing new work may use but power.
        inference_ok = p.kind != PodKind.INFERENCE or self.pol.preempt_inference
        on_open_node = self.nodes[p.node].schedulable  # type: ignore[index]
        return self.pol.preemption and p.preemptible and inference_ok and on_open_node

    def run(self) -> tuple[int, Plan]:
        self.evict(0, 0, [])
        total, bindings, victims = self.best
        return total, plan_of(bindings, _evictions(victims))

    def limit(self, p: Pod) -> int:
        if p.max_per_node is not None:
            return p.max_per_node
        if p.kind == PodKind.INFERENCE and self.pol.inference_max_per_node is not None:
            return self.pol.inference_max_per_node
        return 10**9

    def watts(self, p: Pod, n) -> int:
        return pod_watts(p, self.models[n.gpu_model], self.pol)

    def place(self, p: Pod, n, idx, sign: int) -> None:
        for i in idx:
            self.used[(n.name, i)] += sign * (p.gpu_milli if p.fractional else 1000)
        self.cpu[n.name] += sign * p.cpu_milli
        self.mem[n.name] += sign * p.memory_mi_b
        if p.app is not None:
            limits = self.spread[(n.name, p.app)]
            limits.append(self.limit(p)) if sign > 0 else limits.remove(self.limit(p))
        for d in self.chains[n.power_domain]:
            self.power[d] += sign * self.watts(p, n)

    def options(self, p: Pod):
        for n in self.snap.nodes:
            if not n.schedulable or (p.gpu_models and n.gpu_model not in p.gpu_models):
                continue
            usable = [i for i in range(n.gpus) if self.pol.takes_new_work(n.health_of(i))]
            free = [i for i in usable if self.used[(n.name, i)] == 0]
            if p.gpus == 0:
                yield n, ()
            elif not p.fractional:
                if len(free) >= p.gpus:
                    yield n, tuple(free[: p.gpus])
            else:
                # A GPU held whole counts 1000, so it never has room for a share.
                room = [i for i in usable if 0 < self.used[(n.name, i)] <= 1000 - p.gpu_milli]
                yield from ((n, (i,)) for i in room + free[:1])

    def fits(self, p: Pod, n) -> bool:
        if self.cpu[n.name] + p.cpu_milli > n.cpu_milli:
            return False
        if self.mem[n.name] + p.memory_mi_b > n.memory_mi_b:
            return False
        limits = self.spread[(n.name, p.app)] if p.app is not None else []
        if p.app is not None and len(limits) + 1 > min([self.limit(p), *limits]):
            return False
        w = self.watts(p, n)
        chain = self.chains[n.power_domain]
        return all(self.power[d] + w <= self.budget[d] for d in chain if d in self.budget)

    def decide(self, gang: str | None, choice: bool) -> bool | None:
        """Whether the choice agrees with the gang; None when the gang was undecided (now set)."""
        if gang is None:
            return True
        if gang not in self.gang_in:
            self.gang_in[gang] = choice
            return None
        return self.gang_in[gang] == choice

    def branch(self, gang: str | None, choice: bool, go) -> None:
        agreed = self.decide(gang, choice)
        if agreed is not False:
            go()
        if agreed is None:
            del self.gang_in[gang]  # type: ignore[arg-type]

    def evict(self, k: int, total: int, victims: list[Pod]) -> None:
        if k == len(self.victims):
            self.bind(0, total, [], victims)
            return
        v = self.victims[k]
        self.branch(v.gang_key, True, lambda: self.evict(k + 1, total, victims))

        def out() -> None:
            node = self.nodes[v.node]  # type: ignore[index]
            self.place(v, node, tuple(v.gpu_indices), -1)
            self.evict(k + 1, total - value(v, self.pol), [*victims, v])
            self.place(v, node, tuple(v.gpu_indices), +1)

        self.branch(v.gang_key, False, out)

    def bind(self, k: int, total: int, chosen: list[Binding], victims: list[Pod]) -> None:
        if total + self.rest[k] <= self.best[0]:
            return
        if k == len(self.pending):
            self.consider(total, chosen, victims)
            return
        p = self.pending[k]

        def place_somewhere() -> None:
            for n, idx in list(self.options(p)):
                if self.fits(p, n):
                    self.place(p, n, idx, +1)
                    chosen.append(Binding(pod=p.key, node=n.name, gpu_indices=list(idx)))
                    self.bind(k + 1, total + value(p, self.pol), chosen, victims)
                    chosen.pop()
                    self.place(p, n, idx, -1)

        self.branch(p.gang_key, True, place_somewhere)
        self.branch(p.gang_key, False, lambda: self.bind(k + 1, total, chosen, victims))

    def consider(self, total: int, chosen: list[Binding], victims: list[Pod]) -> None:
        if victims and check_plan(self.snap, self.pol, plan_of(chosen, _evictions(victims))):
            return
        self.best = (total, list(chosen), list(victims))


def assert_optimal(snap: ClusterSnapshot, pol: PackingPolicy) -> None:
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    # Work on failing GPUs moves first (scheduler.planner.moves), by policy rather than by
    # value: the search places pending pods on the cluster as it stands after those moves.
    after_moves = plan_moves(snap, pol).snapshot
    assert len(result.moves) == sum(
        p.node != q.node or p.gpu_indices != q.gpu_indices
        for p, q in zip(snap.pods, after_moves.pods, strict=True)
    )
    optimum, witness = brute_force(after_moves, pol)
    # The search itself must be sound, or a "missed optimum" would prove nothing.
    assert check_plan(after_moves, pol, witness) == []
    pods = {p.key: p for p in snap.pods}
    achieved = sum(value(pods[b.pod], pol) for b in result.bindings) - sum(
        value(pods[e.pod], pol) for e in result.evictions
    )
    assert achieved == optimum, f"plan reaches {achieved}, optimum {optimum} by {witness}"
    assert result.summary.objective == pytest.approx(achieved)
    assert result.summary.bound >= optimum * (1 - 1e-9)


@FAST
@given(instances(running=False, preemption=False, max_nodes=2, max_gpus=3, max_pods=5))
def test_tiny_plans_are_optimal(instance):
    pol, snap = instance
    assert_optimal(snap, pol)


@pytest.mark.slow
@SLOW
@given(instances(running=False, preemption=False))
def test_small_plans_are_optimal(instance):
    pol, snap = instance
    assert_optimal(snap, pol)


@pytest.mark.slow
@SLOW
@given(instances(max_nodes=2, max_gpus=3, max_pods=5, plain_victims=True))
def test_tiny_plans_with_running_pods_are_optimal(instance):
    pol, snap = instance
    assert_optimal(snap, pol)


def test_brute_force_finds_the_packing_that_fits_more():
    # Two shares of 600 cannot share a GPU; with the whole pod the best is whole + one share.
    snap = snapshot(
        [node("n", 2)],
        [pod("w"), pod("s1", "inference", milli=600), pod("s2", "inference", milli=600)],
    )
    pol = policy(preemption=False)
    optimum, witness = brute_force(snap, pol)
    assert optimum == 1000 * 10 * 1000 + 600 * 10 * 1000
    assert sorted(b.pod for b in witness.bindings) in (
        ["default/s1", "default/w"],
        ["default/s2", "default/w"],
    )


def test_brute_force_preempts_only_when_it_pays_and_is_allowed():
    pods = [pod("old", on=("n", [0])), pod("new", priority=10), pod("low", priority=-10)]
    snap = snapshot([node("n", 1)], pods)
    optimum, witness = brute_force(snap, policy())
    assert optimum == 1000 * 10 * 1010 - 1000 * 10 * 1000
    assert [e.pod for e in witness.evictions] == ["default/old"]
    assert [b.pod for b in witness.bindings] == ["default/new"]
    assert brute_force(snap, policy(preemption=False))[0] == 0
