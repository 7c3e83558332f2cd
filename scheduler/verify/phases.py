"""Every intermediate state of a plan's execution, checked: the steps cover the plan exactly,
their waits form no circle, and no GPU, node or budget is overrun at any step.

The steps are replayed in the order that loads the cluster most: whenever a step that adds load
(a start or a binding) may begin, it goes before any step that takes load off. Load only leaves
through steps that take it off, so a state reached in this order is at least as loaded, node by
node and domain by domain, as any the waits allow at the same point. The plan's own order (its
phases) is replayed too. Like the feasibility check, this recomputes everything from the
snapshot and the power model and shares no code with the planner or the executors.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict

from scheduler.execute.steps import Step, StepKind
from scheduler.model import ClusterSnapshot, PackingPolicy, Plan, Pod
from scheduler.power import budgets, domain_chain, domain_power, pod_watts


def check_steps(
    snapshot: ClusterSnapshot, policy: PackingPolicy, plan: Plan, steps: list[Step]
) -> list[str]:
    problems = _coverage(plan, steps)
    order = _adds_first(steps)
    if order is None:
        return [*problems, "steps: their waits form a circle; nothing can be carried out"]
    problems += _replay(snapshot, policy, steps, order, "adds first")
    problems += _replay(snapshot, policy, steps, sorted(s.id for s in steps), "plan order")
    return problems


def _coverage(plan: Plan, steps: list[Step]) -> list[str]:
    want = Counter(
        [(StepKind.EVICT, e.pod, e.node, ()) for e in plan.evictions]
        + [(StepKind.STOP, m.pod, m.from_node, ()) for m in plan.moves]
        + [(StepKind.START, m.pod, m.to_node, tuple(m.gpu_indices)) for m in plan.moves]
        + [(StepKind.BIND, b.pod, b.node, tuple(b.gpu_indices)) for b in plan.bindings]
    )
    got = Counter((s.kind, s.pod, s.node, tuple(s.gpus)) for s in steps)
    problems = [f"steps: {k} {p} on {n} is missing" for (k, p, n, _), c in (want - got).items()]
    problems += [
        f"steps: {k} {p} on {n} is not in the plan" for (k, p, n, _), c in (got - want).items()
    ]
    ids = {s.id for s in steps}
    problems += [
        f"step #{s.id}: waits for #{a}, which does not exist"
        for s in steps
        for a in s.after
        if a not in ids
    ]
    return problems


def _adds_first(steps: list[Step]) -> list[int] | None:
    """A topological order that begins every ready add before any ready removal (lowest id
    first within each); None when the waits form a circle."""
    ids = {s.id for s in steps}
    waiting = {s.id: len({a for a in s.after if a in ids}) for s in steps}
    followers: dict[int, list[int]] = defaultdict(list)
    for s in steps:
        for a in set(s.after) & ids:
            followers[a].append(s.id)
    adds = {s.id for s in steps if s.adds}
    ready_adds = [i for i, n in waiting.items() if not n and i in adds]
    ready_offs = [i for i, n in waiting.items() if not n and i not in adds]
    heapq.heapify(ready_adds)
    heapq.heapify(ready_offs)
    order: list[int] = []
    while ready_adds or ready_offs:
        i = heapq.heappop(ready_adds if ready_adds else ready_offs)
        order.append(i)
        for f in followers[i]:
            waiting[f] -= 1
            if not waiting[f]:
                heapq.heappush(ready_adds if f in adds else ready_offs, f)
    return order if len(order) == len(steps) else None


def _replay(
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    steps: list[Step],
    order: list[int],
    name: str,
) -> list[str]:
    pods = {p.key: p for p in snapshot.pods}
    nodes = {n.name: n for n in snapshot.nodes}
    models = {m.name: m for m in snapshot.gpu_models}
    chains = domain_chain(snapshot)
    limit = budgets(snapshot)
    running = [(p, p.node) for p in snapshot.pods if p.node is not None]
    before = domain_power(snapshot, running, policy)  # type: ignore[arg-type]
    # A domain over budget before the plan may not draw more than it did.
    cap = {d: max(b, before[d]) for d, b in limit.items()}
    draw = domain_power(snapshot, [], policy)  # idle; the running pods are put below
    whole: dict[tuple[str, int], int] = Counter()
    milli: dict[tuple[str, int], int] = Counter()
    cpu: Counter[str] = Counter()
    mem: Counter[str] = Counter()
    at: dict[str, list[tuple[str, tuple[int, ...]]]] = defaultdict(list)  # pod -> copies

    def put(pod: Pod, node: str, gpus: tuple[int, ...], sign: int) -> None:
        for g in gpus:
            if pod.fractional:
                milli[(node, g)] += sign * pod.gpu_milli
            else:
                whole[(node, g)] += sign
        cpu[node] += sign * pod.cpu_milli
        mem[node] += sign * pod.memory_mi_b
        n = nodes[node]
        w = pod_watts(pod, models[n.gpu_model], policy)
        for d in chains[n.power_domain]:
            draw[d] += sign * w

    for p, node in running:
        if node in nodes:
            put(p, node, tuple(p.gpu_indices), +1)  # type: ignore[arg-type]
            at[p.key].append((node, tuple(p.gpu_indices)))  # type: ignore[arg-type]
    # A node whose running pods asked for more than it has before the plan may not be asked
    # for more than that (as a domain over budget).
    room = {
        n: (max(node.cpu_milli, cpu[n]), max(node.memory_mi_b, mem[n])) for n, node in nodes.items()
    }
    problems: list[str] = []
    by_id = {s.id: s for s in steps}
    for i in order:
        s = by_id[i]
        pod = pods.get(s.pod)
        if pod is None or s.node not in nodes:
            continue  # reported by the feasibility check
        if s.adds:
            put(pod, s.node, s.gpus, +1)
            at[s.pod].append((s.node, s.gpus))
        else:
            copy = next((c for c in at[s.pod] if c[0] == s.node), None)
            if copy is None:
                problems.append(f"{name}, step #{i}: {s.kind} {s.pod}, which is not on {s.node}")
                continue
            at[s.pod].remove(copy)
            put(pod, copy[0], copy[1], -1)
            continue
        problems += _overruns(name, s, nodes[s.node], whole, milli, cpu, mem, room[s.node])
        problems += [
            f"{name}, step #{i} ({s.kind} {s.pod}): power domain {d} draws {draw[d]} W > "
            f"budget {cap[d]} W"
            for d in chains[nodes[s.node].power_domain]
            if d in cap and draw[d] > cap[d]
        ]
    return problems


def _overruns(name, s: Step, node, whole, milli, cpu, mem, room) -> list[str]:
    where = f"{name}, step #{s.id} ({s.kind} {s.pod})"
    out = []
    for g in s.gpus:
        key = (node.name, g)
        if whole[key] > 1 or (whole[key] and milli[key]) or milli[key] > 1000:
            out.append(f"{where}: GPU {node.name}/{g} given twice")
    if cpu[node.name] > room[0]:
        out.append(f"{where}: node {node.name} cpuMilli {cpu[node.name]} > {room[0]}")
    if mem[node.name] > room[1]:
        out.append(f"{where}: node {node.name} memoryMiB {mem[node.name]} > {room[1]}")
    return out
