"""Mutable free capacity for one cycle, with buckets that make best-fit look-ups cheap.

Nodes of one class start identical; buckets are keyed by (class, free whole GPUs) and by
(class, residual milli of a partly used GPU), so a look-up walks a few buckets, not every node.

Best fit alone strands GPUs: a node filled with CPU-hungry pods runs out of CPU with GPUs still
free, and no later pod can use them. Look-ups therefore weigh each candidate by how much GPU
capacity it would leave without the CPU and memory to feed it at the workload's own mix (see
`stranded`), and best fit decides among equals.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable

from scheduler.fit.classes import NodeClass, victim_signature
from scheduler.fit.filters import NodeFilters
from scheduler.fit.pod_rules import PodRules
from scheduler.model import ClusterSnapshot, PackingPolicy, Pod
from scheduler.model.node_rules import HostPort
from scheduler.power import budgets, domain_chain, domain_power, pod_watts

UNUSABLE = -1  # a GPU that takes no new work (health, policy)

Placement = tuple[int, tuple[int, ...]]  # node index, GPU indices
_SHARE_SCAN = 64  # improving candidates a share's best-fit look-up considers before it settles
_WHOLE_SCAN = 64  # fitting nodes a whole-GPU pod's look-up weighs, fewest free GPUs first
# Of each node type (model, GPUs, CPU, memory), the last this many empty nodes are kept for pods
# that need a whole node of that type: opening one counts as stranding a GPU.
_KEEP_EMPTY = 8


class ClusterState:
    def __init__(
        self,
        snapshot: ClusterSnapshot,
        policy: PackingPolicy,
        classes: list[NodeClass],
        class_of: list[int],
    ) -> None:
        self.snapshot = snapshot
        self.policy = policy
        self.classes = classes
        self.class_of = class_of
        self.models = {m.name: m for m in snapshot.gpu_models}
        self.nodes = snapshot.nodes
        self.node_index = {n.name: i for i, n in enumerate(snapshot.nodes)}
        chains = domain_chain(snapshot)
        self.chain = [chains[n.power_domain] for n in snapshot.nodes]
        self.budget = budgets(snapshot)
        # Budgeted domains in every node's chain (the facility, most often).
        common = set.intersection(*(set(c) for c in self.chain)) if self.chain else set()
        self._shared = [d for d in common if d in self.budget]
        self._max_tdp = max((m.tdp_watts for m in snapshot.gpu_models), default=0)
        self._node_of_model = {n.gpu_model: i for i, n in reversed(list(enumerate(snapshot.nodes)))}
        running = [p for p in snapshot.pods if p.node is not None]
        self.power = domain_power(snapshot, ((p, p.node) for p in running), policy)  # type: ignore[misc]
        self.cpu = [n.cpu_milli for n in snapshot.nodes]
        self.mem = [n.memory_mi_b for n in snapshot.nodes]
        # kube-scheduler's filters, and what pods ask beyond GPUs, CPU and memory: read once
        # per snapshot however many states a cycle builds.
        self.filters = NodeFilters.of(snapshot)
        # Other resources (NodeResourcesFit), free per node: only where a pod asks for some.
        self.extra: list[Counter[str]] | None = None
        if self.filters.resources_asked:
            self.extra = [Counter(n.resources) for n in snapshot.nodes]
        # Host ports bound per node (NodePorts): only where a pod binds some.
        self.ports: list[Counter[HostPort]] | None = None
        if self.filters.ports_asked:
            self.ports = [Counter() for _ in snapshot.nodes]
        # Inter-pod affinity and topology spread (scheduler.fit.pod_rules): only on a state that
        # places the pods they bear on (planner.pod_rules), see follow_pod_rules.
        self.pod_rules: PodRules | None = None
        # Whether any of that is asked at all: the hot paths test this one flag.
        self._others = self.extra is not None or self.ports is not None
        self.apps: list[Counter[str]] = [Counter() for _ in snapshot.nodes]
        # The spread limits of the pods on each node, by app: every pod's limit binds its app.
        self.limits: list[dict[str, Counter[int]]] = [defaultdict(Counter) for _ in snapshot.nodes]
        used = [[0] * n.gpus for n in snapshot.nodes]
        for p in running:
            i = self.node_index[p.node]  # type: ignore[index]
            self.cpu[i] -= p.cpu_milli
            self.mem[i] -= p.memory_mi_b
            if p.resources and self.extra is not None:
                self.extra[i].subtract(p.resources)
            if p.host_ports and self.ports is not None:
                self.ports[i].update(p.host_ports)
            if p.app:
                self.apps[i][p.app] += 1
                limit = self.spread_limit(p)
                if limit is not None:
                    self.limits[i][p.app][limit] += 1
            for g in p.gpu_indices:
                used[i][g] += p.gpu_milli if p.fractional else 1000
        self.usable = [
            policy.gpus_taking_work(n) if n.schedulable else [False] * n.gpus
            for n in snapshot.nodes
        ]
        self.res = [
            [1000 - used[i][g] if self.usable[i][g] else UNUSABLE for g in range(n.gpus)]
            for i, n in enumerate(snapshot.nodes)
        ]
        self.whole: dict[tuple[int, int], dict[int, None]] = defaultdict(dict)
        # For each count of free whole GPUs, the classes that have a node with exactly that many.
        self.with_free: list[dict[int, None]] = [
            {} for _ in range(1 + max((n.gpus for n in snapshot.nodes), default=0))
        ]
        self.with_partial: dict[int, None] = {}
        self.part: dict[tuple[int, int], dict[tuple[int, int], None]] = defaultdict(dict)
        self.part_levels: dict[int, Counter[int]] = defaultdict(Counter)
        # For best fit's share look-up: the nodes with a partly used GPU by their free GPU milli
        # (the first key of best fit), and tickets that give the order a walk of the pools and
        # buckets above would meet candidates in: when each pool last entered with_partial, and
        # when each partly used GPU entered its bucket. Ties go to the earliest.
        self.share_nodes: dict[int, dict[int, None]] = defaultdict(dict)
        self._frees: list[int] | None = []  # sorted keys of share_nodes; None when stale
        self._entered: dict[int, int] = {}
        self._part_ticket: dict[tuple[int, int], int] = {}
        self._ticket = 0
        self._max_part = [0] * len(snapshot.nodes)  # the most room on a partly used GPU
        # Power only grows while nothing is removed: a pool that refused w watts refuses more
        # until the next removal (epoch). Pool -> (epoch, least watts refused).
        self._refused: dict[int, tuple[int, int]] = {}
        self._epoch = 0
        self._watts: dict[int, dict[str, int]] = {}
        self.pressure = _model_pressure(snapshot)
        self.cpu_per_milli, self.mem_per_milli = _workload_mix(snapshot)
        # False for the best-fit baseline: look-ups are best fit alone.
        self.weigh_stranding = True
        self._within: Collection[int] | None = None  # find's class filter, while it runs
        # Buckets are kept per pool of nodes (one GPU model in one leaf domain, so one power
        # check and one model check stand for all), not per class: after hours of churn nearly
        # every node is a class of its own, and a look-up would walk thousands of them.
        self.pool_of = [-1] * len(snapshot.nodes)
        self.pool_rep: list[int] = []
        # A pool is also one kind of node for the filters: one check stands for its nodes.
        if self.filters.trivial:  # the hot path: no filter has a say, so none is asked
            self.model_ok = self._model_ok  # type: ignore[method-assign]
        pool_ids: dict[tuple[str, str, int], int] = {}
        for i, n in enumerate(snapshot.nodes):
            if class_of[i] >= 0:
                key = (n.gpu_model, n.power_domain, self.filters.kind[i])
                if key not in pool_ids:
                    pool_ids[key] = len(self.pool_rep)
                    self.pool_rep.append(i)
                self.pool_of[i] = pool_ids[key]
        self.pool_of_class = [self.pool_of[c.nodes[0]] if c.nodes else -1 for c in classes]
        self.pool_model = [self.nodes[i].gpu_model for i in self.pool_rep]
        self.pool_kind = [self.filters.kind[i] for i in self.pool_rep]
        self._pool_step = [
            round(self.pressure.get(self.nodes[i].gpu_model, 0.0), 1) for i in self.pool_rep
        ]
        self._steps = sorted(set(self._pool_step))
        self._within_pools: set[int] | None = None
        self._pools_cache: dict[int, tuple[Collection[int], set[int], list[int]]] = {}
        self._within_sorted: list[int] | None = None  # _within_pools, in order
        self.nfree = [0] * len(snapshot.nodes)
        self._free_milli = [0] * len(snapshot.nodes)  # kept by _index: look-ups read it often
        # Empty nodes (every GPU free) per node type, for _least_stranding.
        self.type_of = [(n.gpu_model, n.gpus, n.cpu_milli, n.memory_mi_b) for n in snapshot.nodes]
        self.empty_of: Counter[tuple] = Counter()
        for i in range(len(snapshot.nodes)):
            self._index(i)

    def follow_pod_rules(self, rules: PodRules) -> None:
        """Look-ups from now on keep to the rules, and places and removals update them."""
        self.pod_rules = rules
        self._others = True

    @classmethod
    def unclassed(cls, snapshot: ClusterSnapshot, policy: PackingPolicy) -> ClusterState:
        """The cluster read in without node classes, for look-ups over the whole cluster
        (find without `within`), which never ask for a class; `reclassed` gives it classes."""
        return cls(snapshot, policy, [], [0 if n.schedulable else -1 for n in snapshot.nodes])

    def reclassed(
        self, snapshot: ClusterSnapshot, classes: list[NodeClass], class_of: list[int]
    ) -> ClusterState:
        """This state, read from a snapshot of the same nodes that holds the pods this state
        placed and removed since it was read (the moves of the cycle), with that snapshot's
        classes. Buckets are per pool, which classes do not change, so only the classes are
        swapped: reading 16,384 nodes in again cost the cycle 0.5 s."""
        if [c >= 0 for c in class_of] != [c >= 0 for c in self.class_of]:
            raise ValueError("reclassed: the snapshot's schedulable nodes differ from the state's")
        self.snapshot = snapshot
        self.classes, self.class_of = classes, class_of
        self.pool_of_class = [self.pool_of[c.nodes[0]] if c.nodes else -1 for c in classes]
        self._pools_cache = {}
        return self

    def copy(self) -> ClusterState:
        """An independent state as it stands, for another candidate plan of the same cycle: at
        thousands of nodes a tenth of the time building one from the snapshot takes. What a
        cycle never changes (nodes, classes, domains, pools, caches of pure functions) is shared."""
        out = copy.copy(self)
        out.power = dict(self.power)
        out.cpu, out.mem = list(self.cpu), list(self.mem)
        out.extra = None if self.extra is None else [Counter(e) for e in self.extra]
        out.ports = None if self.ports is None else [Counter(p) for p in self.ports]
        out.pod_rules = None if self.pod_rules is None else self.pod_rules.copy()
        out.apps = [Counter(a) for a in self.apps]
        out.limits = [
            defaultdict(Counter, {app: Counter(c) for app, c in lim.items()}) for lim in self.limits
        ]
        out.res = [list(r) for r in self.res]
        out.whole = defaultdict(dict, {k: dict(v) for k, v in self.whole.items()})
        out.with_free = [dict(d) for d in self.with_free]
        out.with_partial = dict(self.with_partial)
        out.part = defaultdict(dict, {k: dict(v) for k, v in self.part.items()})
        out.part_levels = defaultdict(Counter, {k: Counter(v) for k, v in self.part_levels.items()})
        out.share_nodes = defaultdict(dict, {k: dict(v) for k, v in self.share_nodes.items()})
        out._frees = None
        out._entered = dict(self._entered)
        out._part_ticket = dict(self._part_ticket)
        out._max_part = list(self._max_part)
        out._refused = dict(self._refused)
        out.nfree, out._free_milli = list(self.nfree), list(self._free_milli)
        out.empty_of = Counter(self.empty_of)
        return out

    # -- buckets ---------------------------------------------------------------------------
    def _index(self, i: int) -> None:
        self._free_milli[i] = sum(r for r in self.res[i] if r > 0)
        c = self.pool_of[i]
        if c < 0:
            return
        self.nfree[i] = k = sum(1 for r in self.res[i] if r == 1000)
        if k == len(self.res[i]):
            self.empty_of[self.type_of[i]] += 1
        bucket = self.whole[(c, k)]
        if not bucket:
            self.with_free[k][c] = None
        bucket[i] = None
        shares = 0
        for g, r in enumerate(self.res[i]):
            if 0 < r < 1000:
                shares = max(shares, r)
                self.part[(c, r)][(i, g)] = None
                self._part_ticket[(i, g)] = self._ticket
                self._ticket += 1
                self.part_levels[c][r] += 1
                if c not in self.with_partial:
                    self.with_partial[c] = None
                    self._entered[c] = self._ticket
                    self._ticket += 1
        self._max_part[i] = shares
        if shares:
            f = self._free_milli[i]
            if f not in self.share_nodes:
                self._frees = None
            self.share_nodes[f][i] = None

    def _unindex(self, i: int) -> None:
        c = self.pool_of[i]
        if c < 0:
            return
        k = self.nfree[i]
        if k == len(self.res[i]):
            self.empty_of[self.type_of[i]] -= 1
        bucket = self.whole[(c, k)]
        del bucket[i]
        if not bucket:
            del self.with_free[k][c]
        shares = False
        for g, r in enumerate(self.res[i]):
            if 0 < r < 1000:
                shares = True
                del self.part[(c, r)][(i, g)]
                self.part_levels[c][r] -= 1
                if not self.part_levels[c][r]:
                    del self.part_levels[c][r]
                    if not self.part_levels[c]:
                        del self.with_partial[c]
        if shares:
            f = self._free_milli[i]  # as _index left it: the node is not changed yet
            nodes = self.share_nodes[f]
            del nodes[i]
            if not nodes:
                del self.share_nodes[f]
                self._frees = None

    # -- rules -----------------------------------------------------------------------------
    def spread_limit(self, pod: Pod) -> int | None:
        return self.policy.spread_limit(pod)

    def victim_signature(self, pod: Pod) -> tuple:
        """A running pod's victim signature, as node_classes gave it (fit.classes)."""
        return victim_signature(pod, self.usable[self.node_index[pod.node]])  # type: ignore[index]

    def watts(self, pod: Pod, node: int) -> int:
        model = self.nodes[node].gpu_model
        # Keyed by identity: the pods outlive the cycle's state, so their ids stay unique.
        by_model = self._watts.get(id(pod))
        if by_model is None:
            by_model = self._watts[id(pod)] = {}
        w = by_model.get(model)
        if w is None:
            w = by_model[model] = pod_watts(pod, self.models[model], self.policy)
        return w

    def power_ok(self, pod: Pod, node: int) -> bool:
        w = self.watts(pod, node)
        return not w or self.power_room(node, w)

    def power_room(self, node: int, watts: int) -> bool:
        """Whether every budgeted domain above the node takes `watts` more (less, if < 0)."""
        power, budget = self.power, self.budget
        for d in self.chain[node]:
            b = budget.get(d)
            if b is not None and power[d] + watts > b:
                return False
        return True

    def model_ok(self, pod: Pod, node: int) -> bool:
        """The pod's GPU models, and kube-scheduler's node filters (scheduler.fit.filters)."""
        if pod.gpu_models and self.nodes[node].gpu_model not in pod.gpu_models:
            return False
        return self.filters.admits_kind(pod, self.filters.kind[node])

    def _model_ok(self, pod: Pod, node: int) -> bool:
        return not pod.gpu_models or self.nodes[node].gpu_model in pod.gpu_models

    def host_ok(self, pod: Pod, node: int) -> bool:
        """Everything but the GPUs: CPU, memory, spread."""
        if self.cpu[node] < pod.cpu_milli or self.mem[node] < pod.memory_mi_b:
            return False
        if self._others and not self._others_ok(pod, node):
            return False
        if pod.app is None:
            return True
        if not self.apps[node][pod.app]:
            # No pod of the app here, so no limit of theirs applies (the common case).
            own = self.spread_limit(pod)
            return own is None or own > 0
        limits = [lim for lim, k in self.limits[node][pod.app].items() if k > 0]
        own = self.spread_limit(pod)
        if own is not None:
            limits.append(own)
        return not limits or self.apps[node][pod.app] < min(limits)

    def _others_ok(self, pod: Pod, node: int) -> bool:
        if pod.resources and not self.extra_ok(pod.resources, node):
            return False
        if pod.host_ports and not self.ports_ok(pod.host_ports, node):
            return False
        return self.pod_rules is None or self.pod_rules.admits(pod, node)

    def ports_ok(self, wants: Iterable[HostPort], node: int) -> bool:
        """None of the ports is bound on the node already (NodePorts)."""
        if self.ports is None:
            return True
        used = [p for p, n in self.ports[node].items() if n > 0]
        return not any(w.conflicts(u) for w in wants for u in used)

    def extra_ok(self, wants: dict[str, int], node: int) -> bool:
        """Resources other than GPUs, CPU and memory free on the node (NodeResourcesFit)."""
        free = self.extra[node] if self.extra is not None else self.nodes[node].resources
        return all(free.get(r, 0) >= q for r, q in wants.items())

    # -- changes ---------------------------------------------------------------------------
    def _apply(self, pod: Pod, node: int, gpus: Iterable[int], sign: int) -> None:
        self._unindex(node)
        self.cpu[node] -= sign * pod.cpu_milli
        self.mem[node] -= sign * pod.memory_mi_b
        if pod.resources and self.extra is not None:
            for r, q in pod.resources.items():
                self.extra[node][r] -= sign * q
        if pod.host_ports and self.ports is not None:
            for hp in pod.host_ports:
                self.ports[node][hp] += sign
        if self.pod_rules is not None:
            self.pod_rules.add(pod, node, sign)
        if pod.app:
            self.apps[node][pod.app] += sign
            limit = self.spread_limit(pod)
            if limit is not None:
                self.limits[node][pod.app][limit] += sign
        for g in gpus:
            if self.res[node][g] != UNUSABLE:
                self.res[node][g] -= sign * (pod.gpu_milli if pod.fractional else 1000)
        w = self.watts(pod, node)
        for d in self.chain[node]:
            self.power[d] += sign * w
        if sign < 0 and w:
            self._epoch += 1
        self._index(node)

    def stranded(self, node: int, pod: Pod | None = None) -> float:
        """GPU milli free on the node (after placing `pod`, if given) that its free CPU or memory
        could not feed at the workload's CPU and memory per GPU milli: capacity no typical pod
        can use there."""
        free, cpu, mem = self.free_milli(node), self.cpu[node], self.mem[node]
        if pod is not None:
            free -= pod.milli_total
            cpu -= pod.cpu_milli
            mem -= pod.memory_mi_b
        short = 0.0
        if self.cpu_per_milli:
            short = max(short, free - cpu / self.cpu_per_milli)
        if self.mem_per_milli:
            short = max(short, free - mem / self.mem_per_milli)
        return short

    def strands(self, pod: Pod, node: int) -> float:
        """How much placing the pod on the node adds to its stranded GPU milli (may be < 0: a
        CPU-light pod on a node short of CPU uses GPU capacity that would be stranded)."""
        return self.stranded(node, pod) - self.stranded(node)

    def _strands_of(self, pod: Pod) -> Callable[[int], float]:
        """`strands` for one pod, its constants taken once: the whole-GPU look-up weighs tens of
        nodes per pod."""
        cpm, mpm = self.cpu_per_milli, self.mem_per_milli
        need, cpu_need, mem_need = pod.milli_total, pod.cpu_milli, pod.memory_mi_b
        free_of, cpu_of, mem_of = self._free_milli, self.cpu, self.mem

        def short(free: float, cpu: float, mem: float) -> float:
            out = 0.0
            if cpm and free - cpu / cpm > out:
                out = free - cpu / cpm
            if mpm and free - mem / mpm > out:
                out = free - mem / mpm
            return out

        def strands(node: int) -> float:
            free, cpu, mem = free_of[node], cpu_of[node], mem_of[node]
            return short(free - need, cpu - cpu_need, mem - mem_need) - short(free, cpu, mem)

        return strands

    def place(self, pod: Pod, node: int, gpus: tuple[int, ...]) -> None:
        self._apply(pod, node, gpus, +1)

    def remove(self, pod: Pod, node: int, gpus: tuple[int, ...]) -> None:
        self._apply(pod, node, gpus, -1)

    # -- look-ups --------------------------------------------------------------------------
    def find(self, pod: Pod, within: Collection[int] | None = None) -> Placement | None:
        """Best fit over the whole cluster: for a share the node, then the GPU, with the least
        room left (see _find_fractional), else a fresh GPU; for whole GPUs the node with the
        fewest free GPUs. Before best fit, the place that strands the least GPU capacity (see
        `strands`). A pod that any model will do looks at the models that pinned work needs
        least first (see _pressure_step): it should not take the only GPUs a pinned pod can use
        while others are free. `within`, if given, limits the search to those node classes."""
        if within is not None:
            self._within = within
            self._within_pools, self._within_sorted = self._pools_of(within)
            try:
                return self.find(pod)
            finally:
                self._within = self._within_pools = self._within_sorted = None
        if pod.gpus == 0:
            return self._find_cpu_only(pod)
        if self._over_shared_budget(pod):
            return None
        ok: dict[int, bool] = {}  # pool -> model and power allow the pod there (once a look-up)

        def pool_ok(c: int) -> bool:
            v = ok.get(c)
            if v is None:
                v = ok[c] = self._pool_ok(pod, c)
            return v

        if pod.fractional and not self.weigh_stranding and self._within is None:
            found = self._best_fit_share(pod, pool_ok)
            if found is not None:
                return found
        elif pod.fractional:
            # A partly used GPU first, anywhere: measured on openb gpuspec33, steering shares
            # off the needed models as well ends 1.1 points lower at 130% demand.
            best: tuple[tuple[float, ...], Placement] | None = None
            for c in self._pools_in(self.with_partial):
                if not pool_ok(c):
                    continue
                found = self._find_fractional(pod, c)
                if found is None:
                    continue
                key = (self._pressure_step(pod, c), *found[0])
                if best is None or key < best[0]:
                    best = (key, found[1])
            if best is not None:
                return best[1]
        if not self.weigh_stranding and self._within is None:
            return self._best_fit_whole(pod, pool_ok)
        for step in [0.0] if pod.gpu_models or not self.pressure else self._steps:
            buckets = (
                (c, k)
                for k in range(pod.gpus, len(self.with_free))
                for c in self._pools_in(self.with_free[k])
                if self._pressure_step(pod, c) == step and pool_ok(c)
            )
            found = self._least_stranding(pod, buckets)
            if found is not None:
                return found
        return None

    def _best_fit_share(self, pod: Pod, pool_ok: Callable[[int], bool]) -> Placement | None:
        """Best fit's share look-up over the whole cluster: the partly used GPU that leaves the
        least on its node, then on the GPU, the lowest pressure step first (see _pressure_step);
        ties to the pool that has held partly used GPUs longest, then to the GPU longest in its
        bucket, the order in which a walk of every pool's buckets meets them. Found by walking
        nodes upward from the least free, so that after hours of churn a look-up reads a few
        nodes, not every pool."""
        milli = pod.gpu_milli
        if self._frees is None:
            self._frees = sorted(self.share_nodes)
        frees = self._frees[bisect_left(self._frees, milli) :]
        flat = bool(pod.gpu_models) or not self.pressure
        pool_step, pool_of, entered = self._pool_step, self.pool_of, self._entered
        max_part = self._max_part
        for step in [0.0] if flat else self._steps:
            best: tuple[tuple[int, int, int], Placement] | None = None
            for f in frees:
                if best is not None:
                    break  # every node further on leaves more free
                for node in self.share_nodes[f]:
                    if max_part[node] < milli:
                        continue
                    c = pool_of[node]
                    if not (flat or pool_step[c] == step) or not pool_ok(c):
                        continue
                    gpu = self._best_partial(node, milli)
                    if gpu is None or not self.host_ok(pod, node):
                        continue
                    key = (self.res[node][gpu], entered[c], self._part_ticket[(node, gpu)])
                    if best is None or key < best[0]:
                        best = (key, (node, (gpu,)))
            if best is not None:
                return best[1]
        return None

    def _best_partial(self, node: int, milli: int) -> int | None:
        """The node's partly used GPU with the least room that still takes `milli`; ties to the
        GPU longest in its bucket."""
        best: tuple[int, int] | None = None
        gpu = None
        for g, r in enumerate(self.res[node]):
            if milli <= r < 1000:
                key = (r, self._part_ticket[(node, g)])
                if best is None or key < best:
                    best, gpu = key, g
        return gpu

    def _best_fit_whole(self, pod: Pod, pool_ok: Callable[[int], bool]) -> Placement | None:
        """Best fit's look-up for fresh GPUs, as _least_stranding makes it without the weighing:
        the first node that fits, fewest free GPUs first, walked in place (the hot path of a
        cycle at thousands of nodes). Pools whose power refused as much this epoch are passed
        over before pool_ok is asked: where racks are at their budgets, most pools are, and
        asking each cost best fit two thirds of its time at 16,384 nodes."""
        flat = bool(pod.gpu_models) or not self.pressure
        pool_step, host_ok, whole = self._pool_step, self.host_ok, self.whole
        refused, epoch, pool_rep, pool_model = (
            self._refused,
            self._epoch,
            self.pool_rep,
            self.pool_model,
        )
        models = pod.gpu_models
        watts: dict[str, int] = {}  # the pod's draw by GPU model
        for step in [0.0] if flat else self._steps:
            for k in range(pod.gpus, len(self.with_free)):
                for c in self.with_free[k]:
                    if not (flat or pool_step[c] == step):
                        continue
                    model = pool_model[c]
                    if models and model not in models:
                        continue
                    w = watts.get(model)
                    if w is None:
                        w = watts[model] = self.watts(pod, pool_rep[c])
                    r = refused.get(c)
                    if r is not None and r[0] == epoch and w >= r[1]:
                        continue
                    if pool_ok(c):
                        for node in whole[(c, k)]:
                            if host_ok(pod, node):
                                return node, self._fresh_gpus(pod, node)
        return None

    def _pools_of(self, within: Collection[int]) -> tuple[set[int], list[int]]:
        """The pools of a set of classes, as a set and in order; a realisation asks for the
        same few sets thousands of times, so each is worked out once (kept with the set, whose
        identity keys it)."""
        seen = self._pools_cache.get(id(within))
        if seen is None or seen[0] is not within:
            pools = {self.pool_of_class[c] for c in within}
            seen = (within, pools, sorted(pools))
            self._pools_cache[id(within)] = seen
        return seen[1], seen[2]

    def _least_stranding(self, pod: Pod, buckets: Iterable[tuple[int, int]]) -> Placement | None:
        """Among the first _WHOLE_SCAN nodes with room for the pod on fresh GPUs (buckets of
        (pool, free GPUs), fewest free GPUs first), the one that strands the least, then the
        best fit. Opening one of the last _KEEP_EMPTY empty nodes of its type counts as
        stranding one GPU: those are the room pods that need a whole node wait for. (Measured on
        openb: without that charge, CPU-hungry pods filled the few CPU-rich 8-GPU nodes, and in
        the power replay an 8-GPU, 120-core pod that only those fit waited 610 s at 68%
        allocation; charging every empty node instead cost 0.6 points under the FGD protocol.)"""
        own = self.spread_limit(pod) if pod.app is not None else None
        if own is not None and own <= 0:
            return None  # host_ok refuses every node
        best: tuple[tuple[float, int], int] | None = None
        seen = 0
        within, class_of = self._within, self.class_of
        strands = self._strands_of(pod)
        # host_ok's CPU and memory test inlined: this loop weighs tens of nodes per pod.
        cpu, mem, need_cpu, need_mem = self.cpu, self.mem, pod.cpu_milli, pod.memory_mi_b
        app, apps, others = pod.app, self.apps, self._others
        # A pod that asks at least the workload's CPU and memory per GPU milli never lowers a
        # node's stranded capacity (see `strands`): a node where it adds none is the best.
        need = pod.milli_total
        hungry = (not self.cpu_per_milli or need_cpu >= need * self.cpu_per_milli) and (
            not self.mem_per_milli or need_mem >= need * self.mem_per_milli
        )
        for c, k in buckets:
            for node in self.whole[(c, k)]:
                if within is not None and class_of[node] not in within:
                    continue
                if cpu[node] < need_cpu or mem[node] < need_mem:
                    continue
                if others and not self._others_ok(pod, node):
                    continue
                # Spread limits bind only where the app already runs (host_ok: the rest).
                if app is not None and apps[node][app] and not self.host_ok(pod, node):
                    continue
                if not self.weigh_stranding:
                    return node, self._fresh_gpus(pod, node)  # best fit: the first, fullest
                opens = (
                    k == len(self.res[node]) and self.empty_of[self.type_of[node]] <= _KEEP_EMPTY
                )
                key = (strands(node) + 1000 * opens, k)
                if hungry and key[0] <= 0:
                    # Nothing further on can be better: the least stranding this pod can cause,
                    # on the fewest free GPUs so far (buckets come fewest first).
                    return node, self._fresh_gpus(pod, node)
                if best is None or key < best[0]:
                    best = (key, node)
                seen += 1
                if seen >= _WHOLE_SCAN:
                    return best[1], self._fresh_gpus(pod, best[1])
        return None if best is None else (best[1], self._fresh_gpus(pod, best[1]))

    def _find_cpu_only(self, pod: Pod) -> Placement | None:
        """The node with the least free GPU capacity: CPU and memory taken where GPUs are still
        free would strand them."""
        best: tuple[int, int] | None = None
        within = self._within
        for k in range(len(self.with_free)):
            for c in list(self.with_free[k]):
                if not self._pool_ok(pod, c):
                    continue
                for node in self.whole[(c, k)]:
                    if within is not None and self.class_of[node] not in within:
                        continue
                    if not self.host_ok(pod, node):
                        continue
                    left = self.free_milli(node)
                    if left == 0:
                        return node, ()
                    if best is None or left < best[0]:
                        best = (left, node)
            if best is not None:
                return best[1], ()
        return None

    def find_in_class(self, pod: Pod, c: int) -> Placement | None:
        """Best fit within one class, through its pool's buckets."""
        pool = self.pool_of_class[c]
        if not self._pool_ok(pod, pool):
            return None
        if pod.fractional:
            found = self.find_partial(pod, c)
            if found is not None:
                return found
        need = max(pod.gpus, 0)
        for k in range(need, self.classes[c].gpus + 1):
            for node in self.whole.get((pool, k), ()):
                if self.class_of[node] == c and self.host_ok(pod, node):
                    return node, self._fresh_gpus(pod, node)
        return None

    def find_partial(self, pod: Pod, c: int) -> Placement | None:
        """A partly used GPU for a share on a node of class c, as find would choose it."""
        self._within = (c,)
        try:
            found = self._find_fractional(pod, self.pool_of_class[c])
        finally:
            self._within = None
        return None if found is None else found[1]

    def _fresh_gpus(self, pod: Pod, node: int) -> tuple[int, ...]:
        """Untouched GPUs for the pod on a node its bucket says has enough: one for a share."""
        free = [g for g, r in enumerate(self.res[node]) if r == 1000]
        return tuple(free[: 1 if pod.fractional else max(pod.gpus, 0)])

    def _pools_in(self, pools: dict[int, None]) -> list[int]:
        """The pools of a bucket index that the look-up may use, in the index's order; a
        restricted look-up walks only its own pools."""
        within = self._within_pools
        if within is None:
            return list(pools)
        if len(within) < len(pools):
            return [c for c in self._within_sorted if c in pools]  # type: ignore[union-attr]
        return [c for c in pools if c in within]

    def _pressure_step(self, pod: Pod, c: int) -> float:
        """The pool's model pressure in steps of a tenth, for a pod that any model will do (0
        for a pinned pod): best fit is sought within a step, the least needed models first."""
        if pod.gpu_models or not self.pressure:
            return 0.0
        return self._pool_step[c]

    def _over_shared_budget(self, pod: Pod) -> bool:
        """Whether a domain above every node (the facility) lacks room for the pod on the least
        hungry GPU model it may use: then no node takes it, and no pool need be asked."""
        if not self._shared or pod.gpus == 0:
            return False
        power, budget = self.power, self.budget
        room = min(budget[d] - power[d] for d in self._shared)
        # No pod draws more than its GPUs' TDP (kind factors are at most 1) or its own figure.
        if room >= max(pod.gpus, 1) * max(self._max_tdp, pod.power_watts_per_gpu or 0):
            return False
        nodes = [
            self._node_of_model[m]
            for m in pod.gpu_models or self.models
            if m in self._node_of_model
        ]
        if not nodes:
            return False
        return min(self.watts(pod, i) for i in nodes) > room

    def _pool_ok(self, pod: Pod, c: int) -> bool:
        if self._within_pools is not None and c not in self._within_pools:
            return False
        rep = self.pool_rep[c]
        if pod.gpu_models and self.pool_model[c] not in pod.gpu_models:
            return False
        if not self.filters.trivial and not self.filters.admits_kind(pod, self.pool_kind[c]):
            return False
        # One leaf domain per pool: power is the same for every node in it.
        w = self.watts(pod, rep)
        refused = self._refused.get(c)
        if refused is not None and refused[0] == self._epoch and w >= refused[1]:
            return False
        if not w or self.power_room(rep, w):  # power_ok, the draw already worked out
            return True
        if refused is None or refused[0] != self._epoch or w < refused[1]:
            self._refused[c] = (self._epoch, w)
        return False

    def group_fits(self, pods: list[Pod], node: int) -> bool:
        """CPU, memory, spread and power for pods that go onto one node together."""
        if self.cpu[node] < sum(p.cpu_milli for p in pods):
            return False
        if self.mem[node] < sum(p.memory_mi_b for p in pods):
            return False
        if self.extra is not None:  # only where a pod asks for other resources (hot path)
            wants: Counter[str] = Counter()
            for p in pods:
                wants.update(p.resources)
            if wants and not self.extra_ok(wants, node):
                return False
        if self.ports is not None:
            binds = [hp for p in pods for hp in p.host_ports]
            if binds and (
                not self.ports_ok(binds, node)
                or any(a.conflicts(b) for i, a in enumerate(binds) for b in binds[i + 1 :])
            ):
                return False
        apps = Counter(p.app for p in pods if p.app)
        for app, k in apps.items():
            limits = [lim for lim, n in self.limits[node][app].items() if n > 0]
            limits += [lim for p in pods if p.app == app and (lim := self.spread_limit(p))]
            if limits and self.apps[node][app] + k > min(limits):
                return False
        return self.power_room(node, sum(self.watts(p, node) for p in pods))

    def gpus_for(self, pod: Pod, node: int) -> tuple[int, ...] | None:
        """The GPUs the pod would get on this node now (the fullest GPU for a share), if any."""
        res = self.res[node]
        if pod.gpus == 0:
            return ()
        if pod.fractional:
            fits = [(r, g) for g, r in enumerate(res) if r >= pod.gpu_milli]
            return (min(fits)[1],) if fits else None
        free = [g for g, r in enumerate(res) if r == 1000]
        return tuple(free[: pod.gpus]) if len(free) >= pod.gpus else None

    def _find_fractional(self, pod: Pod, c: int) -> tuple[tuple[float, ...], Placement] | None:
        """The partly used GPU that strands the least (see `strands`), then best fit by node and
        by GPU: the least GPU capacity left free on the node, then on the GPU. A share put on the
        fullest GPU of a node that still has free GPUs would take the CPU and memory those GPUs
        need. The scan stops after _SHARE_SCAN candidates."""
        if not self.weigh_stranding:
            return self._best_fit_fractional(pod, c)
        best: tuple[tuple[float, ...], Placement] | None = None
        seen = 0
        within = self._within
        for r in sorted(lvl for lvl in self.part_levels[c] if lvl >= pod.gpu_milli):
            for node, g in self.part[(c, r)]:
                if within is not None and self.class_of[node] not in within:
                    continue
                if not self.host_ok(pod, node):
                    continue
                key = (
                    self.strands(pod, node),
                    self.free_milli(node) - pod.gpu_milli,
                    r - pod.gpu_milli,
                )
                if best is None or key < best[0]:
                    best = (key, (node, (g,)))
                seen += 1
                if seen >= _SHARE_SCAN:
                    return best
        return best

    def _best_fit_fractional(self, pod: Pod, c: int) -> tuple[tuple[float, ...], Placement] | None:
        """Best fit alone, as the best-fit baseline does: the scan stops after _SHARE_SCAN
        improving candidates, or at a node the share fills."""
        best: tuple[tuple[float, ...], Placement] | None = None
        seen = 0
        within = self._within
        for r in sorted(lvl for lvl in self.part_levels[c] if lvl >= pod.gpu_milli):
            for node, g in self.part[(c, r)]:
                if within is not None and self.class_of[node] not in within:
                    continue
                key = (self.free_milli(node) - pod.gpu_milli, r - pod.gpu_milli)
                if best is not None and key >= best[0]:
                    continue
                if not self.host_ok(pod, node):
                    continue
                best = (key, (node, (g,)))
                seen += 1
                if key[0] == 0 or seen >= _SHARE_SCAN:
                    return best
        return best

    def free_milli(self, node: int) -> int:
        return self._free_milli[node]


def _model_pressure(snapshot: ClusterSnapshot) -> dict[str, float]:
    """Per GPU model, the GPU demand of pods pinned to a list of models that includes it (each
    pod's demand split evenly over its list) over the model's GPU capacity; empty when no pod is
    pinned."""
    pinned: Counter[str] = Counter()
    for p in snapshot.pods:
        if p.gpu_models and p.gpus:
            for m in p.gpu_models:
                pinned[m] += p.milli_total / len(p.gpu_models)
    if not pinned:
        return {}
    capacity: Counter[str] = Counter()
    for n in snapshot.nodes:
        capacity[n.gpu_model] += 1000 * n.gpus
    return {m: pinned[m] / capacity[m] for m in pinned if capacity[m]}


def _workload_mix(snapshot: ClusterSnapshot) -> tuple[float, float]:
    """CPU milli and memory MiB per GPU milli over the pods that use GPUs, running and pending:
    the mix a node's free GPUs need beside them to be of use. (0, 0) without such pods."""
    gpu = cpu = mem = 0
    for p in snapshot.pods:
        if p.gpus:
            gpu += p.milli_total
            cpu += p.cpu_milli
            mem += p.memory_mi_b
    return (cpu / gpu, mem / gpu) if gpu else (0.0, 0.0)
