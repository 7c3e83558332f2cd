"""The aggregated CP-SAT model: how many pods of each class go to each class of nodes.

Deciding counts instead of (pod, node) pairs keeps the model small when thousands of nodes are
interchangeable (architecture doc, "the solver at scale"). Every constraint is one that any real
placement satisfies, so the model is a relaxation and its proven bound bounds every plan; the
expansion step turns counts back into nodes and GPUs, and the gap is measured on what it realises.
A class of one node is modelled exactly, GPU by GPU.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce

from ortools.linear_solver.python import model_builder
from ortools.sat.python import cp_model

from scheduler import progress
from scheduler.fit.classes import NodeClass
from scheduler.fit.cycle import Cycle
from scheduler.fit.state import UNUSABLE
from scheduler.fit.value import pod_value
from scheduler.model import Pod
from scheduler.solver.dff import DFF_ORDERS, dff_capacity, dff_scaled, eps_scaled, eps_thresholds
from scheduler.solver.groups import Group
from scheduler.solver.lp import LpResult, solve_built, solve_lp
from scheduler.solver.objective import Objective, Term
from scheduler.solver.patterns import ShareGroup, add_pattern_rows
from scheduler.solver.pod_classes import Demand, PodClass
from scheduler.solver.room import Room, freed_by

_BIG = 1 << 40
# Below this, CP-SAT's set-up alone uses the time and it cannot improve on the LP's start.
_MIN_CP_SAT_SECONDS = 0.25
_MIN_LP_SECONDS = 0.1  # below this, GLOP does not finish a model of thousands of rows


@dataclass
class Counts:
    """What the solver decided, in counts."""

    status: str
    bound: float  # proven upper bound on the objective (raw value units)
    x: dict[tuple[int, int], int] = field(default_factory=dict)  # (pod class, group)
    per_gpu: dict[tuple[int, int, int], int] = field(default_factory=dict)  # (pc, group, gpu)
    evict: dict[tuple[tuple, int], int] = field(default_factory=dict)  # (victim sig, group)
    gangs: dict[int, int] = field(default_factory=dict)  # gang class -> gangs placed
    # The same decisions before rounding (the LP's fractions, or CP-SAT's counts): targets that a
    # realisation node by node may meet without flooring small groups to nothing.
    quota: dict[tuple[int, int], float] = field(default_factory=dict)  # (pod class, group)
    quota_gangs: dict[int, float] = field(default_factory=dict)
    quota_evict: dict[tuple[tuple, int], float] = field(default_factory=dict)


def _fits(rep: Pod, gpus: int, slots: int, cpu: int, mem: int) -> int:
    """How many pods like `rep` this much room takes at most: free whole GPUs, partly used GPUs
    with room for its share, CPU and memory."""
    caps = [_BIG]
    if rep.gpus > 0 and not rep.fractional:
        caps.append(gpus // rep.gpus)
    if rep.fractional:
        caps.append((gpus + slots) * (1000 // rep.gpu_milli))
    if rep.cpu_milli:
        caps.append(cpu // rep.cpu_milli)
    if rep.memory_mi_b:
        caps.append(mem // rep.memory_mi_b)
    return min(caps)


class OutOfTime(Exception):
    """The cycle's time ran out while the model was being built: there is no model to solve."""


