"""Placement one pod at a time weighs stranded GPUs before best fit (scheduler.fit.state).

A GPU is stranded when its node's free CPU (or memory) cannot feed it at the workload's own mix:
no typical pod can use it. Best fit alone sends a CPU-hungry pod to the node with the fewest free
GPUs even when that leaves them without CPU; under the FGD protocol on openb that stranded about
140 GPUs behind exhausted CPU (docs in benchmarks/RESULTS.md).
"""

from __future__ import annotations

from builders import node, pod, policy, snapshot

from scheduler.fit.cycle import start_cycle
from scheduler.model import ClusterSnapshot


def _find(snap: ClusterSnapshot, name: str):
    cycle = start_cycle(snap, policy())
    target = next(p for p in cycle.pending if p.name == name)
    where = cycle.state.find(target)
    assert where is not None
    return cycle.state.nodes[where[0]].name, cycle


def _two_nodes(*pending: dict) -> ClusterSnapshot:
    # n0: 2 GPUs and 24 cores free; n1: 3 GPUs and 60 cores free. With the pending pods below
    # the workload asks 16 cores per GPU.
    return snapshot(
        [node("n0", 4, cpu=64_000), node("n1", 4, cpu=64_000)],
        [
            pod("busy0", gpus=2, cpu=40_000, on=("n0", [0, 1])),
            pod("busy1", gpus=1, cpu=4_000, on=("n1", [0])),
            *pending,
        ],
    )


def test_a_cpu_hungry_pod_goes_where_it_leaves_no_gpu_without_cpu():
    snap = _two_nodes(pod("hungry", cpu=20_000))
    where, cycle = _find(snap, "hungry")
    # On n0 it would leave one GPU with 4 cores, 750 milli that 16 cores per GPU cannot feed.
    state = cycle.state
    hungry = next(p for p in cycle.pending if p.name == "hungry")
    assert state.strands(hungry, 0) == 250 and state.strands(hungry, 1) == 0
    assert where == "n1"


def test_a_cpu_light_pod_still_goes_to_the_best_fit():
    snap = _two_nodes(pod("hungry", cpu=20_000), pod("light", cpu=1_000))
    assert _find(snap, "light")[0] == "n0"


def test_the_last_empty_nodes_of_a_type_are_kept_for_pods_that_need_a_whole_node():
    # "big" (8 GPUs, 256 cores) is the only node of its type; "small" has 2 GPUs and 32 cores
    # free; "other" is full. The workload asks 180 cores for 11 GPUs (16.4 per GPU): the pod
    # strands nothing on "big" and 223 milli on "small", less than opening the last "big".
    nodes = [
        node("big", 8, cpu=256_000),
        node("small", 8, cpu=96_000),
        node("other", 4, cpu=96_000),
    ]
    running = [
        pod("busy", gpus=6, cpu=64_000, on=("small", [0, 1, 2, 3, 4, 5])),
        pod("full", gpus=4, cpu=96_000, on=("other", [0, 1, 2, 3])),
    ]
    hungry = pod("hungry", cpu=20_000)
    assert _find(snapshot(nodes, [*running, hungry]), "hungry")[0] == "small"
    # With nine empty nodes of the type, opening one costs nothing extra: it strands least.
    many = [node(f"big{i}", 8, cpu=256_000) for i in range(9)]
    assert _find(snapshot([*many, *nodes[1:]], [*running, hungry]), "hungry")[0].startswith("big")
