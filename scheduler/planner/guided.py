"""Realise the model's decisions node by node, as targets rather than floored counts.

Flooring the LP's counts group by group loses most of what it decided on small groups (0.7 of a
pod on a one-node group becomes none), and dealing a group's counts over its nodes in proportion
fails where the nodes differ. Here the model decides *which* pods run and *where roughly* (its
quota per pod class and group of nodes); each pod then goes, in priority order, to the best place
found by the same look-up as greedy placement, but only among the groups where its class still
has quota. Pods the model left out, or that found no room where it pointed, get a greedy second
pass anywhere afterwards.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

from scheduler.fit.cycle import Cycle
from scheduler.fit.greedy import greedy_fill, units_of
from scheduler.fit.state import Placement
from scheduler.fit.statement import Statement
from scheduler.model import Pod
from scheduler.planner.evictions import Evicted, evict_counted, preempt_for, settle_evictions
from scheduler.solver import Counts, Demand, Group

# A pod class may go to a group while this much of its quota there is left: the LP's 0.6 of a
# pod rounds to one, its 0.3 does not.
_TAKE = 0.5


class _Quotas:
    def __init__(self, demand: Demand, counts: Counts, groups: list[Group]) -> None:
        self.left: dict[tuple[int, int], float] = dict(counts.quota)
        self.of_class: dict[int, float] = defaultdict(float)
        self.groups_of: dict[int, list[int]] = defaultdict(list)
        for (j, gid), q in sorted(counts.quota.items()):
            self.of_class[j] += q
            self.groups_of[j].append(gid)
        self.gangs: dict[int, float] = dict(counts.quota_gangs)
        self.class_of_pod = {p.key: pc.id for pc in demand.classes for p in pc.pods}
        self.gang_class = {g[0].gang_key: gc.id for gc in demand.gangs for g in gc.gangs}
        self.node_classes = {g.id: [c.id for c in g.classes] for g in groups}
        self._within: dict[tuple[int, ...], set[int]] = {}

    def within(self, pod: Pod) -> set[int] | None:
        """Node classes where the pod's class still has quota; None when it has none left."""
        j = self.class_of_pod[pod.key]
        if self.of_class[j] < _TAKE:
            return None
        gids = tuple(g for g in self.groups_of[j] if self.left[(j, g)] >= _TAKE)
        if not gids:
            # Quota spread thin over many groups: any of them will do.
            gids = tuple(g for g in self.groups_of[j] if self.left[(j, g)] > 1e-6)
        if gids not in self._within:
            self._within[gids] = {c for g in gids for c in self.node_classes[g]}
        return self._within[gids]

    def take(self, pod: Pod, gid: int) -> None:
        j = self.class_of_pod[pod.key]
        self.of_class[j] -= 1
        if (j, gid) in self.left:
            self.left[(j, gid)] -= 1


def _place_guided(
    cycle: Cycle, quotas: _Quotas, unit: list[Pod], group_of_class: list[int]
) -> list[tuple[Pod, Placement]] | None:
    state = cycle.state
    statement = Statement(state)
    for pod in unit if len(unit) == 1 else sorted(unit, key=lambda p: -p.milli_total):
        within = quotas.within(pod)
        where = None if within is None else state.find(pod, within)
        if where is None:
            statement.discard()
            return None
        statement.place(pod, *where)
        quotas.take(pod, group_of_class[state.class_of[where[0]]])
    done = statement.placed()
    statement.commit()
    return done


def _largest_first(unit: list[Pod]) -> tuple[int, int]:
    """Pods of more GPUs first, gangs before lone pods of their size; among pods of one GPU or
    less, queue order (measured on openb: sorted by size or CPU, a batch of them packs into
    fewer nodes but strands GPUs behind exhausted CPU)."""
    return (-max(p.gpus for p in unit), -len(unit))


def realise(
    cycle: Cycle,
    demand: Demand,
    counts: Counts,
    groups: list[Group],
    group_of_class: list[int],
    stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, Placement], Evicted]:
    """`stop` (a time limit), asked before each unit: once it says so, no more pods are placed;
    evictions whose room went unused are still put back."""
    state = cycle.state
    placed: dict[str, Placement] = {}
    # Evictions the model chose, its fractions rounded half up; those whose room no
    # higher-priority pod takes are put back below.
    chosen = {k: math.floor(q + 0.5) for k, q in counts.quota_evict.items() if q >= _TAKE}
    evicted = evict_counted(cycle, chosen, group_of_class, emptiest_first=True)
    quotas = _Quotas(demand, counts, groups)
    units = units_of(p for p in cycle.pending if p.gpus or p.gang_key)
    cpu_only = [[p] for p in cycle.pending if not p.gpus and not p.gang_key]
    deferred: list[list[Pod]] = []
    # The model chose which pods run; what is left is packing, and packing goes largest first
    # (decreasing sizes pack tighter: small pods first would take the empty nodes gangs need).
    for unit in sorted(units, key=_largest_first):
        if stop is not None and stop():
            deferred.append(unit)
            continue
        gang = unit[0].gang_key
        if gang is not None and quotas.gangs.get(quotas.gang_class[gang], 0.0) < _TAKE:
            deferred.append(unit)
            continue
        done = _place_guided(cycle, quotas, unit, group_of_class)
        if done is None:
            deferred.append(unit)
            continue
        if gang is not None:
            quotas.gangs[quotas.gang_class[gang]] -= 1
        for pod, where in done:
            placed[pod.key] = where
    left = greedy_fill(state, deferred, placed, stop=stop)
    if cycle.victims and not (stop is not None and stop()):
        preempt_for(cycle, left, evicted, placed, stop)
    kept, bumped = settle_evictions(state, evicted, cycle.pending, placed)
    greedy_fill(state, bumped, placed, stop=stop)
    greedy_fill(state, cpu_only, placed, stop=stop)
    return placed, kept
