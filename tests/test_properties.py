"""Properties of the planner on random small clusters.

Every plan passes the independent feasibility checker and reports totals that agree with it; on
tiny instances the plan is optimal, against an exhaustive search written here from scratch.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from builders import H100, L40, bind, domain, node, plan_of, pod, policy, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.baselines import best_fit
from scheduler.model import Binding, ClusterSnapshot, PackingPolicy, Plan, Pod, PodKind
from scheduler.planner import plan
from scheduler.power import budgets, domain_chain, domain_power, idle_watts_by_domain, pod_watts
from scheduler.verify import check_plan, explanation_problems, final_placement, gpu_allocation

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
    # One limit per app: mixed limits within an app are covered by their own test.
    limits = {app: draw(st.sampled_from([None, 1, 2])) for app in ("a", "b")}
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
                draw(st.sampled_from(KINDS)),
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
    draw, *, running: bool = True, preemption: bool = True, max_nodes: int = 3,
    max_gpus: int = 4, max_pods: int = 6,
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
    assert check_plan(snap, pol, result) == []
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
    snap = snapshot(
        [node("n", 2, health={0: "degraded"})], [pod("old", on=("n", [0])), pod("new")]
    )
    pol = policy()
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


@pytest.mark.slow
@SLOW
@given(instances())
def test_every_plan_is_feasible_many(instance):
    pol, snap = instance
    assert_sound(snap, pol, plan(snap, pol))


# ---------------------------------------------------------------------------------------------
# Tiny instances: the plan is optimal


def brute_force(snap: ClusterSnapshot, pol: PackingPolicy) -> tuple[int, list[Binding]]:
    """The best objective over every placement of the pending pods, and one plan reaching it.

    Depth-first over pods (gang members together), each pending or on a node. GPUs on a node
    that are free and usable are interchangeable, so a pod takes the lowest free ones, or shares
    any GPU with room: that loses no optimum and keeps the search small.
    """
    pending = (p for p in snap.pods if p.node is None)
    pods = sorted(pending, key=lambda p: (p.gang_key or "~", p.key))
    worth = [value(p, pol) for p in pods]
    rest = [sum(worth[i:]) for i in range(len(pods) + 1)]
    models = {m.name: m for m in snap.gpu_models}
    chains = domain_chain(snap)
    budget = budgets(snap)
    power = idle_watts_by_domain(snap)
    used: dict[tuple[str, int], int] = defaultdict(int)  # milli-GPU; 1000 when held whole
    cpu: dict[str, int] = defaultdict(int)
    mem: dict[str, int] = defaultdict(int)
    spread: dict[tuple[str, str], list[int]] = defaultdict(list)  # limits of placed app pods
    gang_placed: dict[str, bool] = {}
    best: list = [-1, []]

    def usable(n, i) -> bool:
        return n.schedulable and pol.takes_new_work(n.health_of(i))

    def options(p: Pod):
        for n in snap.nodes:
            if not n.schedulable:
                continue
            free = [i for i in range(n.gpus) if usable(n, i) and used[(n.name, i)] == 0]
            if p.gpus == 0:
                yield n, ()
            elif not p.fractional:
                if len(free) >= p.gpus:
                    yield n, tuple(free[: p.gpus])
            else:
                # A GPU held whole counts 1000, so it never has room for a share.
                shared = [
                    i for i in range(n.gpus)
                    if usable(n, i) and 0 < used[(n.name, i)] <= 1000 - p.gpu_milli
                ]
                yield from ((n, (i,)) for i in shared + free[:1])

    def limit(p: Pod) -> int:
        if p.max_per_node is not None:
            return p.max_per_node
        if p.kind == PodKind.INFERENCE and pol.inference_max_per_node is not None:
            return pol.inference_max_per_node
        return 10**9

    def fits(p: Pod, n, watts: int) -> bool:
        if p.gpu_models and n.gpu_model not in p.gpu_models:
            return False
        if cpu[n.name] + p.cpu_milli > n.cpu_milli or mem[n.name] + p.memory_mi_b > n.memory_mi_b:
            return False
        if p.app is not None and len(spread[(n.name, p.app)]) + 1 > min(
            [limit(p), *spread[(n.name, p.app)]]
        ):
            return False
        chain = chains[n.power_domain]
        return all(power[d] + watts <= budget[d] for d in chain if d in budget)

    def place(p: Pod, n, idx, watts: int, sign: int) -> None:
        for i in idx:
            used[(n.name, i)] += sign * (p.gpu_milli if p.fractional else 1000)
        cpu[n.name] += sign * p.cpu_milli
        mem[n.name] += sign * p.memory_mi_b
        if p.app is not None:
            if sign > 0:
                spread[(n.name, p.app)].append(limit(p))
            else:
                spread[(n.name, p.app)].remove(limit(p))
        for d in chains[n.power_domain]:
            power[d] += sign * watts

    def search(k: int, total: int, chosen: list[Binding]) -> None:
        if total + rest[k] <= best[0]:
            return
        if k == len(pods):
            best[:] = [total, list(chosen)]
            return
        p = pods[k]
        gang = p.gang_key
        if gang is None or gang_placed.get(gang, True):
            for n, idx in list(options(p)):
                watts = pod_watts(p, models[n.gpu_model], pol)
                if fits(p, n, watts):
                    place(p, n, idx, watts, +1)
                    first = gang is not None and gang not in gang_placed
                    if first:
                        gang_placed[gang] = True
                    chosen.append(Binding(pod=p.key, node=n.name, gpu_indices=list(idx)))
                    search(k + 1, total + worth[k], chosen)
                    chosen.pop()
                    if first:
                        del gang_placed[gang]
                    place(p, n, idx, watts, -1)
        if gang is None or not gang_placed.get(gang, False):
            first = gang is not None and gang not in gang_placed
            if first:
                gang_placed[gang] = False
            search(k + 1, total, chosen)
            if first:
                del gang_placed[gang]

    search(0, 0, [])
    return best[0], best[1]


def assert_optimal(snap: ClusterSnapshot, pol: PackingPolicy) -> None:
    optimum, witness = brute_force(snap, pol)
    # The search itself must be sound, or a "missed optimum" would prove nothing.
    assert check_plan(snap, pol, plan_of(witness)) == []
    result = plan(snap, pol)
    assert check_plan(snap, pol, result) == []
    pods = {p.key: p for p in snap.pods}
    achieved = sum(value(pods[b.pod], pol) for b in result.bindings)
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


def test_brute_force_finds_the_packing_that_fits_more():
    # Two shares of 600 cannot share a GPU; with the whole pod the best is whole + one share.
    snap = snapshot(
        [node("n", 2)],
        [pod("w"), pod("s1", "inference", milli=600), pod("s2", "inference", milli=600)],
    )
    pol = policy(preemption=False)
    optimum, witness = brute_force(snap, pol)
    assert optimum == 1000 * 10 * 1000 + 600 * 10 * 1000
    assert sorted(b.pod for b in witness) in (
        ["default/s1", "default/w"], ["default/s2", "default/w"]
    )
    assert check_plan(snap, pol, plan_of([bind("w", "n", 0), bind("s1", "n", 1)])) == []
