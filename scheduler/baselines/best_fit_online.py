"""best-fit, online: the node left with the least free GPU capacity after the pod is placed.

Key, smallest first: free milli-GPU on the node after placement, then free CPU after placement,
then node index. A share goes to the fullest GPU it fits on, whole GPUs to the lowest-index free
ones. (The FGD paper's simulator scores best fit as 0.5 x CPU + 0.5 x GPU left, normalised by
the largest node; this one orders by GPU first, as the batch best-fit in best_fit.py does.)
"""

from __future__ import annotations

import numpy as np

from scheduler.baselines.online import Choice, NodeArrays, gpus_on
from scheduler.model import Pod


class BestFitPlacer:
    name = "best-fit"

    def choose(self, arrays: NodeArrays, pod: Pod) -> Choice | None:
        nodes = np.flatnonzero(arrays.feasible(pod))
        if nodes.size == 0:
            return None
        gpu_left = arrays.free_milli[nodes] - (pod.milli_total if pod.gpus else 0)
        cpu_left = arrays.cpu_free[nodes] - pod.cpu_milli
        node = int(nodes[np.lexsort((nodes, cpu_left, gpu_left))[0]])
        return node, gpus_on(arrays, pod, node, fullest=True)
