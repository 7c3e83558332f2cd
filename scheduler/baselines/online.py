"""Online baselines: schedulers that place ONE pod at a time, as the originals do.

`NodeArrays` holds the free capacity of every node as numpy arrays, so that `feasible(pod)`, the
mask of nodes a pod fits on now, costs tens of microseconds on a thousand nodes. A `Placer` picks
one node (and its GPUs) from that mask by its own score; the caller applies the choice with
`NodeArrays.place`. Every placer sees the same rules as the planner (scheduler.fit.state):

* CPU and memory: free capacity >= request.
* GPU model: pod.gpu_models empty = any, else the node's model must be listed.
* GPUs: a share (gpus 1, gpuMilli < 1000) needs one usable GPU with residual >= gpuMilli; whole
  GPUs need pod.gpus fully free usable GPUs; gpus 0 needs none. A GPU is usable when its health
  takes new work (policy.takes_new_work) and its node is schedulable; a cordoned node takes no new
  work at all, CPU-only pods included.
* Spread: every pod's limit binds its app; inference pods with an app and no maxPerNode use
  policy.inferenceMaxPerNode.
* Power: the pod's watts on the node's GPU model fit under the budget of every budgeted domain
  in the node's chain (what a user of these schedulers would have to configure by hand).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from scheduler.errors import UserError
from scheduler.model import ClusterSnapshot, PackingPolicy, Pod
from scheduler.power import budgets, domain_chain, idle_watts_by_domain, pod_watts

UNUSABLE = -1  # residual of a GPU that takes no new work, and of padding past a node's last GPU
UNLIMITED = np.int64(1) << 60  # "no limit" for spread limits and power headroom

Choice = tuple[int, tuple[int, ...]]  # node index, GPU indices


def _read_only(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


class NodeArrays:
    """Mutable free capacity of every node; node index = position in snapshot.nodes."""

    def __init__(self, snapshot: ClusterSnapshot, policy: PackingPolicy) -> None:
        self.snapshot = snapshot
        self.policy = policy
        nodes = snapshot.nodes
        n = len(nodes)
        self.n_nodes = n
        self.node_names = [node.name for node in nodes]
        self.node_index = {name: i for i, name in enumerate(self.node_names)}
        self.max_gpus = max((node.gpus for node in nodes), default=0)
        self.model_names = [m.name for m in snapshot.gpu_models]
        self._models = list(snapshot.gpu_models)
        model_id = {name: i for i, name in enumerate(self.model_names)}
        self._model = np.array([model_id[node.gpu_model] for node in nodes], dtype=np.int64)
        self._schedulable = np.array([node.schedulable for node in nodes], dtype=bool)
        self._cpu_cap = np.array([node.cpu_milli for node in nodes], dtype=np.int64)
        self._mem_cap = np.array([node.memory_mi_b for node in nodes], dtype=np.int64)
        self._cpu = self._cpu_cap.copy()
        self._mem = self._mem_cap.copy()
        self._res = np.full((n, self.max_gpus), UNUSABLE, dtype=np.int64)
        for i, node in enumerate(nodes):
            for g in range(node.gpus):
                if node.schedulable and policy.takes_new_work(node.health_of(g)):
                    self._res[i, g] = 1000
        self._gpu_cap = (self._res >= 0).sum(axis=1).astype(np.int64)
        self._free_whole = np.zeros(n, dtype=np.int64)
        self._max_res = np.full(n, UNUSABLE, dtype=np.int64)
        self._free_milli = np.zeros(n, dtype=np.int64)
        self._version = np.zeros(n, dtype=np.int64)
        # Spread: per app, pods per node, the limits of those pods per node, and their minimum.
        self._app_count: dict[str, np.ndarray] = {}
        self._app_limits: dict[str, dict[int, Counter[int]]] = {}
        self._app_min: dict[str, np.ndarray] = {}
        # Power: draw per domain (idle of every GPU + running work), budgets, chains.
        self._domains = [d.name for d in snapshot.power_domains]
        domain_id = {name: i for i, name in enumerate(self._domains)}
        chains = domain_chain(snapshot)
        self._chain = [
            np.array([domain_id[d] for d in chains.get(node.power_domain, [])], dtype=np.int64)
            for node in nodes
        ]
        budget = budgets(snapshot)
        self._budgeted = bool(budget)
        self._budget = np.array(
            [budget.get(d, UNLIMITED) for d in self._domains] + [UNLIMITED], dtype=np.int64
        )
        self._draw = np.zeros(len(self._domains) + 1, dtype=np.int64)
        for d, w in idle_watts_by_domain(snapshot).items():
            self._draw[domain_id[d]] = w
        depth = max((len(c) for c in self._chain), default=0)
        pad = len(self._domains)  # a spare domain with no budget pads the shorter chains
        self._chain_matrix = np.full((n, max(depth, 1)), pad, dtype=np.int64)
        for i, chain in enumerate(self._chain):
            self._chain_matrix[i, : len(chain)] = chain
        self._headroom = np.full(n, UNLIMITED, dtype=np.int64)
        self._headroom_stale = True
        self._watts: dict[tuple, np.ndarray] = {}
        self._model_masks: dict[tuple[str, ...], np.ndarray] = {}
        for i in range(n):
            self._reindex(i)
        for p in snapshot.pods:
            if p.node is not None:
                self._apply(p, self.node_index[p.node], p.gpu_indices, +1)
        self._version[:] = 0

    # -- rules -----------------------------------------------------------------------------
    def spread_limit(self, pod: Pod) -> int | None:
        return self.policy.spread_limit(pod)

    def watts(self, pod: Pod) -> np.ndarray:
        """The pod's watts above idle on every node (by the node's GPU model)."""
        key = (pod.kind, pod.gpus, pod.gpu_milli, pod.power_watts_per_gpu)
        w = self._watts.get(key)
        if w is None:
            per_model = np.array(
                [pod_watts(pod, m, self.policy) for m in self._models], dtype=np.int64
            )
            w = self._watts[key] = _read_only(per_model[self._model])
        return w

    def model_mask(self, models: Sequence[str]) -> np.ndarray:
        """Nodes whose GPU model is one of `models` (empty = every node)."""
        key = tuple(models)
        mask = self._model_masks.get(key)
        if mask is None:
            if key:
                ids = [i for i, name in enumerate(self.model_names) if name in key]
                mask = np.isin(self._model, np.array(ids, dtype=np.int64))
            else:
                mask = np.ones(self.n_nodes, dtype=bool)
            mask = self._model_masks[key] = _read_only(mask)
        return mask

    def feasible(self, pod: Pod) -> np.ndarray:
        """Boolean mask over nodes where the pod fits now."""
        ok = self._schedulable & (self._cpu >= pod.cpu_milli) & (self._mem >= pod.memory_mi_b)
        if pod.gpu_models:
            ok &= self.model_mask(pod.gpu_models)
        if pod.gpus > 0:
            if pod.fractional:
                ok &= self._max_res >= pod.gpu_milli
            else:
                ok &= self._free_whole >= pod.gpus
            if self._budgeted:
                w = self.watts(pod)
                ok &= (w <= self.headroom) | (w == 0)
        if pod.app is not None:
            ok &= self._spread_ok(pod)
        return ok

    def _spread_ok(self, pod: Pod) -> np.ndarray:
        own = self.spread_limit(pod)
        count = self._app_count.get(pod.app)  # type: ignore[arg-type]
        if count is None:
            return np.ones(self.n_nodes, dtype=bool)  # no pod of the app anywhere; own >= 1
        limit = self._app_min[pod.app]  # type: ignore[index]
        if own is not None:
            limit = np.minimum(limit, own)
        return count < limit

    # -- changes ---------------------------------------------------------------------------
    def place(self, pod: Pod, node: int, gpus: Sequence[int]) -> None:
        self._apply(pod, node, gpus, +1)

    def remove(self, pod: Pod, node: int, gpus: Sequence[int]) -> None:
        self._apply(pod, node, gpus, -1)

    def fail_gpu(self, node: int, gpu: int) -> None:
        """The GPU takes no work from now on; remove the pods on it first."""
        if self._res[node, gpu] != UNUSABLE:
            self._res[node, gpu] = UNUSABLE
            self._gpu_cap[node] -= 1
            self._reindex(node)
            self._version[node] += 1

    def _apply(self, pod: Pod, node: int, gpus: Sequence[int], sign: int) -> None:
        self._cpu[node] -= sign * pod.cpu_milli
        self._mem[node] -= sign * pod.memory_mi_b
        if pod.app is not None:
            self._count_app(pod, node, sign)
        share = pod.gpu_milli if pod.fractional else 1000
        row = self._res[node]
        for g in gpus:
            if row[g] != UNUSABLE:
                row[g] -= sign * share
        self._reindex(node)
        if pod.gpus > 0:
            w = int(self.watts(pod)[node])
            if w:
                self._draw[self._chain[node]] += sign * w
                self._headroom_stale = True
        self._version[node] += 1

    def _count_app(self, pod: Pod, node: int, sign: int) -> None:
        app: str = pod.app  # type: ignore[assignment]
        count = self._app_count.get(app)
        if count is None:
            count = self._app_count[app] = np.zeros(self.n_nodes, dtype=np.int64)
            self._app_limits[app] = {}
            self._app_min[app] = np.full(self.n_nodes, UNLIMITED, dtype=np.int64)
        count[node] += sign
        limit = self.spread_limit(pod)
        if limit is None:
            return
        limits = self._app_limits[app].setdefault(node, Counter())
        limits[limit] += sign
        live = [lim for lim, k in limits.items() if k > 0]
        self._app_min[app][node] = min(live) if live else UNLIMITED

    def _reindex(self, node: int) -> None:
        row = self._res[node]
        if row.size:
            self._free_whole[node] = np.count_nonzero(row == 1000)
            self._max_res[node] = row.max()
            self._free_milli[node] = row[row > 0].sum()

    # -- read-only views -------------------------------------------------------------------
    @property
    def headroom(self) -> np.ndarray:
        """Per node: min over the budgeted domains of its chain of budget - draw (watts)."""
        if self._headroom_stale:
            if self._budgeted:
                left = self._budget - self._draw
                left[-1] = UNLIMITED
                self._headroom = left[self._chain_matrix].min(axis=1)
            self._headroom_stale = False
        return _read_only(self._headroom)

    @property
    def cpu_free(self) -> np.ndarray:
        return _read_only(self._cpu)

    @property
    def mem_free(self) -> np.ndarray:
        return _read_only(self._mem)

    @property
    def cpu_capacity(self) -> np.ndarray:
        return _read_only(self._cpu_cap)

    @property
    def mem_capacity(self) -> np.ndarray:
        return _read_only(self._mem_cap)

    @property
    def residual(self) -> np.ndarray:
        """N x max_gpus residual milli per GPU; UNUSABLE (-1) for unusable GPUs and padding."""
        return _read_only(self._res)

    @property
    def gpu_capacity(self) -> np.ndarray:
        """Usable GPUs per node (what a device plugin would report as allocatable)."""
        return _read_only(self._gpu_cap)

    @property
    def free_whole(self) -> np.ndarray:
        """Fully free usable GPUs per node."""
        return _read_only(self._free_whole)

    @property
    def max_residual(self) -> np.ndarray:
        """The largest residual milli of a usable GPU per node (UNUSABLE if none)."""
        return _read_only(self._max_res)

    @property
    def free_milli(self) -> np.ndarray:
        """Free milli-GPU per node, summed over its usable GPUs."""
        return _read_only(self._free_milli)

    @property
    def used_milli(self) -> np.ndarray:
        """Allocated milli-GPU per node on its usable GPUs."""
        return self._gpu_cap * 1000 - self._free_milli

    @property
    def model_index(self) -> np.ndarray:
        """Per node, the index of its GPU model in model_names."""
        return _read_only(self._model)

    @property
    def version(self) -> np.ndarray:
        """Per node, how many changes it has seen since construction (for caches)."""
        return _read_only(self._version)

    def domain_draw(self) -> dict[str, int]:
        """Watts per power domain now: idle of every GPU below it plus the placed work."""
        return {d: int(w) for d, w in zip(self._domains, self._draw[:-1], strict=True)}


# -- GPU choice within a node --------------------------------------------------------------
def gpu_request(pod: Pod) -> float:
    """The pod's nvidia.com/gpu request in whole GPUs (a share counts as gpuMilli / 1000)."""
    if pod.gpus == 0:
        return 0.0
    return pod.gpu_milli / 1000 if pod.fractional else float(pod.gpus)


