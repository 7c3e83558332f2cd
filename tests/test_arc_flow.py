"""The arc-flow packing bound against brute force: with one node of each type the relaxation is
exact, so its optimum must equal the best packing found by trying every assignment."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.solver.arc_flow import NodeType, PodType, packing_bound


def brute_force(nodes: list[NodeType], pods: list[PodType]) -> int | None:
    """Most milli-GPU over every assignment of every pod copy to a GPU, a node or nowhere,
    holding each type's `held` copies; None when the held copies cannot all be placed."""
    copies = [j for j, p in enumerate(pods) for _ in range(p.available)]
    fill = [[0] * n.gpus for n in nodes]
    whole = [0] * len(nodes)
    cpu = [0] * len(nodes)
    mem = [0] * len(nodes)
    placed = [0] * len(pods)
    best: list[int | None] = [None]

    def fits_node(i: int, p: PodType) -> bool:
        n = nodes[i]
        return cpu[i] + p.cpu_milli <= n.cpu_milli and mem[i] + p.memory_mi_b <= n.memory_mi_b

    def walk(k: int, milli: int) -> None:
        if k == len(copies):
            if all(placed[j] >= p.held for j, p in enumerate(pods)):
                free_whole = [sum(f == 0 for f in fill[i]) for i in range(len(nodes))]
                if all(whole[i] <= free_whole[i] for i in range(len(nodes))):
                    best[0] = milli if best[0] is None else max(best[0], milli)
            return
        j = copies[k]
        p = pods[j]
        walk(k + 1, milli)
        for i, n in enumerate(nodes):
            if not fits_node(i, p):
                continue
            cpu[i] += p.cpu_milli
            mem[i] += p.memory_mi_b
            placed[j] += 1
            if p.gpu_milli == 1000:
                whole[i] += p.gpus
                if whole[i] <= n.gpus:
                    walk(k + 1, milli + 1000 * p.gpus)
                whole[i] -= p.gpus
            else:
                for g in range(n.gpus):
                    if fill[i][g] + p.gpu_milli <= 1000:
                        fill[i][g] += p.gpu_milli
                        walk(k + 1, milli + p.gpu_milli)
                        fill[i][g] -= p.gpu_milli
            placed[j] -= 1
            cpu[i] -= p.cpu_milli
            mem[i] -= p.memory_mi_b

    walk(0, 0)
    return best[0]


node_types = st.builds(
    NodeType,
    gpus=st.integers(1, 3),
    cpu_milli=st.sampled_from([4000, 8000, 16000]),
    memory_mi_b=st.just(65536),
    count=st.just(1),
)


@st.composite
def pod_types(draw: st.DrawFn) -> PodType:
    whole = draw(st.booleans())
    available = draw(st.integers(1, 2))
    return PodType(
        gpus=draw(st.integers(1, 2)) if whole else 1,
        gpu_milli=1000 if whole else draw(st.sampled_from([200, 300, 450, 550, 810])),
        cpu_milli=draw(st.sampled_from([1000, 4000, 6000])),
        memory_mi_b=1024,
        held=draw(st.integers(0, available)),
        available=available,
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(node_types, min_size=1, max_size=2), st.lists(pod_types(), min_size=1, max_size=3))
def test_equals_brute_force_with_one_node_a_type(
    nodes: list[NodeType], pods: list[PodType]
) -> None:
    expected = brute_force(nodes, pods)
    got = packing_bound(nodes, pods, time_limit=10)
    if expected is None:
        assert not got.feasible
    else:
        assert got.feasible and got.optimal
        assert got.best_milli == got.bound_milli == expected


def test_a_large_share_wastes_what_no_small_share_fills() -> None:
    # Three 810-milli shares held on 3 GPUs, one 190 filler: 3 x 810 + 190.
    nodes = [NodeType(gpus=3, cpu_milli=64000, memory_mi_b=65536, count=1)]
    pods = [
        PodType(1, 810, 1000, 1024, held=3, available=3),
        PodType(1, 190, 1000, 1024, held=0, available=1),
        PodType(1, 1000, 1000, 1024, held=0, available=5),
    ]
    got = packing_bound(nodes, pods, time_limit=10)
    assert got.optimal and got.bound_milli == 3 * 810 + 190
    assert got.capacity_milli == 3000


def test_held_pods_that_cannot_fit_are_reported_infeasible() -> None:
    nodes = [NodeType(gpus=2, cpu_milli=64000, memory_mi_b=65536, count=2)]
    pods = [PodType(1, 600, 1000, 1024, held=5, available=5)]
    assert not packing_bound(nodes, pods, time_limit=10).feasible


def test_cpu_summed_over_a_type_limits_what_it_takes() -> None:
    # Four whole GPUs, but CPU for two of the 8-core pods only.
    nodes = [NodeType(gpus=2, cpu_milli=8000, memory_mi_b=65536, count=2)]
    pods = [PodType(1, 1000, 8000, 1024, held=0, available=4)]
    assert packing_bound(nodes, pods, time_limit=10).bound_milli == 2000
