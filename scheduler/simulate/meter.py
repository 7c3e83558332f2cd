"""Time-weighted figures of a replay: integrated between events from the ledger's state."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from scheduler.model import PodKind
from scheduler.simulate.ledger import Ledger
from scheduler.simulate.result import DomainPower, KindWaits, Percentiles, Timeline

MAX_POINTS = 2000
PLOTTED_DOMAINS = 9  # the root and its children at most: rack-level lines would be unreadable


def percentiles(values: list[float]) -> Percentiles:
    if not values:
        return Percentiles(count=0, p50=0.0, p95=0.0, max=0.0)
    a = np.asarray(values, dtype=float)
    return Percentiles(
        count=len(values),
        p50=float(np.percentile(a, 50)),
        p95=float(np.percentile(a, 95)),
        max=float(a.max()),
    )


def _thin(n: int, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


class Meter:
    def __init__(self, ledger: Ledger, start: float) -> None:
        self.ledger = ledger
        self.start = self.last = start
        self.alloc_s = self.busy_s = 0.0
        self.wait_s = self.alloc_wait_s = self.at90_s = self.bound_wait_s = 0.0
        self.unalloc_wait_s = self.idle_wait_s = 0.0
        budgeted = list(ledger.budget)
        roots = [d.name for d in ledger.inventory.power_domains if d.parent is None]
        self.domains = list(dict.fromkeys(roots + budgeted))
        self.energy = dict.fromkeys(self.domains, 0.0)
        self.peak = {d: ledger.power[d] for d in self.domains}
        parents = {d.name: d.parent for d in ledger.inventory.power_domains}
        top = [d for d in parents if parents[d] is None or parents[d] in roots]
        self.plotted = [d for d in top if d in ledger.budget or d in roots][:PLOTTED_DOMAINS]
        self.series: dict[str, list] = defaultdict(list)
        self.waits: dict[PodKind, list[float]] = defaultdict(list)
        # The state between events, set by sample(): queue length, blocked pods and bound.
        self.queue = 0
        self.blocked = 0
        self.bound = 0.0

    def advance(self, now: float) -> None:
        """Integrate the state as it stood since the last event up to `now`."""
        dt = now - self.last
        if dt <= 0:
            return
        lg = self.ledger
        alloc = lg.allocation
        self.alloc_s += alloc * dt
        self.busy_s += lg.busy_share * dt
        for d in self.domains:
            self.energy[d] += lg.power[d] * dt
        if self.blocked:
            self.wait_s += dt
            self.alloc_wait_s += alloc * dt
            self.at90_s += dt if alloc >= 0.9 - 1e-12 else 0.0
            self.bound_wait_s += self.bound * dt
            self.unalloc_wait_s += (lg.capacity_milli - lg.allocated_milli) / 1000 * dt
            self.idle_wait_s += (lg.usable_gpus - lg.busy_gpus) * dt
        self.last = now

    def sample(self, now: float, queue: int, blocked: int, bound_milli: int) -> None:
        """Record the state after the events at `now` were handled: `queue` pods wait, of which
        `blocked` were tried and did not fit (the "work waiting" of the metrics)."""
        lg = self.ledger
        self.queue = queue
        self.blocked = blocked
        cap = lg.capacity_milli
        self.bound = bound_milli / cap if cap else 0.0
        for d in self.domains:
            self.peak[d] = max(self.peak[d], lg.power[d])
        s = self.series
        if s["t"] and s["t"][-1] == now:
            for key in ("t", "allocation", "busy", "bound", "queue", *self.plotted):
                s[key].pop()
        s["t"].append(now)
        s["allocation"].append(lg.allocation)
        s["busy"].append(lg.busy_share)
        s["bound"].append(self.bound)
        s["queue"].append(queue)
        for d in self.plotted:
            s[d].append(lg.power[d])

    def started(self, kind: PodKind, waited: float) -> None:
        self.waits[kind].append(waited)

    # -- results ---------------------------------------------------------------------------
    @property
    def span(self) -> float:
        return self.last - self.start

    def share(self, x: float, of: float) -> float:
        return x / of if of > 0 else 0.0

    def power(self) -> list[DomainPower]:
        lg = self.ledger
        return [
            DomainPower(
                domain=d,
                budget_watts=lg.budget.get(d),
                peak_watts=self.peak[d],
                mean_watts=self.energy[d] / self.span if self.span > 0 else float(lg.power[d]),
                violations=lg.over[d],
            )
            for d in self.domains
        ]

    def kind_waits(
        self, never: dict[PodKind, int], unstarted: dict[PodKind, list[float]]
    ) -> list[KindWaits]:
        """`unstarted`: per kind, how long each pod that never started had waited at the end."""
        return [
            KindWaits(
                kind=k.value,
                started=len(self.waits[k]),
                never_started=never.get(k, 0),
                wait_seconds=percentiles(self.waits[k]),
                censored_wait_seconds=percentiles(self.waits[k] + unstarted.get(k, [])),
            )
            for k in PodKind
            if self.waits[k] or never.get(k)
        ]

    def timeline(self) -> Timeline:
        s = self.series
        keep = _thin(len(s["t"]), MAX_POINTS)
        pick = lambda key: [s[key][i] for i in keep]  # noqa: E731
        return Timeline(
            t=pick("t"),
            allocation=pick("allocation"),
            busy_gpus=pick("busy"),
            bound=pick("bound"),
            queue=pick("queue"),
            power={d: pick(d) for d in self.plotted},
        )
