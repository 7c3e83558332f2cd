"""An independent feasibility check of a plan against its snapshot and policy.

It shares no code with the planner, the solver or the baselines on purpose: a bug there must not
be able to hide here. Everything is recomputed from the snapshot, the policy and the power model.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from scheduler.model import ClusterSnapshot, Node, PackingPolicy, Plan, Pod, PodKind
from scheduler.power import budgets, domain_chain, domain_power
from scheduler.verify.pod_rules import pod_rule_problems

# pod key -> (node name, GPU indices)
Placement = dict[str, tuple[str, tuple[int, ...]]]


def final_placement(snapshot: ClusterSnapshot, plan: Plan) -> Placement:
    """Current placements minus evictions minus moved-from, plus bindings and moves' targets."""
    placed = {p.key: (p.node, tuple(p.gpu_indices)) for p in snapshot.pods if p.node is not None}
    for e in plan.evictions:
        placed.pop(e.pod, None)
    for m in plan.moves:
        placed[m.pod] = (m.to_node, tuple(m.gpu_indices))
    for b in plan.bindings:
        placed[b.pod] = (b.node, tuple(b.gpu_indices))
    return placed  # type: ignore[return-value]


def gpu_allocation(snapshot: ClusterSnapshot, policy: PackingPolicy, placement: Placement) -> float:
    """GPUs in use (whole GPUs plus shares) over the GPUs that can take work."""
    pods = {p.key: p for p in snapshot.pods}
    used = sum(pods[k].milli_total for k in placement if k in pods) / 1000
    capacity = sum(
        1
        for n in snapshot.nodes
        if n.schedulable
        for i in range(n.gpus)
        if policy.takes_new_work(n.health_of(i))
    )
    return used / capacity if capacity else 0.0


def check_plan(snapshot: ClusterSnapshot, policy: PackingPolicy, plan: Plan) -> list[str]:
    """Every way the plan breaks the rules; an empty list means the plan is feasible."""
    pods = {p.key: p for p in snapshot.pods}
    nodes = {n.name: n for n in snapshot.nodes}
    problems = _binding_problems(plan, pods)
    problems += _eviction_problems(plan, pods, policy)
    problems += _move_problems(plan, pods)
    for what, key, node_name, indices in _new_placements(plan, pods):
        problems += _new_placement_problems(
            what, pods[key], nodes.get(node_name), node_name, indices, policy
        )
    # Unknown pods and nodes are reported above; the final state is judged without them.
    final = {
        k: (pods[k], nodes[n], idx)
        for k, (n, idx) in final_placement(snapshot, plan).items()
        if k in pods and n in nodes
    }
    problems += _gpu_problems(final)
    problems += _node_resource_problems(snapshot, final)
    problems += _model_problems(final)
    problems += _gang_problems(snapshot, final)
    problems += _spread_problems(final, policy)
    problems += pod_rule_problems(snapshot, plan, final)
    problems += _power_problems(snapshot, final, policy)
    problems += _justification_problems(snapshot, policy, plan, pods, nodes)
    problems += _disruption_problems(snapshot, plan)
    return problems


def _disruption_problems(snapshot: ClusterSnapshot, plan: Plan) -> list[str]:
    """No PodDisruptionBudget sees more of its pods evicted or moved than it allows."""
    disrupted = {e.pod for e in plan.evictions} | {m.pod for m in plan.moves}
    problems = []
    for budget in snapshot.disruption_budgets:
        hit = sorted(disrupted & set(budget.pods))
        if len(hit) > budget.disruptions_allowed:
            problems.append(
                f"PodDisruptionBudget {budget.namespace}/{budget.name}: {len(hit)} of its pods "
                f"evicted or moved ({', '.join(hit[:3])}), {budget.disruptions_allowed} allowed"
            )
    return problems


def explanation_problems(snapshot: ClusterSnapshot, plan: Plan) -> list[str]:
    """Pending pods the plan neither binds nor explains, and explanations of pods it binds."""
    bound = {b.pod for b in plan.bindings}
    reasons = {u.pod: u.reason for u in plan.unplaced}
    problems = []
    for p in snapshot.pods:
        if p.node is None and p.key not in bound and not reasons.get(p.key, "").strip():
            problems.append(f"{p.key}: stays pending without a reason")
    for key in reasons:
        if key in bound:
            problems.append(f"{key}: listed as unplaced but also bound")
    return problems


