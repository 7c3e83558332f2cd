"""Group nodes that are interchangeable for placement, so solvers decide counts, not names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from scheduler.fit.filters import NodeFilters
from scheduler.fit.filters import pod_key as filter_key
from scheduler.model import ClusterSnapshot, PackingPolicy, Pod


@dataclass
class NodeClass:
    """Nodes with the same model, leaf domain and free capacity: any one can stand for another."""

    id: int
    model: str
    leaf: str
    gpus: int
    free_whole: int
    partial: tuple[int, ...]  # residual milli of partly used GPUs that take new work
    cpu: int
    mem: int
    apps: tuple[tuple[str, int], ...]
    victims: tuple[tuple, ...]  # per node: signatures of the preemptible pods on it
    kind: int  # the node's kind for the node filters (scheduler.fit.filters)
    extra: tuple[int, ...]  # free other resources that pods ask for (NodeResourcesFit)
    nodes: list[int] = field(default_factory=list)  # indices into snapshot.nodes

    @property
    def empty(self) -> bool:
        return self.free_whole == self.gpus and not self.partial and not self.victims_any

    @property
    def victims_any(self) -> bool:
        return bool(self.victims)

    def shape(self) -> tuple:
        """Everything but where it is: classes of one shape in alike racks are interchangeable."""
        return (
            self.model,
            self.gpus,
            self.free_whole,
            self.partial,
            self.cpu,
            self.mem,
            self.apps,
            self.victims,
            self.kind,
            self.extra,
        )


def fit_shape(pod: Pod) -> tuple:
    """What decides where a pod fits (not its priority or name)."""
    return (
        pod.gpus,
        pod.gpu_milli,
        pod.cpu_milli,
        pod.memory_mi_b,
        tuple(pod.gpu_models),
        filter_key(pod),
        others(pod),
        pod.kind,
        pod.app,
        pod.max_per_node,
        pod.power_watts_per_gpu,
    )


def others(pod: Pod) -> tuple:
    """Other resources and host ports: most pods have none, and this is asked per pod often."""
    if not pod.resources and not pod.host_ports:
        return ()
    return (
        tuple(sorted(pod.resources.items())),
        tuple(sorted((p.port, p.protocol, p.host_ip) for p in pod.host_ports)),
    )


def victim_signature(pod: Pod, usable: Sequence[bool]) -> tuple:
    """Running pods that preemption may evict, alike for the model: shape, priority, and how many
    of the GPUs the pod holds take new work (`usable`: per GPU of its node). Evicting a pod from a
    GPU that takes no new work frees power, CPU and memory, but no GPU new work may use."""
    return (*fit_shape(pod), pod.priority, sum(1 for g in pod.gpu_indices if usable[g]))


def usable_held(signature: tuple) -> int:
    """Of a victim signature: the GPUs the pod holds that take new work."""
    return signature[-1]


def node_classes(
    snapshot: ClusterSnapshot,
    policy: PackingPolicy,
    evictable: set[str],
    *,
    singleton: bool = False,
) -> tuple[list[NodeClass], list[int]]:
    """Classes of schedulable nodes, and for every node its class id (-1: takes no new work).

    singleton puts each node in a class of its own, which lets the solver model it exactly.
    """
    running: dict[str, list[Pod]] = {}
    for p in snapshot.pods:
        if p.node is not None:
            running.setdefault(p.node, []).append(p)
    by_key: dict[tuple, NodeClass] = {}
    of_node: list[int] = []
    kinds = NodeFilters.of(snapshot).kind
    # Other resources split classes only where a pod asks for them.
    asked = sorted({r for p in snapshot.pods for r in p.resources})
    # Ports split classes only where a pod binds one: by the bound ports pods may ask for.
    bound_ports = {
        (h.port, h.protocol) for p in snapshot.pods if p.node is None for h in p.host_ports
    }
    for idx, node in enumerate(snapshot.nodes):
        pods = running.get(node.name, [])
        if not node.schedulable:
            of_node.append(-1)
            continue
        used = [0] * node.gpus
        cpu, mem = node.cpu_milli, node.memory_mi_b
        for p in pods:
            cpu -= p.cpu_milli
            mem -= p.memory_mi_b
            for i in p.gpu_indices:
                used[i] += p.gpu_milli if p.fractional else 1000
        takes = policy.gpus_taking_work(node)
        usable = [i for i in range(node.gpus) if takes[i]]
        free_whole = sum(1 for i in usable if used[i] == 0)
        partial = tuple(sorted(1000 - used[i] for i in usable if 0 < used[i] < 1000))
        apps = tuple(sorted(Counter(p.app for p in pods if p.app).items()))
        # Which GPU a victim sits on is left out, but not how many of its GPUs take new work:
        # the model counts what an eviction frees as whole GPUs or as milli mass, which holds
        # whichever usable GPU it is, and nothing for new work on a GPU that takes none.
        # Sorted by repr: a signature holds None beside strings (a pod without an app), which
        # do not compare; any fixed order makes equal multisets equal.
        victims = tuple(
            sorted((victim_signature(p, takes) for p in pods if p.key in evictable), key=repr)
        )
        extra: tuple = ()
        if asked:
            extra = tuple(
                node.resources.get(r, 0) - sum(p.resources.get(r, 0) for p in pods) for r in asked
            )
        if bound_ports:
            extra += tuple(
                sorted(
                    (h.port, h.protocol, h.host_ip)
                    for p in pods
                    for h in p.host_ports
                    if (h.port, h.protocol) in bound_ports
                )
            )  # type: ignore[arg-type]
        fields = (
            node.gpu_model,
            node.power_domain,
            node.gpus,
            free_whole,
            partial,
            max(cpu, 0),
            max(mem, 0),
            apps,
            victims,
            kinds[idx],
            extra,
        )
        key = (*fields, idx if singleton else -1)
        cls = by_key.get(key)
        if cls is None:
            cls = by_key[key] = NodeClass(len(by_key), *fields)  # type: ignore[arg-type]
        cls.nodes.append(idx)
        of_node.append(cls.id)
    return list(by_key.values()), of_node
