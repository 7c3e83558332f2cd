"""volcano-binpack: Volcano's binpack plugin, with nvidia.com/gpu weighted.

Facts from volcano-sh/volcano pkg/scheduler/plugins/binpack/binpack.go (BinPackingScore,
ResourceBinPackingScore): for every resource r the task requests (request_r > 0) that has a
weight, score_r = weight_r * (used_r + request_r) / allocatable_r, or 0 when allocatable_r is 0
or used_r + request_r exceeds it; weight_r counts in weightSum either way. Node score =
sum_r score_r / weightSum (times MaxNodeScore x binpack.weight, a constant left out here). The
plugin's defaults are binpack.cpu 1 and binpack.memory 1; extended resources get a weight only
when listed under binpack.resources.

Weights used (VOLCANO_WEIGHTS): cpu 1, memory 1, nvidia.com/gpu 10, i.e. the configuration
`binpack.resources: nvidia.com/gpu` with `binpack.resources.nvidia.com/gpu: 10`. used_r is what
the node's pods request; a GPU share counts as gpuMilli/1000 GPUs. Highest score wins, ties to
the lowest node index (Volcano breaks ties by its other plugins and at random). Within the node a
share goes to the fullest GPU it fits on, whole GPUs to the lowest-index free ones.
"""

from __future__ import annotations

import numpy as np

from scheduler.baselines.online import Choice, NodeArrays, gpu_request, gpus_on
from scheduler.model import Pod

VOLCANO_WEIGHTS = {"cpu": 1, "memory": 1, "nvidia.com/gpu": 10}


def binpack_score(
    arrays: NodeArrays, pod: Pod, nodes: np.ndarray, weights: dict[str, int] = VOLCANO_WEIGHTS
) -> np.ndarray:
    """Volcano's binpack score (in 0..1) of placing the pod on each of `nodes`."""
    terms = []
    if pod.cpu_milli > 0:
        cap = arrays.cpu_capacity[nodes]
        terms.append((weights["cpu"], cap, cap - arrays.cpu_free[nodes], pod.cpu_milli))
    if pod.memory_mi_b > 0:
        cap = arrays.mem_capacity[nodes]
        terms.append((weights["memory"], cap, cap - arrays.mem_free[nodes], pod.memory_mi_b))
    if pod.gpus > 0:
        cap = arrays.gpu_capacity[nodes]
        used = arrays.used_milli[nodes] / 1000
        terms.append((weights["nvidia.com/gpu"], cap, used, gpu_request(pod)))
    score = np.zeros(len(nodes))
    weight_sum = 0
    for w, cap, used, request in terms:
        after = used + request
        ok = (cap > 0) & (after <= cap)
        score += np.where(ok, w * after / np.where(cap > 0, cap, 1), 0.0)
        weight_sum += w
    return score / weight_sum if weight_sum else score


class VolcanoBinpackPlacer:
    name = "volcano-binpack"

    def choose(self, arrays: NodeArrays, pod: Pod) -> Choice | None:
        nodes = np.flatnonzero(arrays.feasible(pod))
        if nodes.size == 0:
            return None
        node = int(nodes[np.argmax(binpack_score(arrays, pod, nodes))])
        return node, gpus_on(arrays, pod, node, fullest=True)
