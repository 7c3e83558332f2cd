"""The operator's Prometheus metrics (names the Grafana dashboard and the alerts in manifests/
read: tests/test_manifests.py checks them against this registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scheduler.model import Plan, PodKind, PowerDomain

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cycle = Histogram(
            "wattpack_cycle_seconds",
            "One cycle: snapshot, plan, apply.",
            buckets=_SECONDS,
            registry=r,
        )
        self.solve = Histogram(
            "wattpack_solve_seconds", "Planning time of one cycle.", buckets=_SECONDS, registry=r
        )
        self.gap = Gauge(
            "wattpack_plan_gap", "Relative gap of the last plan (0 = optimal).", registry=r
        )
        self.allocation = Gauge(
            "wattpack_gpu_allocation", "GPU allocation after the last plan (0..1).", registry=r
        )
        self.power = Gauge(
            "wattpack_power_watts", "Planned power per domain.", ["domain"], registry=r
        )
        self.budget = Gauge(
            "wattpack_power_budget_watts", "Power budget per domain.", ["domain"], registry=r
        )
        # Domains nest (facility > rows > racks): summing wattpack_power_watts over all of them
        # counts each watt once per level. This says which are roots and which are leaves.
        self.domain_info = Gauge(
            "wattpack_power_domain_info",
            "1 per power domain: its parent (empty for a root) and whether it is a leaf.",
            ["domain", "parent", "leaf"],
            registry=r,
        )
        self._domains: list[tuple[str, str, str]] = []
        self.pending = Gauge(
            "wattpack_pending_pods", "Pods waiting for a place, by kind.", ["kind"], registry=r
        )
        self.bindings = Counter("wattpack_bindings", "Pods bound.", registry=r)
        self.evictions = Counter("wattpack_evictions", "Pods evicted (preempted).", registry=r)
        self.unplaced = Counter(
            "wattpack_unplaced", "Pods a cycle could not place (counted per cycle).", registry=r
        )
        self.refused = Counter(
            "wattpack_evictions_refused",
            "Evictions the API server would refuse (dry run), which held back their pod.",
            registry=r,
        )
        self.reserved = Gauge(
            "wattpack_reserved_pods",
            "Pods waiting, nominated, for their victims to go (held out of planning).",
            registry=r,
        )
        self.moves = Counter(
            "wattpack_moves",
            "Moves of running pods begun, by why (migration, failure, defragmentation).",
            ["reason"],
            registry=r,
        )
        self.steps = Counter(
            "wattpack_plan_steps",
            "Steps of plans begun on the API server, by kind (evict, stop, start, bind).",
            ["kind"],
            registry=r,
        )
        self.moves_in_flight = Gauge(
            "wattpack_moves_in_flight",
            "Moves under way: begun, the replacement not yet in place.",
            registry=r,
        )
        self.errors = Counter("wattpack_cycle_errors", "Cycles that failed.", registry=r)
        self.leader = Gauge("wattpack_leader", "1 while this replica leads.", registry=r)

    def observe(self, plan: Plan, pending_by_kind: dict[PodKind, int]) -> None:
        s = plan.summary
        self.solve.observe(s.solve_seconds)
        self.gap.set(s.gap)
        self.allocation.set(s.gpu_allocation)
        for domain, watts in s.power_watts.items():
            self.power.labels(domain).set(watts)
        for domain, watts in s.power_budget_watts.items():
            self.budget.labels(domain).set(watts)
        for kind in PodKind:
            self.pending.labels(kind.value).set(pending_by_kind.get(kind, 0))
        self.unplaced.inc(len(plan.unplaced))

    def domains(self, domains: list[PowerDomain]) -> None:
        parents = {d.parent for d in domains if d.parent}
        rows = sorted((d.name, d.parent or "", str(d.name not in parents).lower()) for d in domains)
        if rows == self._domains:
            return
        self.domain_info.clear()  # a domain deleted or moved leaves no stale series
        for row in rows:
            self.domain_info.labels(*row).set(1)
        self._domains = rows
