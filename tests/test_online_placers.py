"""Online baseline schedulers: one pod at a time on NodeArrays, each by its own score.

Scenarios show what feasible() enforces and the defining choice of every placer; a property test
checks on random small clusters that every choice is feasible, that None means nothing fits, that
feasible() agrees with the planner's ClusterState, and that FGD minimises a fragmentation written
here from the paper's definitions.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from builders import H100, L40, domain, node, pod, policy, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.baselines.fgd import FgdPlacer, typical_tasks
from scheduler.baselines.online import (
    PLACER_NAMES,
    UNUSABLE,
    NodeArrays,
    Placer,
    make_placer,
)
from scheduler.errors import UserError
from scheduler.fit.cycle import start_cycle
from scheduler.model import ClusterSnapshot, PackingPolicy, Pod
from scheduler.power import domain_power


def P(name: str, kind: str = "training", gpus: int = 1, **kw) -> Pod:
    return Pod.model_validate(pod(name, kind, gpus, **kw))


def placers(workload: list[Pod] = (), pol: PackingPolicy | None = None) -> dict[str, Placer]:
    pol = pol or policy()
    return {name: make_placer(name, list(workload), pol) for name in PLACER_NAMES}


def mask_of(arrays: NodeArrays, p: Pod) -> list[bool]:
    return [bool(x) for x in arrays.feasible(p)]


def state(arrays: NodeArrays) -> dict:
    """Everything a placer may read, to compare two NodeArrays."""
    return {
        "cpu": arrays.cpu_free.tolist(),
        "mem": arrays.mem_free.tolist(),
        "res": arrays.residual.tolist(),
        "whole": arrays.free_whole.tolist(),
        "max": arrays.max_residual.tolist(),
        "milli": arrays.free_milli.tolist(),
        "headroom": arrays.headroom.tolist(),
        "draw": arrays.domain_draw(),
    }


# ---------------------------------------------------------------------------------------------
# feasible()


def test_cpu_and_memory_bound_the_nodes():
    snap = snapshot([node("small", cpu=8_000, mem=16_384), node("big")])
    arrays = NodeArrays(snap, policy())
    assert mask_of(arrays, P("cpu", cpu=16_000)) == [False, True]
    assert mask_of(arrays, P("mem", mem=32_768)) == [False, True]
    assert mask_of(arrays, P("fits", cpu=8_000, mem=16_384)) == [True, True]
    assert mask_of(arrays, P("cpu-only", gpus=0, cpu=8_000)) == [True, True]


def test_gpu_model_list():
    snap = snapshot([node("h", model="H100"), node("l", model="L40")], models=[H100, L40])
    arrays = NodeArrays(snap, policy())
    assert mask_of(arrays, P("any")) == [True, True]
    assert mask_of(arrays, P("l40", models=("L40",))) == [False, True]
    assert mask_of(arrays, P("both", models=("L40", "H100"))) == [True, True]


def test_spread_limits_bind_the_app():
    running = [
        pod("w0", "inference", milli=100, app="web", max_per_node=1, on=("a", [0])),
        pod("s0", "inference", milli=100, app="svc", on=("a", [1])),
    ]
    snap = snapshot([node("a"), node("b")], running)
    arrays = NodeArrays(snap, policy(inferenceMaxPerNode=1))
    # A running pod's limit binds the app even for a pod with no limit of its own.
    assert mask_of(arrays, P("w1", "training", app="web")) == [False, True]
    # Inference with an app and no maxPerNode takes the policy's limit.
    assert mask_of(arrays, P("s1", "inference", milli=100, app="svc")) == [False, True]
    # s0's own limit (the policy's 1) binds its app for every later pod of it.
    assert mask_of(arrays, P("t1", "training", app="svc")) == [False, True]
    loose = NodeArrays(snap, policy())
    assert mask_of(loose, P("s1", "inference", milli=100, app="svc")) == [True, True]


def test_a_spread_limit_lifts_when_the_pod_leaves():
    arrays = NodeArrays(snapshot([node("a"), node("b")]), policy())
    first = P("w0", "inference", milli=100, app="web", max_per_node=1)
    arrays.place(first, 0, (0,))
    assert mask_of(arrays, P("w1", app="web")) == [False, True]
    arrays.remove(first, 0, (0,))
    assert mask_of(arrays, P("w1", app="web")) == [True, True]


def test_power_budget_blocks_a_node():
    # H100: idle 100 W, TDP 700 W; training draws 600 W above idle per GPU.
    domains = [domain("dc"), domain("r0", 900, "dc"), domain("r1", None, "dc")]
    snap = snapshot([node("a", domain="r0"), node("b", domain="r1")], domains=domains)
    arrays = NodeArrays(snap, policy())
    assert arrays.domain_draw()["r0"] == 400  # four idle GPUs
    assert mask_of(arrays, P("train")) == [False, True]  # 400 + 600 > 900
    # Inference on half a GPU: 600 x 0.6 x 0.5 = 180 W.
    assert mask_of(arrays, P("serve", "inference", milli=500)) == [True, True]
    assert mask_of(arrays, P("cpu", gpus=0, cpu=1_000)) == [True, True]
    for placer in placers().values():
        assert placer.choose(arrays, P("train"))[0] == 1


def test_power_budget_of_a_parent_binds_every_node_below():
    domains = [domain("dc", 800 + 700), domain("r0", None, "dc"), domain("r1", None, "dc")]
    snap = snapshot([node("a", domain="r0"), node("b", domain="r1")], domains=domains)
    arrays = NodeArrays(snap, policy())
    first = P("t0")
    assert mask_of(arrays, first) == [True, True]
    arrays.place(first, 1, (0,))
    assert mask_of(arrays, P("t1")) == [False, False]  # 800 + 600 + 600 > 1500
    arrays.remove(first, 1, (0,))
    assert mask_of(arrays, P("t1")) == [True, True]


def test_unhealthy_gpus_and_cordoned_nodes_are_never_offered():
    snap = snapshot(
        [
            node("a", gpus=2, health={0: "failed"}),
            node("b", gpus=2, health={0: "degraded", 1: "suspect"}),
            node("c", cordoned=True),
        ]
    )
    arrays = NodeArrays(snap, policy())
    assert arrays.residual[0, 0] == UNUSABLE and arrays.residual[0, 1] == 1000
    assert arrays.residual[1].tolist()[:2] == [UNUSABLE, UNUSABLE]
    assert (arrays.residual[2] == UNUSABLE).all()
    assert mask_of(arrays, P("two", gpus=2)) == [False, False, False]
    assert mask_of(arrays, P("cpu", gpus=0)) == [True, True, False]
    for name, placer in placers().items():
        assert placer.choose(arrays, P("one")) == (0, (1,)), name
        assert placer.choose(arrays, P("share", milli=300)) == (0, (1,)), name
    suspect_ok = NodeArrays(snap, policy(newWorkOn=["healthy", "suspect"]))
    assert mask_of(suspect_ok, P("one")) == [True, True, False]


def test_running_pods_are_counted():
    running = [
        pod("s", "inference", milli=400, cpu=2_000, mem=1_024, on=("a", [1])),
        pod("w", "training", gpus=2, cpu=8_000, on=("a", [2, 3])),
        pod("c", gpus=0, cpu=4_000, on=("b", [])),
    ]
    snap = snapshot([node("a"), node("b")], running)
    arrays = NodeArrays(snap, policy())
    assert arrays.residual[0].tolist() == [1000, 600, 0, 0]
    assert arrays.cpu_free.tolist() == [64_000 - 10_000, 60_000]
    assert arrays.mem_free.tolist() == [262_144 - 1_024, 262_144]
    assert arrays.free_whole.tolist() == [1, 4]
    assert arrays.used_milli.tolist() == [2_400, 0]
    running_pods = [(p, p.node) for p in snap.pods]
    assert arrays.domain_draw() == domain_power(snap, running_pods, policy())


def test_place_and_remove_are_inverse():
    domains = [domain("dc", 5_000), domain("rack", 3_000, "dc")]
    running = [pod("s", "inference", milli=400, app="web", max_per_node=2, on=("a", [1]))]
    snap = snapshot([node("a"), node("b", gpus=8)], running, domains=domains)
    arrays = NodeArrays(snap, policy(inferenceMaxPerNode=1))
    before = state(arrays)
    moves = [
        (P("x", "inference", milli=300, app="web", max_per_node=2, cpu=1_000, mem=512), 0, (1,)),
        (P("y", gpus=2, cpu=3_000), 1, (0, 1)),
        (P("z", gpus=0, cpu=2_000, app="web"), 1, ()),
        (P("v", "fine-tuning", milli=250, app="db", max_per_node=1), 1, (7,)),
    ]
    masks = []
    for p, n, g in moves:
        masks.append([mask_of(arrays, q) for q, _, _ in moves])
        arrays.place(p, n, g)
    assert state(arrays) != before
    for (p, n, g), mask in zip(reversed(moves), reversed(masks), strict=True):
        arrays.remove(p, n, g)
        assert [mask_of(arrays, q) for q, _, _ in moves] == mask
    assert state(arrays) == before


def test_accessors_are_read_only():
    arrays = NodeArrays(snapshot([node("a")]), policy())
    with pytest.raises(ValueError):
        arrays.cpu_free[0] = 0
    with pytest.raises(ValueError):
        arrays.residual[0, 0] = 0


# ---------------------------------------------------------------------------------------------
# The defining choice of every placer


def test_spread_takes_the_emptier_node_and_binpackers_the_fuller():
    snap = snapshot([node("a"), node("b")], [pod("r", on=("a", [0]))])
    arrays = NodeArrays(snap, policy())
    chosen = {name: pl.choose(arrays, P("new")) for name, pl in placers().items()}
    assert chosen["spread"] == (1, (0,))
    assert chosen["binpack"] == (0, (1,))
    assert chosen["volcano-binpack"] == (0, (1,))
    assert chosen["best-fit"] == (0, (1,))


def test_spread_puts_a_share_on_the_emptiest_gpu_binpack_on_the_fullest():
    running = [pod("r", "inference", milli=400, on=("a", [0]))]
    arrays = NodeArrays(snapshot([node("a", gpus=2)], running), policy())
    share = P("s", "inference", milli=300)
    chosen = {name: pl.choose(arrays, share) for name, pl in placers().items()}
    assert chosen["spread"] == (0, (1,))
    assert chosen["binpack"] == (0, (0,))
    assert chosen["volcano-binpack"] == (0, (0,))
    assert chosen["best-fit"] == (0, (0,))


def test_volcano_weights_gpus_where_kube_binpack_follows_cpu():
    running = [
        pod("cpu-heavy", gpus=0, cpu=60_000, on=("a", [])),
        pod("gpu-heavy", gpus=3, on=("b", [0, 1, 2])),
    ]
    arrays = NodeArrays(snapshot([node("a"), node("b")], running), policy())
    new = P("new", cpu=1_000)
    chosen = {name: pl.choose(arrays, new) for name, pl in placers().items()}
    assert chosen["binpack"][0] == 0  # (61/64 + 0 + 1/4) / 3 > (1/64 + 0 + 4/4) / 3
    assert chosen["volcano-binpack"][0] == 1  # (61/64 + 10/4) / 11 < (1/64 + 10) / 11
    assert chosen["best-fit"][0] == 1  # no GPU left on b afterwards


def test_best_fit_takes_the_tightest_gpu_for_a_share():
    running = [
        pod("r0", "inference", milli=300, on=("a", [1])),
        pod("r1", "inference", milli=600, on=("a", [2])),
        pod("r2", "inference", milli=800, on=("b", [0])),  # too full for the share
    ]
    snap = snapshot([node("a", gpus=3), node("b", gpus=1)], running)
    arrays = NodeArrays(snap, policy())
    assert placers()["best-fit"].choose(arrays, P("s", "inference", milli=300)) == (0, (2,))
    assert placers()["best-fit"].choose(arrays, P("t", "inference", milli=200)) == (1, (0,))


def test_best_fit_breaks_gpu_ties_by_cpu_left():
    arrays = NodeArrays(snapshot([node("a"), node("b", cpu=16_000)]), policy())
    assert placers()["best-fit"].choose(arrays, P("p", cpu=1_000)) == (1, (0,))


def test_fgd_keeps_a_gpu_the_common_share_can_use():
    # The workload is mostly half-GPU shares. On a, a 300m share would leave 300m that no half
    # fits in; on the empty b it leaves 700m, which still takes one.
    workload = [P(f"w{i}", "inference", milli=500) for i in range(20)]
    running = [pod("r", "inference", milli=400, on=("a", [0]))]
    arrays = NodeArrays(snapshot([node("a", gpus=1), node("b", gpus=1)], running), policy())
    share = P("s", "inference", milli=300)
    chosen = {name: pl.choose(arrays, share) for name, pl in placers(workload).items()}
    assert chosen["best-fit"] == (0, (0,))
    assert chosen["fgd"] == (1, (0,))


def test_fgd_picks_the_gpu_within_a_node():
    workload = [P(f"w{i}", "inference", milli=500) for i in range(20)]
    running = [pod("r", "inference", milli=200, on=("a", [1]))]
    arrays = NodeArrays(snapshot([node("a", gpus=2)], running), policy())
    # 500 on GPU 1 (800 left) leaves 300, a fragment; on GPU 0 it leaves 500, still usable.
    assert placers(workload)["fgd"].choose(arrays, P("s", "inference", milli=500)) == (0, (0,))


def test_fgd_keeps_a_pair_of_free_gpus_for_the_common_two_gpu_job():
    workload = [P(f"w{i}", gpus=2) for i in range(10)]
    running = [pod("r", gpus=2, on=("a", [0, 1]))]
    arrays = NodeArrays(snapshot([node("a", gpus=4), node("b", gpus=4)], running), policy())
    # One GPU on a would leave a single free GPU that no 2-GPU job can use; b keeps 3 free.
    chosen = {name: pl.choose(arrays, P("one")) for name, pl in placers(workload).items()}
    assert chosen["fgd"] == (1, (0,))
    assert chosen["best-fit"] == (0, (2,))


def test_typical_tasks_cover_the_popular_types():
    workload = [P(f"a{i}", milli=500) for i in range(6)]
    workload += [P(f"b{i}", gpus=2) for i in range(3)]
    workload += [P("c", gpus=0, cpu=1_000)]
    tasks = typical_tasks(workload, coverage=0.9)
    assert [(t.gpus, t.gpu_milli, t.count) for t in tasks] == [(1, 500, 6), (2, 1000, 3)]
    assert len(typical_tasks(workload, coverage=1.0)) == 3


def test_unknown_placer_is_a_user_error():
    with pytest.raises(UserError) as err:
        make_placer("first-fit", [], policy())
    assert "spread" in err.value.todo
    for name in PLACER_NAMES:
        assert make_placer(name, [], policy()).name == name


def test_nothing_fits_gives_none():
    arrays = NodeArrays(snapshot([node("a", gpus=2)]), policy())
    for placer in placers([P("w")]).values():
        assert placer.choose(arrays, P("big", gpus=4)) is None


# ---------------------------------------------------------------------------------------------
# Properties on random small clusters

KINDS = ["training", "fine-tuning", "inference"]


@st.composite
def clusters(draw) -> tuple[ClusterSnapshot, PackingPolicy]:
    models = [H100, L40]
    nodes = []
    for i in range(draw(st.integers(1, 4))):
        gpus = draw(st.integers(0, 4))
        health = {
            g: s
            for g in range(gpus)
            if (s := draw(st.sampled_from(["healthy"] * 4 + ["suspect", "degraded", "failed"])))
            != "healthy"
        }
        nodes.append(
            node(
                f"n{i}",
                gpus,
                model=draw(st.sampled_from(["H100", "L40"])),
                domain=draw(st.sampled_from(["r0", "r1"])),
                cpu=draw(st.sampled_from([8_000, 32_000])),
                mem=draw(st.sampled_from([16_384, 65_536])),
                cordoned=draw(st.sampled_from([False] * 5 + [True])),
                health=health,
            )
        )
    by_name = {m["name"]: m for m in models}
    idle: dict[str, int] = defaultdict(int)
    for n in nodes:
        for d in (n["powerDomain"], "dc"):
            idle[d] += n["gpus"] * by_name[n["gpuModel"]]["idleWatts"]

    def budget(d: str) -> int | None:
        extra = draw(st.sampled_from([None, None, 0, 300, 700, 1_500]))
        return None if extra is None else idle[d] + extra

    domains = [domain("dc", budget("dc")), *(domain(r, budget(r), "dc") for r in ("r0", "r1"))]
    fields: dict = {}
    if draw(st.booleans()):
        fields["inferenceMaxPerNode"] = draw(st.integers(1, 2))
    if draw(st.booleans()):
        fields["newWorkOn"] = ["healthy", "suspect"]
    return snapshot(nodes, models=models, domains=domains), policy(**fields)


@st.composite
def pods(draw, prefix: str) -> list[Pod]:
    out = []
    for i in range(draw(st.integers(1, 10))):
        size = draw(st.sampled_from(["cpu", "frac", "frac", 1, 1, 2, 4]))
        gpus, milli = (0, 1000) if size == "cpu" else (1, 1000) if size == "frac" else (size, 1000)
        if size == "frac":
            milli = draw(st.sampled_from([100, 250, 500, 700]))
        app = draw(st.sampled_from([None, None, "web", "db"]))
        out.append(
            P(
                f"{prefix}{i}",
                draw(st.sampled_from(KINDS)),
                gpus,
                milli=milli,
                cpu=draw(st.sampled_from([0, 2_000, 8_000])),
                mem=draw(st.sampled_from([0, 4_096, 32_768])),
                models=draw(st.sampled_from([(), (), ("H100",), ("L40",)])),
                app=app,
                max_per_node=draw(st.sampled_from([None, None, 1, 2])) if app else None,
            )
        )
    return out


def oracle_mask(snap: ClusterSnapshot, pol: PackingPolicy, p: Pod) -> list[bool]:
    """Where the planner's own per-cycle state says the pod fits."""
    st_ = start_cycle(snap, pol).state
    return [
        node.schedulable
        and st_.model_ok(p, i)
        and st_.host_ok(p, i)
        and st_.power_ok(p, i)
        and st_.gpus_for(p, i) is not None
        for i, node in enumerate(snap.nodes)
    ]


