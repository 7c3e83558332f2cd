"""One scheduling cycle: a portfolio of plans, the best of which comes back.

Best fit (exactly as the baseline places) and the stranding-aware greedy are always made first:
they are the floor, and a plan never comes back worse than either. The aggregated model then
decides counts of pods per group of nodes under every budget; its counts are realised twice
where there is time (floored counts dealt over alike nodes, and quotas that guide the greedy
look-up), and the best candidate wins. Small clusters are modelled node by node and exactly;
clusters whose free capacity is scattered over thousands of distinct nodes are modelled in pools
of one GPU model per leaf domain. The best candidate is then improved while time is left: waiting
pods swapped for less valuable ones of this cycle's (planner.swap), and a few nodes at a time
repacked exactly with waiting pods (planner.improve). The time limit covers it all: at the limit,
the best plan made so far comes back.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog

from scheduler import progress
from scheduler.fit.cycle import Cycle, start_cycle
from scheduler.fit.disruption import hold_for_budgets
from scheduler.fit.greedy import arrival_order, greedy_fill, units_of
from scheduler.fit.outcome import assemble
from scheduler.fit.state import Placement
from scheduler.fit.value import check_total_value, pending_values
from scheduler.model import ClusterSnapshot, PackingPolicy, Plan, Pod
from scheduler.planner.broken_gangs import release_broken_gangs
from scheduler.planner.candidate import Candidate, best_of
from scheduler.planner.defrag import defragment, defragment_by_repacks
from scheduler.planner.expand import expand
from scheduler.planner.guided import realise
from scheduler.planner.improve import REPACK_SECONDS as IMPROVE_SECONDS
from scheduler.planner.improve import improve
from scheduler.planner.moves import plan_moves
from scheduler.planner.notes import overcommit_notes, power_notes
from scheduler.planner.preferences import honour_preferences
from scheduler.planner.repair import repair
from scheduler.planner.rules_first import plan_rules_first
from scheduler.planner.swap import swap
from scheduler.solver import AggregateModel, Demand, Group, OutOfTime, classify, group_classes

log = structlog.get_logger(__name__)

# Up to this many nodes every node is its own class, which the model solves GPU by GPU, exactly.
EXACT_NODES = 24
# Above this many (pod class x node group) pairs, node classes are pooled per GPU model and leaf
# domain: a model that size does not build and solve within a cycle on two cores.
POOL_ABOVE = 20_000
# Candidates repaired (scheduler.planner.repair) before the best is chosen.
REPAIRED = 2
REPAIR_WITHIN = 0.99  # ... of them, only those within 1% of the best
# The stranding-aware greedy plan is made only while no plan beats best fit's by more than this.
STRANDING_REACH = 1.02
# With deterministic solving, the repacks (scheduler.planner.improve) get this share of the
# budget, in repacks of improve's deterministic seconds each.
IMPROVE_SHARE = 0.25
# ... and the repacks that move running pods (planner.defrag) the whole budget once more:
# on openb under the FGD protocol, 0.25, 0.5, 1 and 4 gave 95.76, 95.82, 95.86 and 95.86%.
DEFRAG_SHARE = 1.0


def _gang_notes(pending: list[Pod]) -> dict[str, str]:
    return {
        p.gang_key: f"gang {p.gang_key} ({p.gang.size} members, all or none)"
        for p in pending
        if p.gang_key and p.gang
    }


def _greedy(
    base: Cycle,
    stranding: bool,
    order=None,
    stop: Callable[[], bool] | None = None,
) -> Candidate:
    cycle = base.copy()
    cycle.state.weigh_stranding = stranding
    placed: dict[str, Placement] = {}
    greedy_fill(cycle.state, units_of(cycle.pending), placed, order, stop)
    return Candidate("greedy" if stranding else "best-fit", "GREEDY", cycle, placed, {})


def _might_all_fit(cycle: Cycle) -> bool:
    """Whether the pending pods ask for no more GPU capacity than is free: else no greedy order
    places them all, and trying would only cost time."""
    need = sum(p.milli_total for p in cycle.pending)
    free = sum(cycle.state.free_milli(node) for node in range(len(cycle.state.res)))
    return need <= free


@dataclass
class _Shape:
    """How one model sees the cycle: its groups of nodes and classes of pods."""

    groups: list[Group]
    group_of_class: list[int]
    demand: Demand
    pooled: bool


def _shapes(cycle: Cycle, exact: bool) -> Iterator[_Shape]:
    """The models worth solving, the cheapest first. Alike nodes grouped where that keeps the
    model small; else pools of one GPU model per rack, and pools per row as well (on scattered
    states at 512 and 1,024 nodes rack pools realised better, on 4,096 nodes and with racks
    over budget row pools did: with time, both are solved and the better plan wins); where
    rack pools are too large, row pools alone. Each is worked out only when asked for: a
    cycle short of time solves the first alone."""
    state, pending = cycle.state, cycle.pending
    # At least one class per pod shape but its app, and (below) one group per node shape: where
    # that alone is too large, the finer model is not worked out (0.5 s at 16,384 nodes).
    pod_shapes = len(
        {
            (
                p.gpus,
                p.milli_total,
                p.cpu_milli,
                p.memory_mi_b,
                p.kind,
                p.priority,
                frozenset(p.gpu_models),
            )
            for p in pending
        }
    )

    def largest(groups: list[Group]) -> int:
        return max((g.n for g in groups), default=1)

    def fine(groups: list[Group]) -> Demand | None:
        """Pod classes of every shape for these groups, or None where that is too large."""
        if len(groups) * pod_shapes > POOL_ABOVE:
            return None
        demand = classify(pending, state, largest(groups))
        return demand if len(groups) * len(demand.classes) <= POOL_ABOVE else None

    if exact:
        groups, of_class = group_classes(state, True)
        yield _Shape(groups, of_class, classify(pending, state, largest(groups)), False)
        return
    if len({c.shape() for c in state.classes if c.nodes}) * pod_shapes <= POOL_ABOVE:
        groups, of_class = group_classes(state, False)
        demand = fine(groups)
        if demand is not None:
            yield _Shape(groups, of_class, demand, False)
            return
    groups, of_class = group_classes(state, False, pooled=True, by_parent=True)
    demand = fine(groups)
    if demand is None:
        # Pod classes by GPU shape, kind and priority alone (least CPU and memory of their
        # members), which the guided realisation holds to each pod's own. Rack pools, no fewer
        # than row pools, would need them too: row pools alone.
        coarse = classify(pending, state, largest(groups), coarse=True)
        yield _Shape(groups, of_class, coarse, True)
        return
    yield _Shape(groups, of_class, demand, True)
    groups, of_class = group_classes(state, False, pooled=True)
    demand = fine(groups)
    if demand is not None:
        yield _Shape(groups, of_class, demand, True)


def _model_candidates(
    base: Cycle,
    exact: bool,
    shape: _Shape,
    time_left: Callable[[], float],
    floor: Candidate,
    model_sink: Callable[[str], None] | None,
    reserve: float,
    clock: Callable[[], float],
    least: float,
) -> tuple[list[Candidate], float | None, list[str]]:
    """The model's plans (none if it found no solution in time), its proven bound, notes.
    CP-SAT keeps `reserve` seconds of the time left for realising the counts; the build and the
    LPs keep `least`."""
    policy = base.policy
    cycle = base.copy()
    groups, group_of_class, demand, pooled = (
        shape.groups,
        shape.group_of_class,
        shape.demand,
        shape.pooled,
    )
    # Built only while the least time a realisation needs is left: a model finished later has
    # no time to be solved and realised, and the cycle must end at its limit.
    out_of_time = None if policy.solver.deterministic else (lambda: time_left() <= least)
    progress.report(
        "building the model", f"{len(groups)} node groups x {len(demand.classes)} pod classes"
    )
    try:
        # Pooled groups are realised node by node from the LP's fractions; CP-SAT's integer
        # counts over pools would only round what the realisation rounds anyway.
        model = AggregateModel(cycle, demand, groups, group_of_class, out_of_time, lp_only=pooled)
    except OutOfTime:
        note = (
            f"model: not built, out of time ({len(groups)} node groups x "
            f"{len(demand.classes)} pod classes within the {policy.solver.time_limit_seconds:g} s "
            "limit); the greedy plan is used and its bound is every pending pod; raise "
            "solver.timeLimitSeconds"
        )
        return [], None, [note]
    if model_sink is not None:
        model_sink(model.text())
    if exact:
        # Every candidate so far is greedy, with no evictions: a feasible start.
        model.hint(floor.placed, floor.cycle.state.class_of)
    settings = policy.solver
    counts = model.solve(
        # Deterministic time does not depend on the machine's load: the whole budget, always.
        settings.time_limit_seconds if settings.deterministic else time_left(),
        settings.workers,
        settings.seed,
        settings.relative_gap,
        settings.deterministic,
        # Every stage leaves the realisations their time.
        reserve=reserve,
        clock=clock,
        lp_reserve=least,
    )
    log.info(
        "solved",
        status=counts.status,
        pooled=pooled,
        pod_classes=len(demand.classes),
        node_groups=len(groups),
        variables=len(model.x),
    )
    if counts.status not in ("OPTIMAL", "FEASIBLE", "LP_ROUNDED"):
        note = (
            f"model: {counts.status.lower()} ({len(groups)} node groups, {len(model.x)} "
            f"variables) within the {settings.time_limit_seconds:g} s limit; the greedy plan is "
            "used and its bound is every pending pod; raise solver.timeLimitSeconds"
        )
        return [], None, [note]
    stop = None if settings.deterministic else (lambda: time_left() <= 0)
    # The counts already say where each class goes; weighing stranding within them changed no
    # plan on the live family and openb (same allocation and gap) and took twice the time.
    cycle.state.weigh_stranding = False
    progress.report("realising the model's counts", counts.status)
    placed, evicted = realise(cycle, demand, counts, groups, group_of_class, stop)
    out = [Candidate("model-guided", counts.status, cycle, placed, evicted)]
    # Only with time for it: the expansion does not stop at the limit (it takes about what the
    # least a realisation needs).
    if not pooled and (settings.deterministic or time_left() > least):
        # Floored counts dealt over alike nodes: exact on one-node classes, and sometimes better
        # where the groups are large and alike.
        cycle = base.copy()
        placed, evicted = expand(cycle, demand, counts, groups, group_of_class)
        out.append(Candidate("model", counts.status, cycle, placed, evicted))
    bound = counts.bound
    if pooled:
        # The plan is made; the configuration LP may still tighten its proof with the time left
        # (a pooled model solves the LP alone, and its counts are realised first).
        tighter = model.tightened_bound(
            settings.time_limit_seconds if settings.deterministic else time_left(), clock
        )
        if tighter is not None:
            bound = min(bound, tighter)
    return out, bound, []


def _best_so_far(value: float, bound: float) -> str:
    return f"best so far {value:,.0f}, at most {bound:,.0f}"


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off for one cycle, on again after (and what it then finds is
    collected as usual). A cycle at thousands of nodes allocates hundreds of thousands of
    objects that live until it ends, and each full collection walks them all and the snapshot
    besides: at 16,384 nodes that was 1.3 s of a 10 s cycle (copying the cycle state 0.34 s
    against 0.07 s, writing the plan 0.87 s against 0.39 s). Nearly all of a cycle's garbage is
    freed by reference counting in any case."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def plan(
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    clock: Callable[[], float] = time.perf_counter,
    model_sink: Callable[[str], None] | None = None,
) -> Plan:
    """One cycle. model_sink, if given, receives the CP-SAT model as text (for debugging)."""
    check_total_value(snapshot.pods, policy)
    with _collector_paused():
        return plan_rules_first(
            snapshot, policy, lambda rest, pol: _plan(rest, pol, clock, model_sink), clock
        )


def _plan(
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    clock: Callable[[], float],
    model_sink: Callable[[str], None] | None,
) -> Plan:
    start = clock()
    progress.report("reading the snapshot", f"{len(snapshot.nodes):,} nodes")
    limit = policy.solver.time_limit_seconds
    # Pods whose PodDisruptionBudgets allow no more disruption are not preemptible this cycle.
    snapshot = hold_for_budgets(snapshot)
    # Running work on failing GPUs moves first; the cycle then plans the cluster as it stands
    # after the moves, on the state the moves were found in (one read of the cluster).
    moves, snapshot, move_notes, moved = plan_moves(snapshot, policy)
    exact = len(snapshot.nodes) <= EXACT_NODES
    # Built once; every candidate plans on a copy of its state.
    base = start_cycle(snapshot, policy, singleton_classes=exact, state=moved)
    # Choosing among the candidates, writing the plan out (assemble, which explains every pod
    # left) and letting go of the candidates' states cost up to 1.4 times what reading the
    # snapshot in did (measured: 0.6 times at 4,096 nodes, 0.7 to 1.4 at 16,384, the most
    # when best fit's plan is chosen and 10,000 pods are left; with 1.25 times, three cycles
    # of ten at 16,384 nodes ended 0.1 to 0.3 s past their limit): the work stops that much
    # before the limit, so that the whole cycle ends within it.
    # The moves' own look-ups count in too (at 16,384 nodes, a tenth of a read).
    read_in = clock() - start
    finishing = 1.5 * read_in

    def time_left() -> float:
        return max(0.0, limit - finishing - (clock() - start))

    progress.report("greedy plan", f"{len(base.pending):,} pods pending")
    floor = _greedy(base, stranding=False)
    floor_seconds = clock() - start - read_in
    # Cut short at the limit: a partial greedy plan is still a plan.
    stop = None if policy.solver.deterministic else (lambda: time_left() <= 0)
    # Realising the model's counts costs about two greedy passes and the repair: CP-SAT leaves
    # them that time, and at least a fifth of the limit (its own stop is not exact).
    reserve = max(3 * floor_seconds, 0.2 * limit) + 0.05
    # The build and the LPs, which end on their own, leave at least one greedy pass: a
    # realisation cut at the limit is still weighed against the floor, so a model started late
    # costs time, and the floor is kept.
    least = floor_seconds + 0.05
    cycle = floor.cycle
    notes = power_notes(cycle.state) + overcommit_notes(snapshot) + move_notes
    gang_notes = _gang_notes(cycle.pending)
    trivial = float(sum(v for v, _ in pending_values(base).values()))

    why: dict[str, str] = {}  # waiting pods that would fit after moves the budget did not allow

    def finish(best: Candidate, status: str, bound: float) -> Plan:
        progress.report("writing the plan", "and why pods stay pending")
        for line in notes:
            log.warning("plan degraded", note=line)
        preferred = honour_preferences(
            best.cycle.state, best.cycle.pending, best.placed, best.evicted_nodes
        )
        if preferred:
            log.info("preferences", moved=preferred)
        out = assemble(
            best.cycle.state,
            best.cycle.pending,
            best.placed,
            best.evicted,
            status=status,
            bound=bound,
            seconds=clock() - start,
            gang_notes=gang_notes,
            notes=notes,
            objective=best.value,
            moves=moves,
            reasons=why,
        )
        out = release_broken_gangs(snapshot, out, policy)
        # The whole cycle, writing the plan out included.
        summary = out.summary.model_copy(update={"solve_seconds": round(clock() - start, 4)})
        return out.model_copy(update={"summary": summary})

    if not cycle.pending:
        return finish(floor, "TRIVIAL", 0.0)
    candidates = [floor]
    # Asked for the model (to debug it), the cycle builds it even where greedy is optimal.
    shortcut = model_sink is None
    if shortcut and not exact and _might_all_fit(cycle):
        # A live cluster's cycle mostly places a few arrivals on room to spare: in queue order,
        # weighing stranding, they may all fit, and then no plan does more now, and this one
        # leaves the least stranded for later (best fit placing all too is not enough: measured
        # under the FGD protocol, taking best fit's placement then ends 6 points lower).
        queue = _greedy(base, stranding=True, order=arrival_order, stop=stop)
        queue.name = "queue-order"
        if queue.value >= trivial:
            return finish(queue, "OPTIMAL", trivial)
        candidates.append(queue)
    if shortcut and floor.value >= trivial:
        return finish(floor, "OPTIMAL", trivial)
    bound = trivial
    if time_left() > least or policy.solver.deterministic:
        failed: list[str] = []  # what went wrong with each model, if none gave a plan
        solved = False
        for i, shape in enumerate(_shapes(base, exact)):
            if i and not (policy.solver.deterministic or time_left() > 3 * least):
                break  # another model needs a build, an LP and a realisation
            found, model_bound, model_notes = _model_candidates(
                base,
                exact,
                shape,
                time_left,
                best_of(candidates),
                model_sink,
                reserve,
                clock,
                least,
            )
            candidates += found
            failed += model_notes
            if model_bound is not None:
                solved = True
                # No plan beats placing every pending pod: a bound the solver may not have proved.
                bound = min(model_bound, bound)
        if not solved:
            notes += failed  # no model gave a plan: the plan is degraded, and says why
    else:
        notes.append(
            f"model: not built, the {limit:g} s time limit was spent on the greedy plans; the "
            "bound is every pending pod; raise solver.timeLimitSeconds"
        )
    # Last, and only with time to finish (it takes about twice best fit's time) and a chance to
    # win: the model's plan already holds the floor, this one only sometimes beats it, and never
    # by much (on the 17 instances of benchmarks/bench_live.py, by at most 1.2% over best fit).
    # Its time goes to the repacks below instead.
    within_reach = best_of(candidates).value <= STRANDING_REACH * floor.value
    if within_reach and (policy.solver.deterministic or time_left() > 3 * floor_seconds):
        candidates.append(_greedy(base, stranding=True, stop=stop))
    log.info("candidates", **{c.name: c.value for c in candidates})
    progress.report("repairing", _best_so_far(best_of(candidates).value, bound))
    # Repair the best few (a repair only adds pods), most valuable first, while time is left.
    top = sorted(candidates, key=lambda c: c.rank(), reverse=True)[:REPAIRED]
    for c in top:
        if c.value < REPAIR_WITHIN * top[0].value:
            break  # too far behind for a repair to make up
        if stop is not None and stop():
            break
        pre = swap(c.cycle, c.placed, stop, c.evicted_nodes)
        moved = repair(c.cycle, c.placed, stop)
        log.info("repaired", candidate=c.name, placed=moved, swaps=pre, value=c.value)
    best = best_of(candidates)
    # What is left free is now often in pieces too small for what waits: swap waiting pods
    # for less valuable ones of this cycle's, then repack a few nodes at a time.
    frozen = best.evicted_nodes
    progress.report("repacking", _best_so_far(best.value, bound))
    swaps = swap(best.cycle, best.placed, stop, frozen)
    if policy.solver.deterministic:
        rounds = max(1, int(IMPROVE_SHARE * limit / IMPROVE_SECONDS))
        kept = improve(best.cycle, best.placed, policy.solver.seed, rounds=rounds, frozen=frozen)
    else:
        kept = improve(best.cycle, best.placed, policy.solver.seed, time_left, frozen=frozen)
    log.info("improved", candidate=best.name, swaps=swaps, repacks=kept, value=best.value)
    # Last, with what budget the moves off failing GPUs left: a few running pods move where
    # that lets waiting work fit.
    running = sum(1 for p in snapshot.pods if p.node is not None)
    budget = policy.moves.budget(running, snapshot.metadata.moves_last_hour) - len(moves)
    if budget > 0 and not (stop is not None and stop()):
        progress.report("moving running pods", _best_so_far(best.value, bound))
        off_limits = set(best.evicted)
        defrag, why = defragment(best.cycle, best.placed, off_limits, budget, stop)
        moves = moves + defrag
        left = budget - len(defrag)
        if left > 0 and not (stop is not None and stop()):
            # Then several at once, where one at a time finds no room: exact repacks with
            # running pods movable at their cost.
            off_limits |= {m.pod for m in moves}
            if policy.solver.deterministic:
                repacked = defragment_by_repacks(
                    best.cycle, best.placed, off_limits, left, policy.solver.seed,
                    rounds=max(1, int(DEFRAG_SHARE * limit / IMPROVE_SECONDS)), frozen=frozen,
                )  # fmt: skip
            else:
                repacked = defragment_by_repacks(
                    best.cycle, best.placed, off_limits, left, policy.solver.seed,
                    time_left=time_left, frozen=frozen,
                )  # fmt: skip
            moves = moves + repacked
            why = {k: line for k, line in why.items() if k not in best.placed}
        log.info("defragmented", moves=len(moves), value=best.value)
    log.info("chosen", candidate=best.name, seconds=round(clock() - start, 3))
    if best.status == "GREEDY":
        status = "GREEDY"
    else:
        # OPTIMAL only when the realised plan meets the proven bound; else whose counts these are.
        status = "OPTIMAL" if best.value >= bound else best.status.replace("OPTIMAL", "FEASIBLE")
    return finish(best, status, bound)
