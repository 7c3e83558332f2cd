"""fgd: Fragmentation Gradient Descent (Weng et al., "Beware of Fragmentation: Scheduling
GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX ATC '23).

Definitions follow the paper and its simulator (hkust-adsl/kubernetes-scheduler-simulator:
pkg/utils/frag.go GetTypicalPods / NodeGpuShareFragAmount / GetNodePodFrag,
pkg/simulator/plugin/fgd_score.go, pkg/type/resource.go PodResource):

* Task type ("typical pod"): (CPU milli, GPU milli per GPU, GPU count, acceptable GPU models).
  Memory is not part of it (the simulator's PodResource leaves memory out). Popularity of a type
  = its share of the pods in `workload`, CPU-only pods included.
* Target workload M: the most popular types, in decreasing count, until they cover
  POPULARITY_COVERAGE (95%) of the pods (the simulator's experiment setting: isInvolvedCpuPods
  true, podPopularityThreshold 95, podIncreaseStep 1); ties in count go by the type's key.
* Fragment of node n for task m, in milli-GPU over the node's usable GPUs:
  - m needs no GPU (CPU-only): all free GPU milli (the simulator's XL/XR cases);
  - m cannot run: model not accepted, free CPU < m's CPU, or fewer than m's GPU count GPUs with
    residual >= m's milli: all free GPU milli;
  - otherwise the free milli on GPUs that cannot hold m (residual < m's milli: for a whole-GPU
    task, the partly used GPUs).
  F_n = sum over m of popularity_m x fragment_n(m).
* FGD puts the pod where F_n rises least (F after - F before): for a share it tries every GPU
  the share fits on (ties to the lowest GPU index); whole GPUs go to the lowest-index free GPUs,
  as the simulator's AllocateExclusiveGpuId does. Ties between nodes go to the lowest index.

Differences, stated: the simulator scores sigmoid(-dF/1000) x 100 truncated to an integer and
breaks ties at random; here dF is compared exactly (popularity as integer counts, so F is an
integer). Memory, spread and power are not in F; they only filter through NodeArrays.feasible.

Speed: dF depends only on the node's state and the pod's (CPU, GPU milli, GPU count), so it is
cached per such shape and node, and recomputed (vectorised over nodes, GPUs and task types) only
for feasible nodes whose state changed since that shape last looked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.baselines.online import UNLIMITED, Choice, NodeArrays, free_gpus
from scheduler.model import Pod

POPULARITY_COVERAGE = 0.95


@dataclass(frozen=True)
class TaskType:
    cpu_milli: int
    gpu_milli: int  # per GPU; 0 for a CPU-only task
    gpus: int
    gpu_models: tuple[str, ...]
    count: int  # pods of this type in the workload


def task_key(pod: Pod) -> tuple[int, int, int, tuple[str, ...]]:
    milli = 0 if pod.gpus == 0 else (pod.gpu_milli if pod.fractional else 1000)
    return (pod.cpu_milli, milli, pod.gpus, tuple(pod.gpu_models))


def typical_tasks(workload: Sequence[Pod], coverage: float = POPULARITY_COVERAGE) -> list[TaskType]:
    """The most popular task types, until they cover `coverage` of the workload's pods."""
    counts = Counter(task_key(p) for p in workload)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    need = coverage * len(workload)
    tasks: list[TaskType] = []
    covered = 0
    for (cpu, milli, gpus, models), n in ranked:
        if covered >= need:
            break
        tasks.append(TaskType(cpu, milli, gpus, models, n))
        covered += n
    return tasks


