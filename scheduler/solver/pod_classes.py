"""Group pending pods (and preemption victims) that are interchangeable for placement."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from scheduler.fit.classes import others
from scheduler.fit.filters import pod_key as filter_key
from scheduler.fit.state import ClusterState
from scheduler.fit.value import pod_value
from scheduler.model import Pod


def _shape(
    pod: Pod, state: ClusterState, binding_apps: set[str] | None = None, coarse: bool = False
) -> tuple:
    """What makes pods interchangeable; an app counts only where its spread limit can bind.
    Coarse shapes leave out CPU, memory and the app: the class then asks for its members'
    least CPU and memory and no spread limit (a relaxation, for models too large otherwise)."""
    app = pod.app or ""
    spread = state.spread_limit(pod) or 0
    if coarse or (binding_apps is not None and app not in binding_apps):
        app, spread = "", 0
    if coarse:
        return (
            pod.gpus,
            pod.gpu_milli if pod.fractional else 1000,
            tuple(sorted(set(pod.gpu_models))),
            filter_key(pod),
            pod.kind.value,
            pod.priority,
            pod.power_watts_per_gpu if pod.power_watts_per_gpu is not None else -1,
        )
    return (
        pod.gpus,
        pod.gpu_milli if pod.fractional else 1000,
        pod.cpu_milli,
        pod.memory_mi_b,
        tuple(sorted(set(pod.gpu_models))),
        filter_key(pod),
        others(pod),
        pod.kind.value,
        pod.priority,
        app,
        spread,
        pod.power_watts_per_gpu if pod.power_watts_per_gpu is not None else -1,
    )


def binding_apps(pending: list[Pod], state: ClusterState, max_group_nodes: int) -> set[str]:
    """Apps whose spread limit the model keeps: more replicas than the largest group of nodes
    holds at the limit, or replicas already running. Leaving out the others keeps the model a
    relaxation; expansion still holds every pod to its limit, node by node."""
    replicas: Counter[str] = Counter()
    limit: dict[str, int] = {}
    for p in pending:
        lim = state.spread_limit(p)
        if lim is not None:
            replicas[p.app] += 1  # type: ignore[index]
            limit[p.app] = min(lim, limit.get(p.app, lim))  # type: ignore[index]
    running = {a for c in state.classes for a, _ in c.apps}
    return {a for a, k in replicas.items() if a in running or k > limit[a] * max_group_nodes}


@dataclass
class PodClass:
    id: int
    rep: Pod  # any member: all members have the same shape
    value: int
    spread_binds: bool
    gang_member: bool  # members of all gangs with this shape share the class
    pods: list[Pod] = field(default_factory=list)


@dataclass
class GangClass:
    id: int
    members: dict[int, int]  # pod class id -> members per gang
    gangs: list[list[Pod]] = field(default_factory=list)


@dataclass
class Demand:
    classes: list[PodClass]
    gangs: list[GangClass]


def classify(
    pending: list[Pod], state: ClusterState, max_group_nodes: int, coarse: bool = False
) -> Demand:
    by_gang: dict[str, list[Pod]] = defaultdict(list)
    singles = []
    for p in pending:
        (by_gang[p.gang_key] if p.gang_key else singles).append(p)
    classes: dict[tuple, PodClass] = {}
    apps = set() if coarse else binding_apps(pending, state, max_group_nodes)

    def shape(pod: Pod) -> tuple:
        return _shape(pod, state, apps, coarse)

    def class_for(pod: Pod, gang_member: bool) -> PodClass:
        key = (shape(pod), gang_member)
        if key not in classes:
            classes[key] = PodClass(
                len(classes),
                pod,
                pod_value(pod, state.policy),
                (pod.app or "") in apps,
                gang_member,
            )
        return classes[key]

    for p in singles:
        class_for(p, False).pods.append(p)
    gang_classes: dict[tuple, GangClass] = {}
    for _, members in sorted(by_gang.items()):
        makeup = tuple(sorted(Counter(shape(p) for p in members).items()))
        if makeup not in gang_classes:
            gang_classes[makeup] = GangClass(len(gang_classes), {})
        gc = gang_classes[makeup]
        gc.gangs.append(members)
        for p in members:
            class_for(p, True).pods.append(p)
    for gc in gang_classes.values():
        counts: Counter[int] = Counter()
        for p in gc.gangs[0]:
            counts[class_for(p, True).id] += 1
        gc.members = dict(counts)
    if coarse:
        for pc in classes.values():
            pc.rep = pc.rep.model_copy(
                update={
                    "cpu_milli": min(p.cpu_milli for p in pc.pods),
                    "memory_mi_b": min(p.memory_mi_b for p in pc.pods),
                    "app": None,
                    "max_per_node": None,
                }
            )
    return Demand(list(classes.values()), list(gang_classes.values()))
