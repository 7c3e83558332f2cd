"""kube-scheduler's NodeResourcesFit scoring (LeastAllocated / MostAllocated), one pod at a time.

Facts taken from kubernetes/kubernetes pkg/scheduler/framework/plugins/noderesources
(least_allocated.go, most_allocated.go, resource_allocation.go):

* For every configured resource r with weight w_r: requested_r = what the node's pods request
  plus what this pod requests; allocatable_r = the node's allocatable amount.
* LeastAllocated scores r as (allocatable_r - requested_r) / allocatable_r (0 if requested >
  allocatable); MostAllocated as requested_r / allocatable_r (requested capped at allocatable).
* The node score is sum_r w_r * score_r / sum_r w_r, over the resources with allocatable_r > 0;
  an extended resource (nvidia.com/gpu) the pod does not request is left out of both sums.

Differences, stated: kube-scheduler scales each term to integers 0..100 and breaks ties between
equal scores at random; here the ratios are exact and ties go to the lowest node index, so runs
are reproducible. Its "non-zero request" defaults (100m CPU, 200 MiB for a pod that requests
none) are not applied: the traces give every pod's requests. A GPU share counts as gpuMilli/1000
of nvidia.com/gpu, and allocatable nvidia.com/gpu is the node's usable GPUs.
"""

from __future__ import annotations

import numpy as np

from scheduler.baselines.online import NodeArrays, gpu_request
from scheduler.model import Pod

# Resource weights of the scoring strategy. kube-scheduler's default list is cpu 1, memory 1;
# an extended resource scores only when added to the list, with a weight the operator picks.
# We add nvidia.com/gpu with weight 1, the default weight of every listed resource.
KUBE_WEIGHTS = {"cpu": 1, "memory": 1, "nvidia.com/gpu": 1}


def allocation_score(
    arrays: NodeArrays,
    pod: Pod,
    nodes: np.ndarray,
    *,
    most: bool,
    weights: dict[str, int] = KUBE_WEIGHTS,
) -> np.ndarray:
    """NodeResourcesFit score (in 0..1) of placing the pod on each of `nodes`."""
    cpu_cap = arrays.cpu_capacity[nodes]
    mem_cap = arrays.mem_capacity[nodes]
    terms = [
        (weights["cpu"], cpu_cap, cpu_cap - arrays.cpu_free[nodes] + pod.cpu_milli),
        (weights["memory"], mem_cap, mem_cap - arrays.mem_free[nodes] + pod.memory_mi_b),
    ]
    if pod.gpus > 0:
        gpu_cap = arrays.gpu_capacity[nodes]
        used = arrays.used_milli[nodes] / 1000
        terms.append((weights["nvidia.com/gpu"], gpu_cap, used + gpu_request(pod)))
    total = np.zeros(len(nodes))
    weight_sum = np.zeros(len(nodes))
    for w, cap, requested in terms:
        has = cap > 0
        safe = np.where(has, cap, 1)
        if most:
            ratio = np.minimum(requested, cap) / safe
        else:
            ratio = np.where(requested > cap, 0.0, (cap - requested) / safe)
        total += np.where(has, w * ratio, 0.0)
        weight_sum += np.where(has, w, 0)
    return np.where(weight_sum > 0, total / np.where(weight_sum > 0, weight_sum, 1), 0.0)