class AggregateModel:
    def __init__(
        self,
        cycle: Cycle,
        demand: Demand,
        groups: list[Group],
        group_of_class: list[int],
        stop: Callable[[], bool] | None = None,
        lp_only: bool = False,
    ) -> None:
        """`stop`, asked between node groups, ends the build with OutOfTime: at thousands of
        nodes the build alone takes seconds. An `lp_only` model is only ever solved as an LP
        (its counts are the LP's): it is built as one, for GLOP, instead of as a CP-SAT model
        copied out for GLOP afterwards (the copy took as long as GLOP, 0.15 s at 4,096 nodes
        of scattered work)."""
        self._stop = stop
        self.lp_only = lp_only
        self.cycle = cycle
        self.state = cycle.state
        self.demand = demand
        self.groups, self.group_of_class = groups, group_of_class
        self.hinted = False
        self.lp_bound = math.inf  # the LP relaxation's optimum, once solved
        self.m = model_builder.Model() if lp_only else cp_model.CpModel()
        self._expr = model_builder.LinearExpr if lp_only else cp_model.LinearExpr
        self.upper: list[int] = []  # every variable's upper bound, by index (all start at 0)
        self.x: dict[tuple[int, int], cp_model.IntVar] = {}
        self.y: dict[tuple[int, int, int], cp_model.IntVar] = {}
        self.v: dict[tuple[tuple, int], cp_model.IntVar] = {}
        self.z: dict[int, cp_model.IntVar] = {}
        self.victim_rep: dict[tuple, Pod] = {}
        for p in cycle.victims:
            self.victim_rep.setdefault(self.state.victim_signature(p), p)
        self.victims_per_node: dict[int, Counter[tuple]] = {
            c.id: Counter(c.victims) for c in self.state.classes
        }
        self.room_of = {sig: freed_by(sig, v) for sig, v in self.victim_rep.items()}
        self._extra: dict[int, Room] = {}
        self.share_groups: list[ShareGroup] = []
        self._totals: dict[int, tuple[int, int, int, int]] = {}
        self._draw: dict[tuple[int, int], int] = {}  # (pod class, group) -> watts of one pod
        self._build()

    # -- helpers ---------------------------------------------------------------------------
    def _lin(self, terms) -> cp_model.LinearExprT:
        """sum(coeff * var) built in one call: Python-level sums cost ~100 us a term at scale."""
        terms = [(c, v) for c, v in terms if c]
        return self._expr.weighted_sum([v for _, v in terms], [c for c, _ in terms])

    def _var(self, ub: int, name: str) -> cp_model.IntVar:
        """A count in [0, ub], its upper bound kept for the LP's copy of the model (reading it
        back from the model costs more than the rest of the copy at thousands of variables)."""
        self.upper.append(ub)
        return self.m.new_int_var(0, ub, name)

    def _watts(self, pod: Pod, cls: NodeClass) -> int:
        return self.state.watts(pod, cls.nodes[0])

    def _victim_extra(self, cls: NodeClass) -> Room:
        """What evicting every victim on one node of the class frees."""
        if cls.id not in self._extra:
            self._extra[cls.id] = sum(
                (self.room_of[sig].times(k) for sig, k in self.victims_per_node[cls.id].items()),
                Room(),
            )
        return self._extra[cls.id]

    def _headroom(self) -> dict[str, int]:
        """Budget minus draw, as if every victim in the domain were gone (an optimistic cap)."""
        s = self.state
        freed: Counter[str] = Counter()
        for v in self.cycle.victims:
            node = s.node_index[v.node]  # type: ignore[index]
            for d in s.chain[node]:
                freed[d] += s.watts(v, node)
        return {d: max(0, b - s.power[d]) + freed[d] for d, b in s.budget.items()}

    def _group_victims(self, grp: Group) -> Counter[tuple]:
        """Victims on every node of the group, by signature."""
        out: Counter[tuple] = Counter()
        for c in grp.classes:
            for sig, k in self.victims_per_node[c.id].items():
                out[sig] += k * len(c.nodes)
        return out

    def _cap(self, pc: PodClass, cls: NodeClass) -> int:
        """Pods of the class one node of `cls` takes at most, its spread limit included."""
        rep = pc.rep
        freed = self._victim_extra(cls)
        slots = sum(1 for r in cls.partial if r >= rep.gpu_milli) + freed.slots
        per_node = _fits(
            rep, cls.free_whole + freed.gpus, slots, cls.cpu + freed.cpu, cls.mem + freed.mem
        )
        limit = self.state.spread_limit(rep)
        if limit is not None and pc.spread_binds:
            staying = dict(cls.apps).get(rep.app or "", 0) - sum(
                k
                for sig, k in self.victims_per_node[cls.id].items()
                if self.victim_rep[sig].app == rep.app
            )
            per_node = min(per_node, limit - staying)
        return max(per_node, 0)

    def _group_cap(self, pc: PodClass, grp: Group) -> int:
        """Pods of the class the group takes at most: node by node where its nodes are alike,
        else from its summed capacity (looser, but one look instead of one per node class)."""
        if grp.alike:
            return grp.n * self._cap(pc, grp.rep)
        if grp.id not in self._totals:
            # Every partly used GPU counts as a slot for any share: an upper bound.
            self._totals[grp.id] = (
                grp.total(lambda c: c.free_whole + self._victim_extra(c).gpus),
                grp.total(lambda c: len(c.partial) + self._victim_extra(c).slots),
                grp.total(lambda c: c.cpu + self._victim_extra(c).cpu),
                grp.total(lambda c: c.mem + self._victim_extra(c).mem),
            )
        cap = _fits(pc.rep, *self._totals[grp.id])
        if self.state.spread_limit(pc.rep) is not None and pc.spread_binds:
            cap = min(cap, grp.total(lambda c: self._cap(pc, c)))
        return cap

    # -- model -----------------------------------------------------------------------------
    def _build(self) -> None:
        headroom = self._headroom()
        trivial = self.state.filters.trivial
        self.victims_of = {grp.id: self._group_victims(grp) for grp in self.groups}
        for grp in self.groups:
            self._check_time()
            cls = grp.rep
            leaves = {c.leaf for c in grp.classes}
            leaf_room = max((headroom[leaf] for leaf in leaves if leaf in headroom), default=None)
            upper_room = min((headroom[d] for d in grp.upper if d in headroom), default=None)
            for pc in self.demand.classes:
                rep = pc.rep
                if rep.gpu_models and cls.model not in rep.gpu_models:
                    continue
                if not trivial and not self.state.filters.admits_kind(rep, cls.kind):
                    continue
                w = self._watts(rep, cls)
                if (leaf_room is not None and w > leaf_room) or (
                    upper_room is not None and w > upper_room
                ):
                    continue
                ub = min(len(pc.pods), self._group_cap(pc, grp))
                if ub > 0:
                    self.x[(pc.id, grp.id)] = self._var(ub, f"x_{pc.id}_{grp.id}")
                    self._draw[(pc.id, grp.id)] = w
            for sig, k in self.victims_of[grp.id].items():
                self.v[(sig, grp.id)] = self._var(k, f"v_{grp.id}_{len(self.v)}")
        self._demand_rows()
        for grp in self.groups:
            self._check_time()
            self._node_class_rows(grp)
        self._check_time()
        self._power_rows()
        self._objective()

    def _check_time(self) -> None:
        if self._stop is not None and self._stop():
            raise OutOfTime

    def _demand_rows(self) -> None:
        by_pc: dict[int, list[cp_model.IntVar]] = defaultdict(list)
        for (j, _), var in self.x.items():
            by_pc[j].append(var)
        for pc in self.demand.classes:
            if not pc.gang_member and by_pc[pc.id]:
                self.m.add(self._expr.sum(by_pc[pc.id]) <= len(pc.pods))
        gangs_of: dict[int, list[tuple[int, cp_model.IntVar]]] = defaultdict(list)
        for gc in self.demand.gangs:
            z = self._var(len(gc.gangs), f"z_{gc.id}")
            self.z[gc.id] = z
            for j, per_gang in gc.members.items():
                gangs_of[j].append((per_gang, z))
        # Members of every gang with this shape: the places given equal the members of the
        # gangs placed, so only whole gangs are placed.
        for j, parts in gangs_of.items():
            self.m.add(self._expr.sum(by_pc[j]) == self._lin(parts))

    def _classes_here(self, grp: Group) -> list[tuple[PodClass, cp_model.IntVar]]:
        return [
            (pc, self.x[(pc.id, grp.id)]) for pc in self.demand.classes if (pc.id, grp.id) in self.x
        ]

    def _thresholds(self, here: list[tuple[PodClass, cp_model.IntVar]], victim_prios: list[int]):
        """Priority levels at which capacity freed by preemption changes hands."""
        if not victim_prios:
            return [None]
        return sorted({pc.rep.priority for pc, _ in here})

    def _node_class_rows(self, grp: Group) -> None:
        m = self.m
        here = self._classes_here(grp)
        if not here:
            return
        n = grp.n
        vic = [
            (sig, self.v[(sig, grp.id)], self.victim_rep[sig]) for sig in self.victims_of[grp.id]
        ]
        exact = n == 1 and not vic
        frac = [(pc, x) for pc, x in here if pc.rep.fractional]
        whole = [(pc, x) for pc, x in here if pc.rep.gpus > 0 and not pc.rep.fractional]
        free_whole = grp.total(lambda c: c.free_whole)
        partial = grp.total(lambda c: sum(c.partial))
        fresh_for_frac: cp_model.LinearExprT = 0
        if frac and exact:
            fresh_for_frac = self._exact_gpus(grp, frac)
        elif frac:
            whole_freed = grp.total(lambda c: self._victim_extra(c).gpus)
            f = self._var(free_whole + whole_freed, f"f_{grp.id}")
            fresh_for_frac = f
            self._share_rows(grp, frac, f, vic, free_whole + whole_freed)
        gpu_cap = free_whole
        cpu_cap, mem_cap = grp.total(lambda c: c.cpu), grp.total(lambda c: c.mem)
        # Needed whether or not shares are pending: two evicted shares of one GPU each count it
        # freed in the GPU row, one GPU taken for two whole pods.
        shares_evicted = any(self.room_of[sig].slots for sig, _, _ in vic)
        for q in self._thresholds(here, [v.priority for _, _, v in vic]):

            def upto(items, q=q):
                return [(pc, x) for pc, x in items if q is None or pc.rep.priority <= q]

            def freed(dimension: str, q=q):
                """Room freed by evicting victims below priority q, in one dimension."""
                return self._lin(
                    (getattr(self.room_of[sig], dimension), var)
                    for sig, var, v in vic
                    if q is not None and v.priority < q
                )

            m.add(
                self._lin((pc.rep.gpus, x) for pc, x in upto(whole)) + fresh_for_frac
                <= gpu_cap + freed("gpus")
            )
            if shares_evicted:
                # An evicted share may leave its GPU whole: the GPU row counts that GPU freed and
                # the share row counts the share's milli beside the GPU's residual, the same room
                # twice. Counted in milli, whole pods and shares together, it is counted once.
                m.add(
                    self._lin((1000 * pc.rep.gpus, x) for pc, x in upto(whole))
                    + self._lin((pc.rep.gpu_milli, x) for pc, x in upto(frac))
                    <= 1000 * gpu_cap + partial + freed("milli")
                )
            m.add(
                self._lin((pc.rep.cpu_milli, x) for pc, x in upto(here)) <= cpu_cap + freed("cpu")
            )
            m.add(
                self._lin((pc.rep.memory_mi_b, x) for pc, x in upto(here)) <= mem_cap + freed("mem")
            )
        self._size_rows(grp, whole)
        self._spread_rows(grp, here, vic)

    def _share_rows(self, grp: Group, frac, fresh, vic, fresh_top: int) -> None:
        """GPU shares in a group of many nodes: mass, plus DFF cuts when no share is evicted."""
        freed = sum(self.room_of[sig].milli * var for sig, var, _ in vic if self.room_of[sig].slots)
        self.m.add(
            self._lin((pc.rep.gpu_milli, x) for pc, x in frac)
            <= 1000 * fresh + grp.total(lambda c: sum(c.partial)) + freed
        )
        if any(v.fractional for _, _, v in vic):
            return
        by_size: dict[int, list[cp_model.IntVar]] = defaultdict(list)
        for pc, x in frac:
            by_size[pc.rep.gpu_milli].append(x)
        partial: Counter[int] = Counter()
        for c in grp.classes:
            for r in c.partial:
                partial[r] += len(c.nodes)
        self.share_groups.append(ShareGroup(fresh, fresh_top, dict(by_size), partial))
        for k in DFF_ORDERS:
            cap = dff_capacity(k)
            # Over the group's residuals, each as often as nodes have it (grp.total, summed once
            # per residual instead of once per node class).
            prefilled = sum(n * (cap - dff_scaled(k, 1000 - r)) for r, n in partial.items())
            self.m.add(
                self._lin((dff_scaled(k, pc.rep.gpu_milli), x) for pc, x in frac)
                <= cap * fresh + prefilled
            )
        for eps in eps_thresholds({pc.rep.gpu_milli for pc, _ in frac}):
            prefilled = sum(n * (1000 - eps_scaled(eps, 1000 - r)) for r, n in partial.items())
            self.m.add(
                self._lin((eps_scaled(eps, pc.rep.gpu_milli), x) for pc, x in frac)
                <= 1000 * fresh + prefilled
            )

    def _exact_gpus(self, grp: Group, frac) -> cp_model.LinearExprT:
        """One node: shares are assigned to GPUs exactly; returns the fresh GPUs they open."""
        m = self.m
        cls = grp.rep
        node = cls.nodes[0]
        opened = []
        per_pc: dict[int, list[cp_model.IntVar]] = defaultdict(list)
        for g, r in enumerate(self.state.res[node]):
            if r == UNUSABLE or r == 0:
                continue
            b = self._var(1, f"b_{grp.id}_{g}") if r == 1000 else None
            if b is not None:
                opened.append(b)
            terms = []
            for pc, _ in frac:
                if pc.rep.gpu_milli > r:
                    continue
                y = self._var(min(len(pc.pods), r // pc.rep.gpu_milli), f"y_{pc.id}_{g}")
                self.y[(pc.id, grp.id, g)] = y
                per_pc[pc.id].append(y)
                terms.append(pc.rep.gpu_milli * y)
            if terms:
                m.add(sum(terms) <= (1000 * b if b is not None else r))
        for pc, x in frac:
            m.add(x == sum(per_pc[pc.id]))
        return sum(opened)

    def _size_rows(self, grp: Group, whole) -> None:
        """A 4-GPU pod needs 4 free GPUs on one node: count how many such blocks nodes hold.
        Evicting a victim of g usable GPUs adds at most ceil(g / size) blocks to its node
        (floor((f + g) / s) - floor(f / s) <= ceil(g / s)), so victims enter at that rate."""
        vic = [(sig, self.v[(sig, grp.id)]) for sig in self.victims_of[grp.id]]
        for size in sorted({pc.rep.gpus for pc, _ in whole if pc.rep.gpus > 1}):
            if all(c.free_whole % size == 0 for c in grp.classes) and not vic:
                continue  # implied by the GPU row
            gained = self._lin((-(-self.room_of[sig].gpus // size), var) for sig, var in vic)
            self.m.add(
                self._lin((pc.rep.gpus // size, x) for pc, x in whole)
                <= grp.total(lambda c, size=size: c.free_whole // size) + gained
            )

    def _spread_rows(self, grp: Group, here, vic) -> None:
        limits: dict[str, set[int]] = defaultdict(set)
        for pc, _ in here:
            limit = self.state.spread_limit(pc.rep)
            if limit is not None and pc.spread_binds:
                limits[pc.rep.app].add(limit)  # type: ignore[index]
        for app, values in limits.items():
            members = [(pc.rep.priority, x) for pc, x in here if pc.rep.app == app]
            room = grp.total(
                lambda c, app=app, values=values: max(0, min(values) - dict(c.apps).get(app, 0))
            )
            # An evicted pod of the same app frees a slot, for higher priority only.
            freed = [(v.priority, var) for _, var, v in vic if v.app == app]
            for q in sorted({p for p, _ in members}) if freed else [None]:
                self.m.add(
                    self._expr.sum([x for p, x in members if q is None or p <= q])
                    <= room + self._expr.sum([v for p, v in freed if q is not None and p < q])
                )

    def _binding(self) -> set[str]:
        """Budgets new work could reach: a domain whose draw stays within budget even if every
        pending pod ran below it, at its most power-hungry GPU model, has no row (such a row
        never binds; measured on openb under a facility budget at nameplate, it only steered
        CP-SAT to counts that realised 4 points worse)."""
        s = self.state
        reps = {s.nodes[c.nodes[0]].gpu_model: c.nodes[0] for c in s.classes if c.nodes}
        # Per power signature, not per pod: ten thousand pending pods have a few dozen.
        most_of: dict[tuple, int] = {}
        most = 0
        for p in self.cycle.pending:
            sig = (p.gpus, p.gpu_milli, p.kind, p.power_watts_per_gpu)
            w = most_of.get(sig)
            if w is None:
                w = most_of[sig] = max((s.watts(p, n) for n in reps.values()), default=0)
            most += w
        return {d for d, b in s.budget.items() if s.power[d] + most > b}

    def _power_rows(self) -> None:
        s = self.state
        # A domain already over budget (a budget cut under running work) is frozen: no new load
        # beyond what evictions there free, so its draw never rises. The rest plans as usual.
        rooms: dict[str, int] = {d: max(0, b - s.power[d]) for d, b in s.budget.items()}
        binding = self._binding()
        rows_of: dict[int, list[str]] = {}
        for grp in self.groups:
            rows = [d for d in grp.upper if d in binding]
            if grp.leaf_room is not None and any(c.leaf in binding for c in grp.classes):
                rows.append(grp.leaf_key)
                rooms[grp.leaf_key] = grp.leaf_room
            rows_of[grp.id] = rows
        terms: dict[str, list[tuple[int, int, cp_model.IntVar]]] = defaultdict(list)
        freed: dict[str, list[tuple[int, int, cp_model.IntVar]]] = defaultdict(list)
        prio = {pc.id: pc.rep.priority for pc in self.demand.classes}
        for (j, gid), x in self.x.items():
            w = self._draw[(j, gid)]
            for d in rows_of[gid] if w else ():
                terms[d].append((prio[j], w, x))
        for (sig, gid), var in self.v.items():
            victim = self.victim_rep[sig]
            w = self._watts(victim, self.groups[gid].rep)
            for d in rows_of[gid] if w else ():
                freed[d].append((victim.priority, w, var))
        weighted_sum = self._expr.weighted_sum
        for d, items in terms.items():
            levels = sorted({p for p, _, _ in items}) if freed[d] else [None]
            for q in levels:
                # Every draw is non-zero: no filtering through _lin (a domain row of the
                # facility holds every (class, group) count, at each priority level).
                upto = items if q is None or q == levels[-1] else [t for t in items if t[0] <= q]
                use = weighted_sum([x for _, _, x in upto], [w for _, w, _ in upto])
                gain = self._lin((w, v) for p, w, v in freed[d] if q is not None and p < q)
                self.m.add(use <= rooms[d] + gain)

    def _objective(self) -> None:
        """Weighted GPU allocation (net of what evictions take), then CPU-only pods placed, then
        fewer evictions. (Keeping empty nodes empty was a term once: it let the solver crowd
        pods onto fewer nodes of a class, which the group's summed CPU row allows but the
        nodes do not, and cost 3 points on openb when realised.)"""
        pcs = {pc.id: pc for pc in self.demand.classes}
        policy = self.cycle.policy
        values = [pc.value for pc in self.demand.classes if pc.value] + [
            pod_value(v, policy) for v in self.victim_rep.values()
        ]
        self.unit = reduce(math.gcd, values, 0) or 1
        value = self._lin((pcs[j].value // self.unit, x) for (j, _), x in self.x.items())
        value -= self._lin(
            (pod_value(self.victim_rep[sig], policy) // self.unit, var)
            for (sig, _), var in self.v.items()
        )
        cpu_only = self._lin((1, x) for (j, _), x in self.x.items() if not pcs[j].value)
        victims = len(self.cycle.victims)
        self.objective = Objective(
            [
                Term(
                    "value",
                    value,
                    sum(pc.value // self.unit * len(pc.pods) for pc in self.demand.classes),
                ),
                Term(
                    "cpu-only pods",
                    cpu_only,
                    sum(len(pc.pods) for pc in self.demand.classes if not pc.value),
                ),
                Term(
                    "evictions avoided",
                    victims - self._expr.sum(list(self.v.values())),
                    victims,
                ),
            ]
        )
        self.m.maximize(self.objective.expr())

    def text(self) -> str:
        """The model in protobuf text format, as CP-SAT's own tools read it (an LP-only model in
        LP format)."""
        if self.lp_only:
            return self.m.export_to_lp_string(obfuscate=False)
        return str(self.m.proto)

    def hint(self, placed: dict[str, tuple[int, tuple[int, ...]]], class_of: list[int]) -> None:
        """Start the search from a greedy plan made on the same classes."""
        self.hinted = True
        pc_of = {p.key: pc.id for pc in self.demand.classes for p in pc.pods}
        on_class: Counter[tuple[int, int]] = Counter()
        on_gpu: Counter[tuple[int, int, int]] = Counter()
        for key, (node, gpus) in placed.items():
            gid = self.group_of_class[class_of[node]]
            on_class[(pc_of[key], gid)] += 1
            if len(gpus) == 1:
                on_gpu[(pc_of[key], gid, gpus[0])] += 1
        for key, var in self.x.items():
            self.m.add_hint(var, on_class.get(key, 0))
        for key, var in self.y.items():
            self.m.add_hint(var, on_gpu.get(key, 0))
        for var in self.v.values():
            self.m.add_hint(var, 0)
        for gc in self.demand.gangs:
            done = sum(all(p.key in placed for p in gang) for gang in gc.gangs)
            self.m.add_hint(self.z[gc.id], done)

    # -- solve -----------------------------------------------------------------------------
    def _lp_model(self) -> cp_model.CpModel | model_builder.Model:
        """This model plus the share patterns' columns (patterns.py), for the bound's LP: they
        tighten it but would swamp CP-SAT."""
        if not self.share_groups:
            return self.m
        if self.lp_only:
            lp = self.m.clone()
        else:
            lp = cp_model.CpModel()
            lp.proto.copy_from(self.m.proto)
        add_pattern_rows(lp, self.share_groups)
        return lp

    def _solve_lp(
        self, model, time_limit: float, clock: Callable[[], float], upper: list[int] | None = None
    ) -> LpResult | None:
        if self.lp_only:
            return solve_built(model, time_limit)
        return solve_lp(model, time_limit, clock, upper)

    def tightened_bound(
        self, time_limit: float, clock: Callable[[], float] = time.perf_counter
    ) -> float | None:
        """The configuration LP's bound, in the objective's units, if it is solved within
        `time_limit` and beats the LP's; None otherwise (or with no shares to pattern)."""
        if not self.share_groups or self.lp_bound == math.inf or time_limit <= _MIN_LP_SECONDS:
            return None
        start = clock()
        model = self._lp_model()
        # Adding the pattern columns takes time too (a quarter of a second at 16,384 nodes):
        # the LP gets what is left of the limit after it.
        tighter = self._solve_lp(model, time_limit - (clock() - start), clock)
        if tighter is None:
            return None
        bound = tighter.bound * (1 + 1e-9) + 1e-6
        if bound >= self.lp_bound:
            return None
        return float(self.objective.first(bound) * self.unit)

    def _counts(self, status: str, combined_bound: float, value, raw=None) -> Counts:
        raw = raw or value
        return Counts(
            quota={k: q for k, v in self.x.items() if (q := raw(v)) > 1e-6},
            quota_gangs={k: raw(v) for k, v in self.z.items()},
            quota_evict={k: q for k, v in self.v.items() if (q := raw(v)) > 1e-6},
            status=status,
            bound=float(self.objective.first(combined_bound) * self.unit),
            x={k: value(v) for k, v in self.x.items() if value(v)},
            per_gpu={k: value(v) for k, v in self.y.items() if value(v)},
            evict={k: value(v) for k, v in self.v.items() if value(v)},
            gangs={k: value(v) for k, v in self.z.items()},
        )

    def solve(
        self,
        time_limit: float,
        workers: int,
        seed: int,
        relative_gap: float,
        deterministic: bool = False,
        reserve: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
        lp_reserve: float | None = None,
    ) -> Counts:
        """LP relaxation first (a bound and a rounded start), then CP-SAT; every stage stops
        `reserve` seconds (what the caller needs after it) before `time_limit`, as `clock`
        tells, the LPs `lp_reserve` seconds (default: `reserve`). An LP-only model stops after
        the LP: it has no CP-SAT model to go on with."""
        start = clock()

        def left(keep: float = reserve if lp_reserve is None else lp_reserve) -> float:
            if deterministic:
                return time_limit
            return time_limit - (clock() - start) - keep

        progress.report("LP relaxation")
        lp = self._solve_lp(self.m, left(), clock, self.upper) if left() > 0 else None
        lp_bound = math.inf
        floor_of = None
        if lp is not None:
            # Relative slack on the LP optimum guards the bound against floating-point error.
            lp_bound = lp.bound * (1 + 1e-9) + 1e-6
            self.lp_bound = lp_bound
            # The configuration LP, for the bound only: its fractions, as quotas, realised worse
            # (2.2% gap against 0.9% on the scattered 4,096-node state, the same bound). Where
            # the LP's counts are the plan (lp_only), it waits until they are realised
            # (tightened_bound): the plan first, the proof after, time allowing.
            if self.share_groups and not self.lp_only and left() > _MIN_LP_SECONDS:
                tighter = solve_lp(self._lp_model(), left(), clock)
                if tighter is not None:
                    lp_bound = min(lp_bound, tighter.bound * (1 + 1e-9) + 1e-6)

            def floor_of(var) -> int:
                return math.floor(lp.values[var.index] + 1e-6)

            def lp_value(var) -> float:
                return lp.values[var.index]

            if self.lp_only:
                return self._counts("LP_ROUNDED", lp_bound, floor_of, lp_value)
            if not self.hinted:
                # A greedy hint, where given, is feasible for sure; the rounded LP may not be.
                for i, val in enumerate(lp.values):
                    self.m.add_hint(self.m.get_int_var_from_proto_index(i), math.floor(val + 1e-6))
        if self.lp_only:
            return Counts(status="UNKNOWN", bound=math.inf)
        time_limit_cp = left(reserve)
        if not deterministic and time_limit_cp < _MIN_CP_SAT_SECONDS:
            if floor_of is not None:
                return self._counts("LP_ROUNDED", lp_bound, floor_of, lp_value)
            return Counts(status="UNKNOWN", bound=math.inf)
        solver = cp_model.CpSolver()
        if deterministic:
            solver.parameters.max_deterministic_time = max(0.05, time_limit)
            solver.parameters.num_workers = 1
        else:
            solver.parameters.max_time_in_seconds = max(0.05, time_limit_cp)
            solver.parameters.num_workers = workers
        solver.parameters.random_seed = seed
        solver.parameters.relative_gap_limit = relative_gap
        solver.parameters.symmetry_level = 0  # symmetry detection costs more than it saves here
        listener = progress.current()
        progress.report("CP-SAT", "searching")
        code = solver.solve(self.m, _Progress(listener) if listener is not None else None)
        status = solver.status_name(code)
        if code in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            bound = min(lp_bound, solver.best_objective_bound)
            return self._counts(status, bound, solver.value)
        if floor_of is not None:
            return self._counts("LP_ROUNDED", lp_bound, floor_of, lp_value)
        return Counts(status=status, bound=math.inf)


class _Progress(cp_model.CpSolverSolutionCallback):
    """Each solution CP-SAT finds, with its gap to the bound, for a listener (a spinner). Called
    from the solver's threads, which do not see the caller's context: the listener is given."""

    def __init__(self, listener: progress.Listener) -> None:
        super().__init__()
        self.listener = listener
        self.found = 0

    def on_solution_callback(self) -> None:
        self.found += 1
        value, bound = self.objective_value, self.best_objective_bound
        gap = abs(bound - value) / max(abs(value), 1e-9)
        self.listener("CP-SAT", f"solution {self.found}, gap {gap:.1%}")
