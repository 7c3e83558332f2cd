"""Kubernetes objects (as the API server sends them: plain dicts) to the cluster snapshot.

The one conversion the operator, `wattpack export` and so `wattpack plan` share: what the
operator plans is what an exported snapshot plans. docs/kubernetes.md is the contract for the
labels and annotations read here. Pure: objects in, a snapshot and the problems found out.

A malformed object never stops the cycle: a pending pod with a bad annotation is left out of the
snapshot and reported (the operator puts the problem on the pod); a node wattpack cannot model is
left out with its pods, and logged.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from operators.kube.dra import ClaimProblem, has_claims
from operators.kube.dra_convert import DraView
from operators.kube.owners import Scaler, controller_uid, move_by, surge_scalers
from scheduler.model import (
    ClusterSnapshot,
    DisruptionBudget,
    Gang,
    GpuHealth,
    GpuModel,
    HealthState,
    MoveBy,
    Node,
    Pod,
    PodKind,
    PowerDomain,
)
from scheduler.model.node_rules import (
    HostPort,
    PreferredTerm,
    Requirement,
    SelectorTerm,
    Taint,
    TaintEffect,
    Toleration,
)
from scheduler.model.pod_rules import LabelSelector, PodAffinityTerm, SpreadConstraint
from scheduler.model.snapshot import SnapshotMeta

SCHEDULER_NAME = "wattpack"
GPU_RESOURCE = "nvidia.com/gpu"
PREFIX = "wattpack.io/"
KIND = PREFIX + "kind"
GANG = PREFIX + "gang"
GANG_SIZE = PREFIX + "gang-size"
APP = PREFIX + "app"
MAX_PER_NODE = PREFIX + "max-per-node"
GPU_MILLI = PREFIX + "gpu-milli"
GPU_MODELS = PREFIX + "gpu-models"
PREEMPTIBLE = PREFIX + "preemptible"
POWER_PER_GPU = PREFIX + "power-watts-per-gpu"
GPU_INDICES = PREFIX + "gpu-indices"
CHECKPOINTS = PREFIX + "checkpoints"  # "true": the workload takes part in the handshake
CHECKPOINT_REQUESTED = PREFIX + "checkpoint-requested"  # set by wattpack: when it asked
CHECKPOINTED = PREFIX + "checkpointed"  # set by the workload: when it saved (RFC 3339)
POWER_DOMAIN = PREFIX + "power-domain"
GPU_MODEL = PREFIX + "gpu-model"
PRODUCT_LABEL = "nvidia.com/gpu.product"
UNASSIGNED_DOMAIN = "unassigned"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
_MIB = 1024 * 1024


@dataclass(frozen=True)
class ClusterObjects:
    """What one cycle reads: the API objects as dicts, and the config's GPU models."""

    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    gpunodes: list[dict[str, Any]] = field(default_factory=list)
    powerdomains: list[dict[str, Any]] = field(default_factory=list)
    gpu_models: list[GpuModel] = field(default_factory=list)
    pdbs: list[dict[str, Any]] = field(default_factory=list)  # policy/v1 PodDisruptionBudgets
    replicasets: list[dict[str, Any]] = field(default_factory=list)  # apps/v1: whether pods surge
    deployments: list[dict[str, Any]] = field(default_factory=list)
    autoscalers: list[dict[str, Any]] = field(default_factory=list)  # autoscaling/v2 HPAs
    namespaces: list[dict[str, Any]] = field(default_factory=list)  # their labels
    resourceslices: list[dict[str, Any]] = field(default_factory=list)  # resource.k8s.io/v1
    resourceclaims: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PodProblem:
    """A pending pod wattpack cannot plan as written: which field, and what to do."""

    pod: str  # namespace/name
    uid: str
    reason: str
    waiting: bool = False  # not an error: e.g. a gang whose members are not all created yet


@dataclass
class Conversion:
    snapshot: ClusterSnapshot
    problems: list[PodProblem]
    notes: list[str]  # objects left out or repaired, for the log
    uids: dict[str, str]  # pod key -> uid, for every pod in the snapshot
    # Pod key -> the uid of its controller (pods that have one): a moved pod's replacement is
    # a new pod of the same controller.
    owners: dict[str, str] = field(default_factory=dict)
    scalers: dict[str, Scaler] = field(default_factory=dict)  # surging pod key -> Deployment


