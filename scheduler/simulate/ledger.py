"""What runs where during a simulation, and the figures derived from it at every event.

The ledger is the simulator's source of truth and its referee: schedulers propose, the ledger
records, and it checks every GPU, CPU and memory limit and every power budget on every start.
It shares no state with any scheduler, so a scheduler's bookkeeping error cannot hide here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from scheduler.model import ClusterSnapshot, GpuHealth, HealthState, PackingPolicy, Pod, PodKind
from scheduler.power import budgets, domain_chain, idle_watts_by_domain, pod_watts


class SimulationBug(Exception):
    """A scheduler proposed a placement that breaks a hard limit other than power."""


@dataclass
class Running:
    pod: Pod  # with node and gpuIndices set, as a snapshot shows it
    node: int
    gpus: tuple[int, ...]
    watts: int
    started: float


class Ledger:
    def __init__(self, inventory: ClusterSnapshot, policy: PackingPolicy) -> None:
        self.inventory = inventory
        self.policy = policy
        self.nodes = inventory.nodes
        self.node_index = {n.name: i for i, n in enumerate(self.nodes)}
        self.models = {m.name: m for m in inventory.gpu_models}
        chains = domain_chain(inventory)
        self.chain = [chains[n.power_domain] for n in self.nodes]
        self.budget = budgets(inventory)
        self.power: dict[str, int] = idle_watts_by_domain(inventory)
        self.cpu = [n.cpu_milli for n in self.nodes]
        self.mem = [n.memory_mi_b for n in self.nodes]
        self.used = [[0] * n.gpus for n in self.nodes]
        self.usable = [
            [n.schedulable and policy.takes_new_work(n.health_of(g)) for g in range(n.gpus)]
            for n in self.nodes
        ]
        self.usable_gpus = sum(sum(u) for u in self.usable)
        self.capacity_milli = 1000 * self.usable_gpus
        self.allocated_milli = 0
        self.busy_gpus = 0
        self.running: dict[str, Running] = {}
        self.violations = 0
        self.over: Counter[str] = Counter()  # events over budget, per domain

    # -- changes ---------------------------------------------------------------------------
    def start(self, pod: Pod, node: int, gpus: tuple[int, ...], now: float) -> None:
        n = self.nodes[node]
        share = pod.gpu_milli if pod.fractional else 1000
        if len(gpus) != (1 if pod.fractional else pod.gpus) or len(set(gpus)) != len(gpus):
            raise SimulationBug(f"{pod.key}: got GPUs {gpus} for gpus={pod.gpus}")
        for g in gpus:
            if not 0 <= g < n.gpus or not self.usable[node][g] or self.used[node][g] + share > 1000:
                raise SimulationBug(f"{pod.key}: GPU {g} on {n.name} cannot take {share} milli")
        if pod.gpu_models and n.gpu_model not in pod.gpu_models:
            raise SimulationBug(f"{pod.key}: {n.name} has model {n.gpu_model}")
        if self.cpu[node] < pod.cpu_milli or self.mem[node] < pod.memory_mi_b:
            raise SimulationBug(f"{pod.key}: {n.name} lacks CPU or memory")
        if pod.key in self.running:
            raise SimulationBug(f"{pod.key} is already running")
        for g in gpus:
            if self.used[node][g] == 0:
                self.busy_gpus += 1
            self.used[node][g] += share
        self.allocated_milli += share * len(gpus)
        self.cpu[node] -= pod.cpu_milli
        self.mem[node] -= pod.memory_mi_b
        watts = pod_watts(pod, self.models[n.gpu_model], self.policy)
        over = False
        for d in self.chain[node]:
            self.power[d] += watts
            b = self.budget.get(d)
            if b is not None and self.power[d] > b:
                self.over[d] += 1
                over = True
        self.violations += over
        placed = pod.model_copy(update={"node": n.name, "gpu_indices": list(gpus)})
        self.running[pod.key] = Running(placed, node, gpus, watts, now)

    def stop(self, key: str) -> Running:
        r = self.running.pop(key)
        share = r.pod.gpu_milli if r.pod.fractional else 1000
        for g in r.gpus:
            self.used[r.node][g] -= share
            if self.used[r.node][g] == 0:
                self.busy_gpus -= 1
        self.allocated_milli -= share * len(r.gpus)
        self.cpu[r.node] += r.pod.cpu_milli
        self.mem[r.node] += r.pod.memory_mi_b
        for d in self.chain[r.node]:
            self.power[d] -= r.watts
        return r

    def on_gpu(self, node: int, gpu: int) -> list[str]:
        """Keys of the pods running on one GPU."""
        return [k for k, r in self.running.items() if r.node == node and gpu in r.gpus]

    def degrade_gpu(self, node: int, gpu: int) -> None:
        """An alarm: the GPU turns degraded in what schedulers see (no new work there; a
        migrating scheduler moves its pods off). It keeps its work and stays in the capacity
        until it fails."""
        n = self.nodes[node]
        if n.health_of(gpu) != HealthState.HEALTHY:
            return
        health = [h for h in n.gpu_health if h.index != gpu]
        health.append(GpuHealth(index=gpu, state=HealthState.DEGRADED, reasons=["alarm"]))
        changed = n.model_copy(update={"gpu_health": sorted(health, key=lambda h: h.index)})
        self.nodes = [*self.nodes[:node], changed, *self.nodes[node + 1 :]]
        self.inventory = self.inventory.model_copy(update={"nodes": self.nodes})

    def fail_gpu(self, node: int, gpu: int) -> None:
        """Mark a GPU failed: it takes no work and leaves the capacity. Stop its pods first."""
        if self.on_gpu(node, gpu):
            raise SimulationBug(f"GPU {gpu} on {self.nodes[node].name} failed with pods on it")
        if not self.usable[node][gpu]:
            return
        self.usable[node][gpu] = False
        self.usable_gpus -= 1
        self.capacity_milli -= 1000
        n = self.nodes[node]
        health = [h for h in n.gpu_health if h.index != gpu]
        health.append(GpuHealth(index=gpu, state=HealthState.FAILED, reasons=["injected"]))
        failed = n.model_copy(update={"gpu_health": sorted(health, key=lambda h: h.index)})
        self.nodes = [*self.nodes[:node], failed, *self.nodes[node + 1 :]]
        self.inventory = self.inventory.model_copy(update={"nodes": self.nodes})

    # -- figures ---------------------------------------------------------------------------
    @property
    def allocation(self) -> float:
        return self.allocated_milli / self.capacity_milli if self.capacity_milli else 0.0

    @property
    def busy_share(self) -> float:
        return self.busy_gpus / self.usable_gpus if self.usable_gpus else 0.0

    def snapshot(self, pending: list[Pod]) -> ClusterSnapshot:
        """The cluster as a scheduler sees it: running pods in place, the queue pending."""
        # No re-validation: every pod was validated when the trace was read.
        pods = [r.pod for r in self.running.values()] + pending
        return self.inventory.model_copy(update={"pods": pods})


class PowerBound:
    """The most allocation the budgets allow for the work present (an upper bound).

    Per domain: its GPU capacity, and the milli-GPU its budget can feed above the idle draw when
    the present work's cheapest kinds go first at the cheapest model's watts per milli-GPU below
    it (a fractional knapsack); the children's bounds add up. Where every present job asks for
    whole GPUs, the bound is then lowered to the largest sum of whole jobs under it. GPU-model
    constraints and packing are relaxed, so a real placement never beats it. Per-pod power
    overrides are not modelled: trace importers produce none.
    """

    def __init__(self, inventory: ClusterSnapshot, policy: PackingPolicy, usable: list[list[bool]]):
        self.policy = policy
        self.budget = budgets(inventory)
        self.idle = idle_watts_by_domain(inventory)
        models = {m.name: m for m in inventory.gpu_models}
        chains = domain_chain(inventory)
        self.children: dict[str, list[str]] = {d.name: [] for d in inventory.power_domains}
        self.roots = [d.name for d in inventory.power_domains if d.parent is None]
        for d in inventory.power_domains:
            if d.parent is not None:
                self.children[d.parent].append(d.name)
        self.capacity: Counter[str] = Counter()
        self.rate: dict[str, dict[PodKind, float]] = {}
        for i, n in enumerate(inventory.nodes):
            m = models[n.gpu_model]
            free = sum(usable[i])
            for d in chains[n.power_domain]:
                self.capacity[d] += 1000 * free
                if not free:
                    continue
                rates = self.rate.setdefault(d, {})
                for kind in PodKind:
                    r = (m.tdp_watts - m.idle_watts) * policy.power_factors.of(kind) / 1000
                    rates[kind] = min(rates.get(kind, r), r)
        self._cache: dict[tuple, int] = {}

    def lose_gpu(self, chain: list[str]) -> None:
        """A GPU below these domains failed: their capacity shrinks."""
        for d in chain:
            self.capacity[d] -= 1000
        self._cache.clear()

    def _domain(self, d: str, demand: dict[PodKind, int]) -> float:
        cap = float(self.capacity[d])
        kids = self.children[d]
        if kids:
            cap = min(cap, sum(self._domain(k, demand) for k in kids))
        b = self.budget.get(d)
        if b is not None and d in self.rate:
            left = b - self.idle[d]
            fed = 0.0
            for kind in sorted(demand, key=lambda k: self.rate[d][k]):
                want = demand[kind]
                r = self.rate[d][kind]
                take = want if r == 0 else min(want, max(0.0, left) / r)
                fed += take
                left -= take * r
            cap = min(cap, fed)
        return cap

    def milli(self, demand: dict[PodKind, int], jobs: Counter[int] | None = None) -> int:
        """Upper bound on allocated milli-GPU, given the present milli demand by kind.

        With `jobs` (how many present jobs ask for each milli-GPU size) and whole GPUs only, the
        bound is also a sum of whole jobs: the largest subset sum of their sizes under it.
        """
        key = tuple(sorted((k.value, v) for k, v in demand.items() if v))
        hit = self._cache.get(key)
        if hit is None:
            total = sum(demand.values())
            roots = sum(self._domain(r, demand) for r in self.roots)
            hit = self._cache[key] = int(min(total, roots))
            if len(self._cache) > 100_000:
                self._cache.clear()
        whole = jobs and all(s % 1000 == 0 for s, n in jobs.items() if n)
        if whole and hit < sum(s * n for s, n in jobs.items()):  # type: ignore[union-attr]
            hit = 1000 * _subset_sum({s // 1000: n for s, n in jobs.items()}, hit // 1000)  # type: ignore[union-attr]
        return hit


def _subset_sum(sizes: dict[int, int], cap: int) -> int:
    """The largest sum of items (size: count) that is at most cap, as a bitset of reachable sums."""
    reach, mask = 1, (1 << (cap + 1)) - 1
    for size, count in sizes.items():
        for _ in range(min(count, cap // size if size else 0)):
            grown = (reach | (reach << size)) & mask
            if grown == reach:
                break
            reach = grown
    return reach.bit_length() - 1