class FgdPlacer:
    name = "fgd"

    def __init__(self, workload: Sequence[Pod], coverage: float = POPULARITY_COVERAGE) -> None:
        self.tasks = typical_tasks(workload, coverage)
        t = self.tasks
        self._cpu_t = np.array([m.cpu_milli for m in t], dtype=np.int64)
        self._milli_t = np.array([m.gpu_milli for m in t], dtype=np.int64)
        self._gpus_t = np.array([m.gpus for m in t], dtype=np.int64)
        self._count_t = np.array([m.count for m in t], dtype=np.int64)
        self._arrays: NodeArrays | None = None
        self._access = np.zeros((0, len(t)), dtype=bool)
        # pod shape -> (node version seen, dF, share GPU) per node
        self._cache: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _bind(self, arrays: NodeArrays) -> None:
        if self._arrays is arrays:
            return
        self._arrays = arrays
        self._cache = {}
        # access[n, m]: task m needs GPUs and accepts node n's model.
        self._access = np.zeros((arrays.n_nodes, len(self.tasks)), dtype=bool)
        for m, task in enumerate(self.tasks):
            if task.gpus > 0:
                self._access[:, m] = arrays.model_mask(task.gpu_models)

    def choose(self, arrays: NodeArrays, pod: Pod) -> Choice | None:
        self._bind(arrays)
        nodes = np.flatnonzero(arrays.feasible(pod))
        if nodes.size == 0:
            return None
        shape = (pod.cpu_milli, pod.gpus, pod.gpu_milli if pod.fractional else 0)
        entry = self._cache.get(shape)
        if entry is None:
            n = arrays.n_nodes
            entry = self._cache[shape] = (
                np.full(n, -1, dtype=np.int64),
                np.zeros(n, dtype=np.int64),
                np.zeros(n, dtype=np.int64),
            )
        seen, delta, gpu = entry
        version = arrays.version
        stale = nodes[seen[nodes] != version[nodes]]
        if stale.size:
            delta[stale], gpu[stale] = self._deltas(arrays, pod, stale)
            seen[stale] = version[stale]
        best = int(nodes[np.argmin(delta[nodes])])
        if pod.gpus == 0:
            return best, ()
        if pod.fractional:
            return best, (int(gpu[best]),)
        return best, free_gpus(arrays, best, pod.gpus)

    def fragmentation(self, arrays: NodeArrays) -> np.ndarray:
        """F_n of every node now (popularity as pod counts), for reports and tests."""
        self._bind(arrays)
        nodes = np.arange(arrays.n_nodes)
        res = arrays.residual
        pos = np.maximum(res, 0)
        fit = res[:, :, None] >= self._milli_t
        return self._frag(
            self._access[nodes],
            arrays.cpu_free,
            fit.sum(axis=1),
            np.where(fit, 0, pos[:, :, None]).sum(axis=1),
            pos.sum(axis=1),
        )

    def _frag(
        self, access: np.ndarray, cpu: np.ndarray, fit_count: np.ndarray, q: np.ndarray, tot
    ) -> np.ndarray:
        """sum_m count_m x fragment(m); the trailing axis of every array is the task type."""
        ok = access & (cpu[..., None] >= self._cpu_t) & (fit_count >= self._gpus_t)
        frag = np.where(ok, q, np.asarray(tot)[..., None])
        return (frag * self._count_t).sum(axis=-1)

    def _deltas(
        self, arrays: NodeArrays, pod: Pod, nodes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """dF of placing the pod on each of `nodes`, and the GPU a share would take there."""
        res = arrays.residual[nodes]  # K x G, UNUSABLE (-1) never fits and holds nothing
        pos = np.maximum(res, 0)
        tot = pos.sum(axis=1)
        cpu = arrays.cpu_free[nodes]
        access = self._access[nodes]
        milli = self._milli_t
        fit = res[:, :, None] >= milli  # K x G x T
        frag_part = np.where(fit, 0, pos[:, :, None])
        count = fit.sum(axis=1)
        q = frag_part.sum(axis=1)
        before = self._frag(access, cpu, count, q, tot)
        cpu_after = cpu - pod.cpu_milli
        no_gpu = np.zeros(len(nodes), dtype=np.int64)
        if pod.gpus == 0:
            return self._frag(access, cpu_after, count, q, tot) - before, no_gpu
        if not pod.fractional:
            # Whole GPUs leave free GPUs for empty ones: every GPU task fits on one GPU fewer,
            # and no partly used GPU changes.
            k = pod.gpus
            after = self._frag(access, cpu_after, count - k, q, tot - 1000 * k)
            return after - before, no_gpu
        share = pod.gpu_milli
        fits = res >= share  # K x G: the GPUs the share may take
        left = res - share
        fit_after = left[:, :, None] >= milli
        count_g = count[:, None, :] - fit + fit_after
        q_g = q[:, None, :] - frag_part + np.where(fit_after, 0, np.maximum(left, 0)[:, :, None])
        after_g = self._frag(
            access[:, None, :], cpu_after[:, None], count_g, q_g, (tot - share)[:, None]
        )
        after_g = np.where(fits, after_g, UNLIMITED)
        choice = after_g.argmin(axis=1)
        after = after_g[np.arange(len(nodes)), choice]
        return after - before, choice