class _Bad(ValueError):
    """A field of a pod that cannot be read; the message names it and says what to do."""


def pod_key(pod: dict[str, Any]) -> str:
    md = pod["metadata"]
    return f"{md.get('namespace', 'default')}/{md['name']}"


def is_ours(pod: dict[str, Any]) -> bool:
    return pod.get("spec", {}).get("schedulerName") == SCHEDULER_NAME


def is_pending(pod: dict[str, Any]) -> bool:
    """A pod wattpack should place: ours, unbound, not being deleted, not finished."""
    spec, md = pod.get("spec", {}), pod["metadata"]
    phase = pod.get("status", {}).get("phase", "Pending")
    return (
        is_ours(pod)
        and not spec.get("nodeName")
        and md.get("deletionTimestamp") is None
        and phase == "Pending"
        and not spec.get("schedulingGates")  # gated: left alone until its gates are removed
    )


def holds_resources(pod: dict[str, Any]) -> bool:
    """A bound pod whose containers may still run (finished pods free their node)."""
    phase = pod.get("status", {}).get("phase", "Pending")
    return bool(pod.get("spec", {}).get("nodeName")) and phase not in ("Succeeded", "Failed")


def convert(
    objs: ClusterObjects, name: str = "cluster", exported_at: str | None = None
) -> Conversion:
    notes: list[str] = []
    models = {m.name: m for m in objs.gpu_models}
    domains, domain_notes = _domains(objs.powerdomains)
    notes += domain_notes
    health = _health_by_node(objs.gpunodes)
    waiting_pods = [p for p in objs.pods if is_pending(p)]
    view = DraView(objs.resourceslices, objs.resourceclaims, objs.gpunodes, waiting_pods)
    notes += view.notes
    nodes: dict[str, Node] = {}
    for raw in objs.nodes:
        node, note = _node(raw, models, domains, health, view.gpus_of(raw["metadata"]["name"]))
        if note:
            notes.append(note)
        if node is not None:
            nodes[node.name] = node
    if any(n.power_domain == UNASSIGNED_DOMAIN for n in nodes.values()):
        domains[UNASSIGNED_DOMAIN] = PowerDomain(name=UNASSIGNED_DOMAIN)

    now = _when(exported_at)
    problems: list[PodProblem] = []
    running: dict[str, list[tuple[Pod, dict[str, Any]]]] = defaultdict(list)
    pending: list[tuple[Pod, dict[str, Any]]] = []
    surge_via = surge_scalers(objs.replicasets, objs.deployments, objs.autoscalers)
    owners: dict[str, str] = {}
    for raw in objs.pods:
        owner = controller_uid(raw)
        if owner is not None:
            owners[pod_key(raw)] = owner
        if holds_resources(raw):
            node_name = raw["spec"]["nodeName"]
            if node_name not in nodes:
                continue  # not a GPU node wattpack models: nothing it holds is ours to count
            pod = _running_pod(raw, node_name)
            pod = pod.model_copy(update={"move_by": move_by(pod, raw, surge_via)})
            running[node_name].append((pod, raw))
        elif is_pending(raw):
            try:
                pod = _pod(raw, now)
                pending.append((view.pending(pod, raw, GPU_MILLI) if has_claims(raw) else pod, raw))
            except _Bad as e:
                problems.append(PodProblem(pod_key(raw), _uid(raw), str(e)))
            except ClaimProblem as e:
                problems.append(PodProblem(pod_key(raw), _uid(raw), str(e), waiting=e.waiting))

    placed: list[Pod] = []
    for node_name, pods in running.items():
        # A running pod with claims holds its claims' devices (a shared claim's for the first).
        pods = [
            (view.running(p, raw, _indices(raw)) if has_claims(raw) else p, raw)
            for p, raw in sorted(pods, key=lambda t: t[0].key)
        ]
        kept, node_notes = _assign_indices(nodes[node_name], pods)
        placed += kept
        notes += node_notes
    waiting, gang_problems = _complete_gangs(placed, pending)
    problems += gang_problems

    placed = _loosen_broken_gangs(placed, [p for p, _ in waiting])
    stand_ins, stand_in_uids = view.stand_ins(nodes, placed)
    placed += stand_ins
    node_list, pods = view.finish(list(nodes.values()), placed + [p for p, _ in waiting])
    nodes = {n.name: n for n in node_list}
    uids = {p.key: _uid(raw) for raw_list in running.values() for p, raw in raw_list}
    uids.update({p.key: _uid(raw) for p, raw in pending})
    uids.update(stand_in_uids)
    used = {n.gpu_model for n in nodes.values()}
    used |= {m for p in pods for m in p.gpu_models}
    snapshot = ClusterSnapshot(
        metadata=SnapshotMeta(name=name, exported_at=exported_at),
        gpu_models=[m for n, m in sorted(models.items()) if n in used],
        power_domains=list(domains.values()),
        nodes=sorted(nodes.values(), key=lambda n: n.name),
        pods=sorted(pods, key=lambda p: p.key),
        disruption_budgets=_disruption_budgets(objs.pdbs, objs.pods, {p.key for p in placed}),
        namespace_labels=_namespace_labels(objs.namespaces, pods),
    )
    scalers = {p.key: surge_via[owners[p.key]] for p in placed if p.move_by == MoveBy.SURGE}
    return Conversion(
        snapshot, problems, notes, {p.key: uids[p.key] for p in pods}, owners, scalers
    )