def naive_fgd(fgd: FgdPlacer, arrays: NodeArrays, p: Pod) -> tuple[int, int, tuple[int, ...]]:
    """The least fragmentation increase over every feasible node and GPU, from the definitions."""

    def frag(model: str, res: list[int], cpu: int) -> int:
        total = sum(max(r, 0) for r in res)
        f = 0
        for t in fgd.tasks:
            fits = sum(1 for r in res if r >= t.gpu_milli)
            runs = (
                t.gpus > 0
                and (not t.gpu_models or model in t.gpu_models)
                and cpu >= t.cpu_milli
                and fits >= t.gpus
            )
            f += t.count * (sum(r for r in res if 0 <= r < t.gpu_milli) if runs else total)
        return f

    best = None
    for i in np.flatnonzero(arrays.feasible(p)):
        res = arrays.residual[i].tolist()
        cpu = int(arrays.cpu_free[i])
        model = arrays.model_names[arrays.model_index[i]]
        if p.gpus == 0:
            options: list[tuple[int, ...]] = [()]
        elif p.fractional:
            options = [(g,) for g, r in enumerate(res) if r >= p.gpu_milli]
        else:
            options = [tuple([g for g, r in enumerate(res) if r == 1000][: p.gpus])]
        for gpus in options:
            after = list(res)
            for g in gpus:
                after[g] -= p.gpu_milli if p.fractional else 1000
            d = frag(model, after, cpu - p.cpu_milli) - frag(model, res, cpu)
            if best is None or d < best[0]:
                best = (d, int(i), gpus)
    assert best is not None
    return best