def _binding_problems(plan: Plan, pods: dict[str, Pod]) -> list[str]:
    problems = []
    for key, n in Counter(b.pod for b in plan.bindings).items():
        if n > 1:
            problems.append(f"binding {key}: bound {n} times; bind a pod once")
    for b in plan.bindings:
        pod = pods.get(b.pod)
        if pod is None:
            problems.append(f"binding {b.pod}: unknown pod")
        elif pod.node is not None:
            problems.append(f"binding {b.pod}: not pending (runs on {pod.node})")
    return problems


def _eviction_problems(plan: Plan, pods: dict[str, Pod], policy: PackingPolicy) -> list[str]:
    problems = []
    for key, n in Counter(e.pod for e in plan.evictions).items():
        if n > 1:
            problems.append(f"eviction {key}: evicted {n} times")
    for e in plan.evictions:
        pod = pods.get(e.pod)
        if pod is None:
            problems.append(f"eviction {e.pod}: unknown pod")
            continue
        if pod.node is None:
            problems.append(f"eviction {e.pod}: not running")
            continue
        if e.node != pod.node:
            problems.append(f"eviction {e.pod}: names node {e.node} but it runs on {pod.node}")
        if not pod.preemptible:
            problems.append(f"eviction {e.pod}: not preemptible")
        if not policy.preemption:
            problems.append(f"eviction {e.pod}: preemption is off in the policy")
        if pod.kind == PodKind.INFERENCE and not policy.preempt_inference:
            problems.append(f"eviction {e.pod}: inference and preemptInference is off")
    return problems


def _move_problems(plan: Plan, pods: dict[str, Pod]) -> list[str]:
    problems = []
    evicted = {e.pod for e in plan.evictions}
    bound = {b.pod for b in plan.bindings}
    for key, n in Counter(m.pod for m in plan.moves).items():
        if n > 1:
            problems.append(f"move {key}: moved {n} times")
    for m in plan.moves:
        pod = pods.get(m.pod)
        if pod is None:
            problems.append(f"move {m.pod}: unknown pod")
        elif pod.node is None:
            problems.append(f"move {m.pod}: not running")
        elif m.from_node != pod.node:
            problems.append(f"move {m.pod}: from {m.from_node} but it runs on {pod.node}")
        elif not pod.preemptible:
            problems.append(f"move {m.pod}: not preemptible, it never moves")
        elif not pod.movable:
            problems.append(f"move {m.pod}: moveBy none, nothing would recreate it")
        if m.pod in evicted or m.pod in bound:
            problems.append(f"move {m.pod}: also evicted or bound")
    return problems


def _new_placements(plan: Plan, pods: dict[str, Pod]) -> list[tuple[str, str, str, list[int]]]:
    out = [("binding", b.pod, b.node, b.gpu_indices) for b in plan.bindings]
    out += [("move", m.pod, m.to_node, m.gpu_indices) for m in plan.moves]
    return [p for p in out if p[1] in pods]


def _filter_problems(where: str, pod: Pod, node: Node) -> list[str]:
    """kube-scheduler's filters, read afresh from the model: taints and node affinity."""
    problems = []
    for t in node.taints:
        if t.effect in ("NoSchedule", "NoExecute") and not any(
            x.tolerates(t) for x in pod.tolerations
        ):
            problems.append(f"{where}: {node.name} has taint {t.key}={t.value}:{t.effect}")
    if any(node.labels.get(k) != v for k, v in pod.node_selector.items()):
        problems.append(f"{where}: {node.name} does not match its nodeSelector")
    if pod.node_affinity is not None and not any(
        term.matches(node.name, node.labels) for term in pod.node_affinity
    ):
        problems.append(f"{where}: {node.name} does not match its required node affinity")
    return problems