def _namespace_labels(
    namespaces: list[dict[str, Any]], pods: list[Pod]
) -> dict[str, dict[str, str]]:
    """Namespaces' labels, where an affinity term selects namespaces by them (only then: a
    cluster has hundreds of namespaces, and nothing else reads them)."""
    if not any(
        t.namespace_selector is not None
        for p in pods
        for t in (*p.pod_affinity, *p.pod_anti_affinity)
    ):
        return {}
    return {
        ns["metadata"]["name"]: dict(ns["metadata"].get("labels") or {})
        for ns in sorted(namespaces, key=lambda n: n["metadata"]["name"])
    }


# -- disruption budgets ------------------------------------------------------------------------


def _disruption_budgets(
    pdbs: list[dict[str, Any]], pods: list[dict[str, Any]], running: set[str]
) -> list[DisruptionBudget]:
    """Each PodDisruptionBudget with the running pods of the snapshot its selector matches. Its
    allowance is status.disruptionsAllowed, and 0 until the disruption controller has observed
    the budget's generation: the Eviction API refuses every eviction then too."""
    # The running pods by namespace, read once: every budget looks only at its own namespace.
    labels_in: dict[str, list[tuple[str, dict[str, str]]]] = defaultdict(list)
    for p in pods:
        key = pod_key(p)
        if key in running:
            labels_in[key.split("/", 1)[0]].append((key, p["metadata"].get("labels") or {}))
    out = []
    for pdb in pdbs:
        md, spec, status = pdb["metadata"], pdb.get("spec") or {}, pdb.get("status") or {}
        ns = md.get("namespace", "default")
        observed = status.get("observedGeneration", 0) >= md.get("generation", 1)
        covered = [key for key, labels in labels_in[ns] if _selects(spec.get("selector"), labels)]
        if covered:
            out.append(
                DisruptionBudget(
                    name=md["name"],
                    namespace=ns,
                    pods=sorted(covered),
                    disruptions_allowed=max(0, status.get("disruptionsAllowed", 0))
                    if observed
                    else 0,
                )
            )
    return sorted(out, key=lambda b: b.key)


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a pod's labels. In policy/v1
    a null selector selects no pod and an empty one every pod of the namespace."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# -- power domains and nodes -------------------------------------------------------------------


def _domains(objs: list[dict[str, Any]]) -> tuple[dict[str, PowerDomain], list[str]]:
    names = {o["metadata"]["name"] for o in objs}
    out: dict[str, PowerDomain] = {}
    notes = []
    for o in sorted(objs, key=lambda o: o["metadata"]["name"]):
        name, spec = o["metadata"]["name"], o.get("spec") or {}
        parent = spec.get("parent")
        if parent is not None and parent not in names:
            notes.append(f"PowerDomain {name}: parent '{parent}' does not exist; treated as a root")
            parent = None
        out[name] = PowerDomain(name=name, parent=parent, budget_watts=spec.get("budgetWatts"))
    return out, notes