def share_gpu(arrays: NodeArrays, node: int, milli: int, *, fullest: bool) -> int:
    """The GPU a share goes to on this node: the fullest (or emptiest) that fits; ties lowest."""
    row = arrays.residual[node]
    fits = row >= milli
    key = np.where(fits, row if fullest else -row, UNLIMITED)
    return int(np.argmin(key))


def free_gpus(arrays: NodeArrays, node: int, count: int) -> tuple[int, ...]:
    """The lowest-index fully free usable GPUs."""
    return tuple(int(g) for g in np.flatnonzero(arrays.residual[node] == 1000)[:count])


def gpus_on(arrays: NodeArrays, pod: Pod, node: int, *, fullest: bool) -> tuple[int, ...]:
    """The GPUs the pod gets on a node it fits on: a share by `fullest`, whole GPUs lowest-first."""
    if pod.gpus == 0:
        return ()
    if pod.fractional:
        return (share_gpu(arrays, node, pod.gpu_milli, fullest=fullest),)
    return free_gpus(arrays, node, pod.gpus)


# -- placers -------------------------------------------------------------------------------
class Placer(Protocol):
    name: str

    def choose(self, arrays: NodeArrays, pod: Pod) -> Choice | None:
        """The node index and GPU indices for the pod, or None when it fits nowhere.

        Must not change `arrays`: the caller applies the choice with `arrays.place`.
        """
        ...


PLACER_NAMES = ("spread", "binpack", "volcano-binpack", "best-fit", "fgd")


def make_placer(name: str, workload: Sequence[Pod], policy: PackingPolicy) -> Placer:
    """The placer called `name`; `workload` (the trace's pods) is FGD's target workload."""
    from scheduler.baselines.best_fit_online import BestFitPlacer
    from scheduler.baselines.binpack import BinpackPlacer
    from scheduler.baselines.fgd import FgdPlacer
    from scheduler.baselines.spread import SpreadPlacer
    from scheduler.baselines.volcano_binpack import VolcanoBinpackPlacer

    del policy  # every rule the placers need is in NodeArrays
    if name == "spread":
        return SpreadPlacer()
    if name == "binpack":
        return BinpackPlacer()
    if name == "volcano-binpack":
        return VolcanoBinpackPlacer()
    if name == "best-fit":
        return BestFitPlacer()
    if name == "fgd":
        return FgdPlacer(workload)
    raise UserError(
        f"unknown baseline scheduler '{name}'", f"use one of: {', '.join(PLACER_NAMES)}"
    )