def check_choice(arrays: NodeArrays, p: Pod, choice, mask: np.ndarray, name: str) -> None:
    if not mask.any():
        assert choice is None, name
        return
    assert choice is not None, name
    n, gpus = choice
    assert mask[n], name
    row = arrays.residual[n]
    if p.gpus == 0:
        assert gpus == (), name
    elif p.fractional:
        assert len(gpus) == 1 and row[gpus[0]] >= p.gpu_milli, name
    else:
        assert len(set(gpus)) == p.gpus and all(row[g] == 1000 for g in gpus), name


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), pods("w"), pods("q"), st.sampled_from(PLACER_NAMES), st.randoms())
def test_every_choice_is_feasible_and_feasible_agrees_with_the_planner(
    cluster, warmup, queries, driver, rnd
):
    base, pol = cluster
    arrays = NodeArrays(base, pol)
    every = placers([*warmup, *queries], pol)
    running: list[Pod] = []
    for p in [*warmup, *queries]:
        mask = arrays.feasible(p)
        now = base.model_copy(update={"pods": running})
        assert [bool(x) for x in mask] == oracle_mask(now, pol, p), p
        fresh = NodeArrays(now, pol)
        assert state(fresh) == state(arrays)
        assert [bool(x) for x in fresh.feasible(p)] == [bool(x) for x in mask]
        choices = {}
        for name, placer in every.items():
            choices[name] = placer.choose(arrays, p)
            check_choice(arrays, p, choices[name], mask, name)
        assert [bool(x) for x in arrays.feasible(p)] == [bool(x) for x in mask]  # untouched
        if mask.any():
            d, n, gpus = naive_fgd(every["fgd"], arrays, p)
            assert choices["fgd"] == (n, gpus), (d, choices["fgd"])
        pick = choices[driver] if rnd.random() < 0.8 else choices[rnd.choice(PLACER_NAMES)]
        if pick is not None:
            arrays.place(p, *pick)
            node_name = base.nodes[pick[0]].name
            running.append(p.model_copy(update={"node": node_name, "gpu_indices": list(pick[1])}))
    # Taking everything off again restores the empty cluster.
    empty = state(NodeArrays(base, pol))
    for p in reversed(running):
        arrays.remove(p, arrays.node_index[p.node], p.gpu_indices)
    assert state(arrays) == empty