def _health_by_node(gpunodes: list[dict[str, Any]]) -> dict[str, list[GpuHealth]]:
    out: dict[str, list[GpuHealth]] = {}
    for g in gpunodes:
        gpus = (g.get("status") or {}).get("gpus") or []
        out[g["metadata"]["name"]] = [
            GpuHealth(
                index=e["index"], state=HealthState(e["health"]), reasons=e.get("reasons", [])
            )
            for e in gpus
            if e.get("health", "healthy") != "healthy"
        ]
    return out


def _node(
    raw: dict[str, Any],
    models: dict[str, GpuModel],
    domains: dict[str, PowerDomain],
    health: dict[str, list[GpuHealth]],
    dra_gpus: int = 0,
) -> tuple[Node | None, str | None]:
    md, spec, status = raw["metadata"], raw.get("spec", {}), raw.get("status", {})
    name, labels = md["name"], md.get("labels") or {}
    alloc = status.get("allocatable") or {}
    # GPUs the DRA driver publishes are the node's GPUs (operators.kube.dra_convert).
    gpus = dra_gpus or int(parse_quantity(alloc.get(GPU_RESOURCE, 0)))
    if gpus <= 0:
        return None, None  # not a GPU node
    model = labels.get(GPU_MODEL) or labels.get(PRODUCT_LABEL)
    if model not in models:
        return None, (
            f"node {name}: GPU model {model!r} is not in the config's gpuModels; label the node "
            f"{GPU_MODEL}=<model> or add the model; the node and its pods are left out"
        )
    note = None
    domain = labels.get(POWER_DOMAIN)
    if domain not in domains:
        note = (
            f"node {name}: power domain {domain!r} is not a PowerDomain; its GPUs count against "
            f"no budget until it is labelled {POWER_DOMAIN}=<domain>"
        )
        domain = UNASSIGNED_DOMAIN
    return (
        Node(
            name=name,
            power_domain=domain,
            gpu_model=model,
            gpus=gpus,
            cpu_milli=int(parse_quantity(alloc.get("cpu", 0)) * 1000),
            memory_mi_b=int(parse_quantity(alloc.get("memory", 0)) // _MIB),
            schedulable=_ready(status),
            gpu_health=[h for h in health.get(name, []) if h.index < gpus],
            labels=dict(labels),
            taints=_taints(spec),
            resources=_other_resources(alloc, math.floor),
        ),
        note,
    )


def _ready(status: dict[str, Any]) -> bool:
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return bool(ready) and ready[0].get("status") == "True"


def _taints(spec: dict[str, Any]) -> list[Taint]:
    """The node's taints, and a cordoned node's unschedulable taint (which the node lifecycle
    controller adds too): kube-scheduler's filters read them (scheduler.fit.filters). A taint
    with an effect Kubernetes does not define is left out."""
    out = []
    for t in spec.get("taints") or []:
        if t.get("effect") in ("NoSchedule", "PreferNoSchedule", "NoExecute") and t.get("key"):
            out.append(Taint(key=t["key"], value=t.get("value") or "", effect=t["effect"]))
    if spec.get("unschedulable") and not any(t.key == UNSCHEDULABLE for t in out):
        out.append(Taint(key=UNSCHEDULABLE, effect=TaintEffect.NO_SCHEDULE))
    return out


def _placement_rules(spec: dict[str, Any]) -> dict[str, Any]:
    """Tolerations, nodeSelector and required node affinity, as the snapshot holds them."""
    try:
        tolerations = [
            Toleration(
                key=t.get("key") or "",
                operator=t.get("operator") or "Equal",
                value=t.get("value") or "",
                effect=t.get("effect") or None,
            )
            for t in spec.get("tolerations") or []
        ]
    except ValueError as e:
        raise _Bad(f"spec.tolerations: {_first_error(e)}; fix the toleration") from None
    selector = {str(k): str(v) for k, v in (spec.get("nodeSelector") or {}).items()}
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    terms = None
    if required is not None:
        try:
            terms = [_term(t) for t in required.get("nodeSelectorTerms") or []]
        except ValueError as e:
            raise _Bad(
                f"spec.affinity.nodeAffinity: {_first_error(e)}; fix the node selector term"
            ) from None
    preferred = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    )
    try:
        preferences = [
            PreferredTerm(weight=int(t.get("weight") or 0), preference=_term(t.get("preference")))
            for t in preferred or []
        ]
    except ValueError as e:
        raise _Bad(
            f"spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution: "
            f"{_first_error(e)}; fix the preferred term"
        ) from None
    return {
        "tolerations": tolerations,
        "node_selector": selector,
        "node_affinity": terms,
        "preferred_node_affinity": preferences,
        **_pod_rules(spec),
    }