def _new_placement_problems(
    what: str,
    pod: Pod,
    node: Node | None,
    node_name: str,
    indices: list[int],
    policy: PackingPolicy,
) -> list[str]:
    where = f"{what} {pod.key}"
    if node is None:
        return [f"{where}: unknown node {node_name}"]
    problems = []
    if not node.schedulable:
        problems.append(f"{where}: node {node.name} is cordoned (not schedulable)")
    problems += _filter_problems(where, pod, node)
    want = 0 if pod.gpus == 0 else 1 if pod.fractional else pod.gpus
    if len(indices) != want or len(set(indices)) != want:
        problems.append(f"{where}: GPU indices {indices} are not {want} distinct GPUs")
    for i in sorted(set(indices)):
        if not 0 <= i < node.gpus:
            problems.append(f"{where}: GPU index {i} does not exist on {node.name}")
        elif not policy.takes_new_work(node.health_of(i)):
            problems.append(
                f"{where}: GPU {node.name}/{i} is {node.health_of(i)} and takes no new work"
            )
    return problems


Final = dict[str, tuple[Pod, Node, tuple[int, ...]]]


def _gpu_problems(final: Final) -> list[str]:
    whole: dict[tuple[str, int], list[str]] = defaultdict(list)
    shared: dict[tuple[str, int], list[Pod]] = defaultdict(list)
    for pod, node, indices in final.values():
        for i in set(indices):
            if 0 <= i < node.gpus:
                if pod.fractional:
                    shared[(node.name, i)].append(pod)
                else:
                    whole[(node.name, i)].append(pod.key)
    problems = []
    for (n, i), owners in sorted(whole.items()):
        if len(owners) > 1:
            problems.append(f"GPU {n}/{i}: held whole by {len(owners)} pods {sorted(owners)}")
        if (n, i) in shared:
            sharers = sorted(p.key for p in shared[(n, i)])
            problems.append(f"GPU {n}/{i}: held whole by {owners[0]} and shared by {sharers}")
    for (n, i), sharers in sorted(shared.items()):
        milli = sum(p.gpu_milli for p in sharers)
        if milli > 1000:
            problems.append(f"GPU {n}/{i}: shares add up to {milli} milli-GPU > 1000")
    return problems


def _node_resource_problems(snapshot: ClusterSnapshot, final: Final) -> list[str]:
    cpu: Counter[str] = Counter()
    mem: Counter[str] = Counter()
    nodes: dict[str, Node] = {}
    for pod, node, _ in final.values():
        cpu[node.name] += pod.cpu_milli
        mem[node.name] += pod.memory_mi_b
        nodes[node.name] = node
    # A node whose running pods already asked for more than it has is not the plan's doing;
    # the plan may not make it ask for more (as with a power domain already over budget).
    cpu_before: Counter[str] = Counter()
    mem_before: Counter[str] = Counter()
    for p in snapshot.pods:
        if p.node is not None:
            cpu_before[p.node] += p.cpu_milli
            mem_before[p.node] += p.memory_mi_b
    problems: list[str] = []
    extra: dict[str, Counter[str]] = defaultdict(Counter)
    ports: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for pod, node, _ in final.values():
        extra[node.name].update(pod.resources)
        for hp in pod.host_ports:
            for other, taken in ports[node.name]:
                if hp.conflicts(taken):  # type: ignore[arg-type]
                    problems.append(
                        f"node {node.name}: {pod.key} and {other} both bind port "
                        f"{hp.protocol}/{hp.port}"
                    )
            ports[node.name].append((pod.key, hp))
    for name, used in sorted(extra.items()):
        for r, q in sorted(used.items()):
            if q > nodes[name].resources.get(r, 0):
                have = nodes[name].resources.get(r, 0)
                problems.append(f"node {name}: {r} {q} > allocatable {have}")
    for name, node in sorted(nodes.items()):
        if cpu[name] > max(node.cpu_milli, cpu_before[name]):
            problems.append(f"node {name}: cpuMilli {cpu[name]} > capacity {node.cpu_milli}")
        if mem[name] > max(node.memory_mi_b, mem_before[name]):
            problems.append(f"node {name}: memoryMiB {mem[name]} > capacity {node.memory_mi_b}")
    return problems


def _model_problems(final: Final) -> list[str]:
    return [
        f"pod {pod.key}: on {node.name} with GPU model {node.gpu_model}, wants {pod.gpu_models}"
        for pod, node, _ in final.values()
        if pod.gpu_models and node.gpu_model not in pod.gpu_models
    ]


def _gang_problems(snapshot: ClusterSnapshot, final: Final) -> list[str]:
    members: dict[str, list[Pod]] = defaultdict(list)
    for p in snapshot.pods:
        if p.gang_key is not None:
            members[p.gang_key].append(p)
    problems = []
    for gang, pods in sorted(members.items()):
        placed = sum(p.key in final for p in pods)
        if 0 < placed < len(pods):
            problems.append(f"gang {gang}: {placed} of {len(pods)} members placed; all or none")
    return problems


