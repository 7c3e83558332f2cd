"""spread: kube-scheduler's default NodeResourcesFit strategy, LeastAllocated.

Score = sum_r w_r * (allocatable_r - requested_r) / allocatable_r / sum_r w_r over cpu, memory
and nvidia.com/gpu (weights in scheduler.baselines.kube.KUBE_WEIGHTS, formula and sources in
that module); the highest score wins, ties to the lowest node index. Within the node a share goes
to the emptiest GPU it fits on (spread), whole GPUs to the lowest-index free ones.
"""

from __future__ import annotations

import numpy as np

from scheduler.baselines.kube import allocation_score
from scheduler.baselines.online import Choice, NodeArrays, gpus_on
from scheduler.model import Pod


class SpreadPlacer:
    name = "spread"

    def choose(self, arrays: NodeArrays, pod: Pod) -> Choice | None:
        nodes = np.flatnonzero(arrays.feasible(pod))
        if nodes.size == 0:
            return None
        node = int(nodes[np.argmax(allocation_score(arrays, pod, nodes, most=False))])
        return node, gpus_on(arrays, pod, node, fullest=False)