def _pod_rules(spec: dict[str, Any]) -> dict[str, Any]:
    """Required pod affinity and anti-affinity, and DoNotSchedule topology spread (the
    preferred terms and ScheduleAnyway constraints only weigh in kube-scheduler's scores). The
    API server has merged matchLabelKeys into the selectors already."""
    affinity = spec.get("affinity") or {}

    def terms(kind: str) -> list[PodAffinityTerm]:
        rules = (affinity.get(kind) or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
        try:
            return [
                PodAffinityTerm(
                    label_selector=_label_selector(t.get("labelSelector")),
                    namespaces=[str(n) for n in t.get("namespaces") or []],
                    namespace_selector=_label_selector(t.get("namespaceSelector")),
                    topology_key=t.get("topologyKey") or "",
                )
                for t in rules or []
            ]
        except ValueError as e:
            raise _Bad(f"spec.affinity.{kind}: {_first_error(e)}; fix the term") from None

    try:
        spread = [
            SpreadConstraint(
                max_skew=int(c.get("maxSkew") or 0),
                topology_key=c.get("topologyKey") or "",
                label_selector=_label_selector(c.get("labelSelector")),
                min_domains=c.get("minDomains"),
                node_affinity_policy=c.get("nodeAffinityPolicy") or "Honor",
                node_taints_policy=c.get("nodeTaintsPolicy") or "Ignore",
            )
            for c in spec.get("topologySpreadConstraints") or []
            if c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"
        ]
    except ValueError as e:
        raise _Bad(
            f"spec.topologySpreadConstraints: {_first_error(e)}; fix the constraint"
        ) from None
    return {
        "pod_affinity": terms("podAffinity"),
        "pod_anti_affinity": terms("podAntiAffinity"),
        "topology_spread": spread,
    }


def _label_selector(raw: dict[str, Any] | None) -> LabelSelector | None:
    if raw is None:
        return None
    return LabelSelector(
        match_labels={str(k): str(v) for k, v in (raw.get("matchLabels") or {}).items()},
        match_expressions=[_requirement(r) for r in raw.get("matchExpressions") or []],
    )


def _term(raw: dict[str, Any] | None) -> SelectorTerm:
    raw = raw or {}
    return SelectorTerm(
        match_expressions=[_requirement(r) for r in raw.get("matchExpressions") or []],
        match_fields=[_requirement(r) for r in raw.get("matchFields") or []],
    )


def _requirement(r: dict[str, Any]) -> Requirement:
    return Requirement(
        key=r.get("key") or "",
        operator=r.get("operator") or "",
        values=[str(v) for v in r.get("values") or []],
    )


def _first_error(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
    return str(e)


# -- pods --------------------------------------------------------------------------------------


def _uid(raw: dict[str, Any]) -> str:
    return str(raw["metadata"].get("uid", ""))


_NOT_OTHER = ("cpu", "memory", "pods", GPU_RESOURCE)


def _other_resources(amounts: dict[str, Any], whole: Any) -> dict[str, int]:
    """Resources other than GPUs, CPU and memory (and the pod count), in their base units:
    `whole` rounds (down for what a node has, up for what a pod asks). An amount that is not a
    quantity is left out."""
    out = {}
    for name, amount in amounts.items():
        if name in _NOT_OTHER:
            continue
        try:
            value = int(whole(parse_quantity(amount)))
        except (ValueError, TypeError, ArithmeticError):
            continue
        if value > 0:
            out[name] = value
    return out


def _host_ports(spec: dict[str, Any]) -> list[HostPort]:
    """The ports the pod's containers bind on the node (hostPort), as NodePorts reads them."""
    out = []
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                try:
                    out.append(
                        HostPort(
                            port=int(p["hostPort"]),
                            protocol=p.get("protocol") or "TCP",
                            host_ip=p.get("hostIP") or "",
                        )
                    )
                except ValueError:
                    raise _Bad(
                        f"spec.containers[].ports: hostPort {p.get('hostPort')!r} is not a port; "
                        "give 1..65535"
                    ) from None
    return out


def _other_requests(spec: dict[str, Any]) -> dict[str, int]:
    """A pod's requests of other resources: containers summed, or the largest init container
    (a request defaults to its limit, as for extended resources)."""

    def one(c: dict[str, Any]) -> dict[str, int]:
        res = c.get("resources") or {}
        return _other_resources(
            {**(res.get("limits") or {}), **(res.get("requests") or {})}, math.ceil
        )

    total: Counter[str] = Counter()
    for c in spec.get("containers") or []:
        total.update(one(c))
    for c in spec.get("initContainers") or []:
        for name, value in one(c).items():
            total[name] = max(total[name], value)
    return dict(total)


def _requests(spec: dict[str, Any]) -> tuple[int, int, int]:
    """(GPUs, CPU milli, memory MiB): containers summed, or the largest init container."""

    def one(c: dict[str, Any]) -> tuple[Decimal, Decimal, Decimal]:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        gpu = lim.get(GPU_RESOURCE, req.get(GPU_RESOURCE, 0))
        cpu = req.get("cpu", lim.get("cpu", 0))
        mem = req.get("memory", lim.get("memory", 0))
        return parse_quantity(gpu), parse_quantity(cpu), parse_quantity(mem)

    main = [one(c) for c in spec.get("containers") or []]
    init = [one(c) for c in spec.get("initContainers") or []]
    totals = [sum((m[i] for m in main), Decimal(0)) for i in range(3)]
    for i in range(3):
        totals[i] = max([totals[i], *(c[i] for c in init)])
    return int(totals[0]), int(totals[1] * 1000), int(totals[2] // _MIB)


def _int(ann: dict[str, str], key: str, low: int, high: int | None, todo: str) -> int | None:
    if key not in ann:
        return None
    try:
        v = int(ann[key])
    except ValueError:
        raise _Bad(f"annotation {key}: {ann[key]!r} is not an integer; {todo}") from None
    if v < low or (high is not None and v > high):
        span = f"{low}..{high}" if high is not None else f"{low} or more"
        raise _Bad(f"annotation {key}: {v} is outside {span}; {todo}")
    return v


def _when(stamp: Any) -> datetime | None:
    """An RFC 3339 time from the API (or our own export stamp); None if absent or unreadable."""
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _waiting(md: dict[str, Any], now: datetime | None) -> float | None:
    """Seconds since the pod was created: how long it has waited (an evicted pod's controller
    makes a new one, so its wait starts again)."""
    created = _when(md.get("creationTimestamp"))
    if now is None or created is None:
        return None
    return max(0.0, (now - created).total_seconds())


def _pod(raw: dict[str, Any], now: datetime | None = None) -> Pod:
    """A pending pod of ours, read strictly: a malformed field raises _Bad."""
    md, spec = raw["metadata"], raw.get("spec", {})
    labels, ann = md.get("labels") or {}, md.get("annotations") or {}
    kind_text = labels.get(KIND, PodKind.TRAINING.value)
    try:
        kind = PodKind(kind_text)
    except ValueError:
        raise _Bad(
            f"label {KIND}: {kind_text!r} is not a pod kind; use training, fine-tuning or inference"
        ) from None
    gpus, cpu, mem = _requests(spec)
    milli = _int(ann, GPU_MILLI, 1, 1000, "give a share of one GPU in 1..1000")
    if milli is not None:
        if gpus > 1 and milli < 1000:
            raise _Bad(
                f"annotation {GPU_MILLI}: a share needs at most one {GPU_RESOURCE} (got {gpus}); "
                "drop the annotation or the GPU request"
            )
        gpus = max(gpus, 1)
    gang = None
    if GANG in labels:
        size = _int(ann, GANG_SIZE, 1, None, "give the number of member pods")
        if size is None:
            raise _Bad(f"annotation {GANG_SIZE}: missing on a gang member; set it to the gang size")
        gang = Gang(name=labels[GANG], size=size)
    app = labels.get(APP)
    max_per_node = _int(ann, MAX_PER_NODE, 1, None, "give a positive integer")
    if max_per_node is not None and app is None:
        raise _Bad(f"annotation {MAX_PER_NODE}: set without label {APP}; name the app")
    preemptible_text = ann.get(PREEMPTIBLE, "true").lower()
    if preemptible_text not in ("true", "false"):
        raise _Bad(f"annotation {PREEMPTIBLE}: {ann[PREEMPTIBLE]!r} is not true or false")
    models = [m.strip() for m in ann.get(GPU_MODELS, "").split(",") if m.strip()]
    rules = _placement_rules(spec)
    rules["resources"] = _other_requests(spec)
    rules["host_ports"] = _host_ports(spec)
    return Pod(
        name=md["name"],
        namespace=md.get("namespace", "default"),
        kind=kind,
        priority=int(spec.get("priority") or 0),
        gpus=gpus,
        gpu_milli=milli if milli is not None else 1000,
        gpu_models=models,
        cpu_milli=cpu,
        memory_mi_b=mem,
        gang=gang,
        app=app,
        max_per_node=max_per_node,
        preemptible=preemptible_text == "true",
        power_watts_per_gpu=_int(ann, POWER_PER_GPU, 0, None, "give watts per GPU"),
        waiting_seconds=_waiting(md, now),
        labels={str(k): str(v) for k, v in labels.items()},
        **rules,
    )


def _running_pod(raw: dict[str, Any], node: str) -> Pod:
    """A bound pod: what it holds matters; a label wattpack cannot read falls back to the
    default (the pod runs whatever we think of it). Only our own pods may be preempted, and
    never one that is already going away."""
    md = raw["metadata"]
    try:
        pod = _pod(raw)
    except _Bad:
        gpus, cpu, mem = _requests(raw.get("spec", {}))
        pod = Pod(
            name=md["name"],
            namespace=md.get("namespace", "default"),
            kind=PodKind.TRAINING,
            gpus=gpus,
            cpu_milli=cpu,
            memory_mi_b=mem,
            labels={str(k): str(v) for k, v in (md.get("labels") or {}).items()},
        )
    preemptible = pod.preemptible and is_ours(raw) and md.get("deletionTimestamp") is None
    return pod.model_copy(update={"node": node, "preemptible": preemptible})


def share_milli(raw: dict[str, Any]) -> int:
    """The milli of each of its GPUs a pod takes (wattpack.io/gpu-milli, 1000 without it), read
    leniently: where it is malformed, the pod is counted as taking whole GPUs."""
    ann = raw["metadata"].get("annotations") or {}
    try:
        return min(1000, max(1, int(ann.get(GPU_MILLI, "1000"))))
    except ValueError:
        return 1000


def gpus_held(raw: dict[str, Any]) -> dict[int, int]:
    """Milli of each GPU a bound pod holds by its wattpack.io/gpu-indices annotation (none
    without one: which GPUs another scheduler's pod has, its annotation alone does not say)."""
    milli = share_milli(raw)
    return {g: milli for g in _indices(raw) or []}


def _indices(raw: dict[str, Any]) -> list[int] | None:
    text = (raw["metadata"].get("annotations") or {}).get(GPU_INDICES)
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        return None


def _assign_indices(
    node: Node, pods: list[tuple[Pod, dict[str, Any]]]
) -> tuple[list[Pod], list[str]]:
    """Each running pod's GPUs: its annotation where that is valid and free, else the first free
    GPUs (a pod another scheduler placed has no annotation; the device plugin chose for it)."""
    milli = [0] * node.gpus
    whole: set[int] = set()
    out: list[Pod] = []
    later: list[Pod] = []
    notes: list[str] = []
    for pod, raw in sorted(pods, key=lambda t: t[0].key):
        if pod.gpus == 0:
            out.append(pod.model_copy(update={"gpu_indices": []}))
            continue
        idx = pod.gpu_indices or _indices(raw)  # set: the devices of its claims (DRA)
        share = pod.gpu_milli if pod.fractional else 1000
        ok = (
            idx is not None
            and len(idx) == pod.gpus
            and len(set(idx)) == len(idx)
            and all(0 <= i < node.gpus and i not in whole and milli[i] + share <= 1000 for i in idx)
        )
        if not ok:
            later.append(pod)
            continue
        for i in idx:  # type: ignore[union-attr]
            milli[i] += share
            if not pod.fractional:
                whole.add(i)
        out.append(pod.model_copy(update={"gpu_indices": idx}))
    for pod in later:
        share = pod.gpu_milli if pod.fractional else 1000
        free = [i for i in range(node.gpus) if i not in whole and milli[i] + share <= 1000]
        if pod.fractional:
            free.sort(key=lambda i: -milli[i])  # share a GPU already shared first
        if len(free) < pod.gpus:
            notes.append(
                f"pod {pod.key} on node {node.name}: no free GPUs left to account for it; "
                "the node is overcommitted, left out of the snapshot"
            )
            continue
        chosen = sorted(free[: pod.gpus])
        for i in chosen:
            milli[i] += share
            if not pod.fractional:
                whole.add(i)
        out.append(pod.model_copy(update={"gpu_indices": chosen}))
    return out, notes


def _complete_gangs(
    placed: list[Pod], pending: list[tuple[Pod, dict[str, Any]]]
) -> tuple[list[tuple[Pod, dict[str, Any]]], list[PodProblem]]:
    """Pending gang members go to the planner only when the whole gang exists."""
    members: dict[str, list[Pod]] = defaultdict(list)
    for p in placed:
        if p.gang_key:
            members[p.gang_key].append(p)
    for p, _ in pending:
        if p.gang_key:
            members[p.gang_key].append(p)
    keep, problems = [], []
    for pod, raw in pending:
        key = pod.gang_key
        if key is None:
            keep.append((pod, raw))
            continue
        sizes = {m.gang.size for m in members[key] if m.gang is not None}
        have = len(members[key])
        if len(sizes) > 1:
            problems.append(
                PodProblem(
                    pod.key,
                    _uid(raw),
                    f"annotation {GANG_SIZE}: members of gang {pod.gang.name} disagree "  # type: ignore[union-attr]
                    f"({sorted(sizes)}); give every member the same size",
                )
            )
        elif have < pod.gang.size:  # type: ignore[union-attr]
            problems.append(
                PodProblem(
                    pod.key,
                    _uid(raw),
                    f"gang {pod.gang.name} has {have} of {pod.gang.size} members; "  # type: ignore[union-attr]
                    "waiting for the rest",
                    waiting=True,
                )
            )
        elif have > pod.gang.size:  # type: ignore[union-attr]
            problems.append(
                PodProblem(
                    pod.key,
                    _uid(raw),
                    f"annotation {GANG_SIZE}: gang {pod.gang.name} has {have} members, more "  # type: ignore[union-attr]
                    f"than its size {pod.gang.size}; fix the size or remove pods",  # type: ignore[union-attr]
                )
            )
        else:
            keep.append((pod, raw))
    return keep, problems


def _loosen_broken_gangs(placed: list[Pod], pending: list[Pod]) -> list[Pod]:
    """A running gang missing members (one finished, or the rest wait for their siblings) is
    no longer all-or-nothing for what runs: its running members are plain pods to the plan."""
    count: dict[str, int] = defaultdict(int)
    for p in [*placed, *pending]:
        if p.gang_key:
            count[p.gang_key] += 1
    return [
        p.model_copy(update={"gang": None})
        if p.gang is not None and count[p.gang_key] != p.gang.size  # type: ignore[index]
        else p
        for p in placed
    ]
