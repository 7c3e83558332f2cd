"""Turn the solver's counts into concrete nodes and GPUs, keeping every promise a plan makes.

Order matters: evict what the solver chose, place shares on the GPUs an exact class named, then
pack each class best-fit; a gang that lost a member is taken out whole; leftovers get a greedy
second chance; an eviction whose room no higher-priority pod uses is undone.
"""

from __future__ import annotations

from collections import defaultdict, deque

from scheduler.fit.cycle import Cycle
from scheduler.fit.greedy import greedy_fill
from scheduler.fit.state import Placement
from scheduler.fit.statement import Statement
from scheduler.model import Pod
from scheduler.planner.evictions import Evicted, evict_counted, preempt_for, settle_evictions
from scheduler.solver import Counts, Demand, Group

_NO_CLASS = -1


def _deal(k: int, grp: Group) -> list[tuple[int, int]]:
    """Split k pods over a group's classes in proportion to their nodes: (class id, count)."""
    n = grp.n
    shares = [(c.id, k * len(c.nodes) // n) for c in grp.classes]
    rest = k - sum(q for _, q in shares)
    return [(c, q + (1 if i < rest else 0)) for i, (c, q) in enumerate(shares)]


def _assign(
    cycle: Cycle, demand: Demand, counts: Counts, groups: list[Group]
) -> dict[int, list[tuple[Pod, int | None]]]:
    """Which pods go to which node class, and for one-node classes, to which GPU."""
    s = cycle.state
    items: dict[int, list[tuple[Pod, int | None]]] = defaultdict(list)
    gpu_slots: dict[tuple[int, int], deque[int]] = defaultdict(deque)
    for (j, gid, g), k in counts.per_gpu.items():
        gpu_slots[(j, groups[gid].rep.id)].extend([g] * k)

    def put(pod: Pod, j: int, c: int) -> None:
        slots = gpu_slots.get((j, c))
        items[c].append((pod, slots.popleft() if slots else None))

    dealt: dict[int, list[tuple[int, int]]] = defaultdict(list)  # pod class -> (class, count)
    for (j, gid), k in sorted(counts.x.items()):
        dealt[j].extend(_deal(k, groups[gid]))
    queues = {pc.id: deque(pc.pods) for pc in demand.classes if not pc.gang_member}
    for j, queue in queues.items():
        for c, k in dealt[j]:
            for _ in range(k):
                put(queue.popleft(), j, c)
    class_of_pod = {p.key: pc.id for pc in demand.classes for p in pc.pods}
    # Slots in power-domain order, so a gang's members land in as few domains as can be.
    slots = {
        j: deque(
            c
            for c, k in sorted(dealt[j], key=lambda ck: (s.classes[ck[0]].leaf, ck[0]))
            for _ in range(k)
        )
        for j in dealt
        if j not in queues
    }
    for gc in demand.gangs:
        for gang in gc.gangs[: counts.gangs.get(gc.id, 0)]:
            for p in gang:
                j = class_of_pod[p.key]
                # Rounded counts can fall short of whole gangs: such a member has no class yet
                # and joins the leftovers, where its gang is placed whole or not at all.
                put(p, j, slots[j].popleft() if slots.get(j) else _NO_CLASS)
    return items


def _pack(
    statement: Statement,
    items: dict[int, list[tuple[Pod, int | None]]],
    groups: list[Group],
    group_of_class: list[int],
) -> list[Pod]:
    state = statement.state
    left: list[Pod] = []
    rest_of: dict[int, list[Pod]] = defaultdict(list)
    for c, pods in items.items():
        if c == _NO_CLASS:
            left.extend(p for p, _ in pods)
            continue
        node0 = state.classes[c].nodes[0]
        for pod, g in pods:
            # An exact (one-node) class named the GPU: the model already checked the share fits.
            if g is None:
                continue
            if (
                state.res[node0][g] < pod.gpu_milli
                or not state.host_ok(pod, node0)
                or not state.power_ok(pod, node0)
            ):
                left.append(pod)
                continue
            statement.place(pod, node0, (g,))
        rest_of[c] = [p for p, g in pods if g is None]
    by_group: dict[int, list[int]] = defaultdict(list)
    for c in rest_of:
        by_group[group_of_class[c]].append(c)
    for gid, class_ids in by_group.items():
        classes = groups[gid].classes
        pooled = [p for c in class_ids for p in rest_of[c]]
        nodes = [i for cls in classes for i in cls.nodes]
        # Where CPU or memory runs short, dealing over the whole group keeps every node at the
        # group's average mix; elsewhere the bucketed best fit, class by class, is as good.
        scarce = sum(p.cpu_milli for p in pooled) > 0.8 * sum(state.cpu[i] for i in nodes) or sum(
            p.memory_mi_b for p in pooled
        ) > 0.8 * sum(state.mem[i] for i in nodes)
        if scarce:
            left.extend(_deal_units(statement, [cls.id for cls in classes], pooled))
            continue
        for c in class_ids:
            rest = sorted(
                rest_of[c],
                key=lambda p: (-p.gpus, -p.milli_total, -p.cpu_milli, -p.memory_mi_b, p.key),
            )
            for pod in rest:
                where = state.find_in_class(pod, c)
                if where is None:
                    left.append(pod)
                else:
                    statement.place(pod, *where)
    return left


def _pair_shares(shares: list[Pod]) -> list[list[Pod]]:
    """Best-fit decreasing of GPU shares into whole GPUs, across the class: pairing them per node
    would strand half a GPU on every node that got an odd one."""
    bins: list[tuple[int, list[Pod]]] = []  # (room left, pods)
    for pod in sorted(shares, key=lambda p: (-p.gpu_milli, p.key)):
        fits = [(room, i) for i, (room, _) in enumerate(bins) if room >= pod.gpu_milli]
        if fits:
            room, i = min(fits)
            bins[i] = (room - pod.gpu_milli, [*bins[i][1], pod])
        else:
            bins.append((1000 - pod.gpu_milli, [pod]))
    return [pods for _, pods in bins]


def _deal_units(statement: Statement, class_ids: list[int], pods: list[Pod]) -> list[Pod]:
    """Where CPU or memory runs short: fill partly used GPUs, pair the other shares into whole
    GPUs, then deal units (a pod, or a GPU of shares) round-robin over the nodes, so each node
    gets the average mix, the mix the model's group-wide rows showed to fit."""
    state = statement.state
    nodes = [i for c in class_ids for i in state.classes[c].nodes]
    model = state.classes[class_ids[0]].model
    left: list[Pod] = []
    shares = []
    for pod in (p for p in pods if p.fractional):
        where = None
        for c in class_ids:
            found = state.find_partial(pod, c)
            if found is not None and state.power_ok(pod, found[0]):
                where = found
                break
        if where is not None:
            statement.place(pod, *where)
        else:
            shares.append(pod)
    units = [[p] for p in pods if not p.fractional] + _pair_shares(shares)
    units.sort(key=lambda u: (-max(p.gpus for p in u), -sum(p.cpu_milli for p in u), u[0].key))
    # A snake draft: the order turns at each end, so no node gets the heaviest unit of every
    # round (units come heaviest first).
    order = nodes + nodes[::-1]
    at = 0
    for unit in units:
        need = max(p.gpus for p in unit) if unit[0].gpus else 0
        if unit[0].gpu_models and model not in unit[0].gpu_models:
            left.extend(unit)
            continue
        for step in range(len(order)):
            node = order[(at + step) % len(order)]
            free = [g for g, r in enumerate(state.res[node]) if r == 1000]
            if len(free) >= need and state.group_fits(unit, node):
                at = (at + step + 1) % len(order)
                gpus = tuple(free[:need])
                for p in unit:
                    statement.place(p, node, gpus)
                break
        else:
            left.extend(unit)
    return left


def _break_partial_gangs(
    statement: Statement, pending: list[Pod], left: list[Pod]
) -> list[list[Pod]]:
    """A gang with a member left over is taken back whole (its placed members' placements
    leave the statement) and goes to the leftovers as one unit."""
    members: dict[str, list[Pod]] = defaultdict(list)
    for p in pending:
        if p.gang_key:
            members[p.gang_key].append(p)
    broken = {p.gang_key for p in left if p.gang_key}
    units = [[p] for p in left if not p.gang_key]
    for key in sorted(broken):
        for p in members[key]:
            statement.take_back({p.key})
        units.append(members[key])
    return units


def expand(
    cycle: Cycle, demand: Demand, counts: Counts, groups: list[Group], group_of_class: list[int]
) -> tuple[dict[str, Placement], Evicted]:
    state = cycle.state
    evicted = evict_counted(cycle, counts.evict, group_of_class)
    items = _assign(cycle, demand, counts, groups)
    # CPU-only pods are worth least: they go last of all, onto nodes whose GPUs are taken, so
    # their CPU never strands a free GPU that a leftover GPU pod could still use.
    cpu_only = [[p] for pods in items.values() for p, _ in pods if p.gpus == 0 and not p.gang_key]
    items = {c: [(p, g) for p, g in pods if p.gpus or p.gang_key] for c, pods in items.items()}
    packing = Statement(state)
    left = _pack(packing, items, groups, group_of_class)
    units = _break_partial_gangs(packing, cycle.pending, left)
    placed: dict[str, Placement] = {p.key: at for p, at in packing.placed()}
    packing.commit()
    units = greedy_fill(state, units, placed)
    if cycle.victims:
        preempt_for(cycle, units, evicted, placed)
    kept, bumped = settle_evictions(state, evicted, cycle.pending, placed)
    greedy_fill(state, bumped, placed)
    greedy_fill(state, cpu_only, placed)
    return placed, kept