def _spread_problems(final: Final, policy: PackingPolicy) -> list[str]:
    count: Counter[tuple[str, str]] = Counter(
        (node.name, pod.app) for pod, node, _ in final.values() if pod.app is not None
    )
    over = set()
    for pod, node, _ in final.values():
        limit = policy.spread_limit(pod)
        if limit is not None and count[(node.name, pod.app)] > limit:  # type: ignore[index]
            over.add((node.name, pod.app, limit, count[(node.name, pod.app)]))  # type: ignore[index]
    return [
        f"node {n}: {c} pods of app {app} > maxPerNode {limit}" for n, app, limit, c in sorted(over)
    ]


def _power_problems(snapshot: ClusterSnapshot, final: Final, policy: PackingPolicy) -> list[str]:
    watts = domain_power(snapshot, [(pod, node.name) for pod, node, _ in final.values()], policy)
    running = [(p, p.node) for p in snapshot.pods if p.node is not None]
    before = domain_power(snapshot, running, policy)  # type: ignore[arg-type]
    # A domain already over budget (a budget lowered under running work) is not the plan's
    # doing; the plan may not make it draw more.
    return [
        f"power domain {d}: draws {watts[d]} W > budget {budget} W"
        + (f" (it drew {before[d]} W before the plan)" if before[d] > budget else "")
        for d, budget in sorted(budgets(snapshot).items())
        if watts[d] > max(budget, before[d])
    ]


def _released_gang_members(snapshot: ClusterSnapshot, plan: Plan) -> set[str]:
    """Members of a broken gang (some running, some pending) evicted all together while the
    plan binds none of its pending members: the gang goes back to the queue whole."""
    members: dict[str, list[Pod]] = defaultdict(list)
    for p in snapshot.pods:
        if p.gang_key is not None:
            members[p.gang_key].append(p)
    evicted, bound = {e.pod for e in plan.evictions}, {b.pod for b in plan.bindings}
    out: set[str] = set()
    for pods in members.values():
        running = {p.key for p in pods if p.node is not None}
        waiting = {p.key for p in pods if p.node is None}
        if running and waiting and running <= evicted and not waiting & bound:
            out |= running
    return out


def _rank(pod: Pod, policy: PackingPolicy) -> int:
    """A pod's priority, one higher for a gang member that waited starvingGangSeconds."""
    after = policy.starving_gang_seconds
    waited = pod.waiting_seconds
    starving = after is not None and pod.gang is not None and waited is not None and waited >= after
    return pod.priority + starving


def _justification_problems(
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    plan: Plan,
    pods: dict[str, Pod],
    nodes: dict[str, Node],
) -> list[str]:
    """An eviction must make room for a newly bound pod of strictly higher priority (a starving
    gang counts one higher, see the policy's starvingGangSeconds).

    Room is made where the victim ran: its node, or a power domain with a budget above it. A gang
    member whose own node gained nothing is still justified when a fellow member is, because the
    gang must leave as a whole.
    """
    chains = domain_chain(snapshot)
    budgeted = set(budgets(snapshot))

    def shared_scope(a: str, b: str) -> bool:
        if a == b:
            return True
        common = set(chains[nodes[a].power_domain]) & set(chains[nodes[b].power_domain])
        return bool(common & budgeted)

    beneficiaries = [
        (pods[b.pod], b.node) for b in plan.bindings if b.pod in pods and b.node in nodes
    ]

    def justified(victim: Pod) -> bool:
        return any(
            _rank(p, policy) > victim.priority and shared_scope(victim.node, n)  # type: ignore[arg-type]
            for p, n in beneficiaries
        )

    victims = [pods[e.pod] for e in plan.evictions if e.pod in pods and pods[e.pod].node in nodes]
    ok = {v.key for v in victims if justified(v)} | _released_gang_members(snapshot, plan)
    ok_gangs = {v.gang_key for v in victims if v.key in ok and v.gang_key is not None}
    return [
        f"eviction {v.key}: no newly bound pod of higher priority than {v.priority} needs its room"
        for v in victims
        if v.key not in ok and (v.gang_key is None or v.gang_key not in ok_gangs)
    ]
