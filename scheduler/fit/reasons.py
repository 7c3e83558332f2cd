"""Why a pod stays pending: the resource, the place and the amount it falls short by."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from scheduler.fit.classes import fit_shape
from scheduler.fit.filters import summary
from scheduler.fit.state import ClusterState
from scheduler.model import Pod, Shortfall, Unplaced


@dataclass
class _ClassBest:
    node_gpus: int
    node_name: str
    residual: int
    cpu: int
    mem: int


_UNBUDGETED = 2**62  # the power headroom of a class with no budget above it


def _first_of(state: ClusterState, models: list[str]) -> list[str]:
    """A node of each model, by name (a pod's watts on a node depend on the model alone)."""
    first: dict[str, str] = {}
    for n in state.nodes:
        first.setdefault(n.gpu_model, n.name)
    return [first[m] for m in models]


@dataclass
class _Columns:
    """The classes with nodes, in state order, as arrays. After churn a large cluster has
    thousands of classes and hundreds of pending shapes: checking each pair in Python took
    seconds at 4,096 nodes, longer than the plan itself."""

    ids: np.ndarray
    model: np.ndarray  # index into models
    gpus: np.ndarray  # free whole GPUs of the best node
    residual: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    headroom: np.ndarray  # least budget - power over the budgeted domains above the class
    kind: np.ndarray  # the class's kind of node for the filters
    models: list[str]
    model_node: list[int]  # a node of each model: a pod's watts depend on the model alone


class Explainer:
    """Explains pending pods against the final state; per-class maxima are computed once."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._best: dict[int, _ClassBest] = {}
        self._by_shape: dict[tuple, tuple[list[Shortfall], str]] = {}
        self._admitted: dict[str, np.ndarray] = {}  # filter key -> the classes that take it

    def _class_best(self, c: int) -> _ClassBest:
        if c not in self._best:
            s = self.state
            nodes = s.classes[c].nodes
            top = max(nodes, key=lambda i: (s.nfree[i], s.cpu[i]))
            res = max((r for i in nodes for r in s.res[i] if r < 1000), default=0)
            self._best[c] = _ClassBest(
                s.nfree[top],
                s.nodes[top].name,
                max(res, 1000 if s.nfree[top] else 0),
                max(s.cpu[i] for i in nodes),
                max(s.mem[i] for i in nodes),
            )
        return self._best[c]

    @cached_property
    def _columns(self) -> _Columns:
        s = self.state
        live = [c for c in s.classes if c.nodes]
        best = [self._class_best(c.id) for c in live]
        model_node: dict[str, int] = {}
        for c in live:
            model_node.setdefault(c.model, c.nodes[0])
        index = {m: i for i, m in enumerate(model_node)}
        headroom = [
            min(
                (s.budget[d] - s.power[d] for d in s.chain[c.nodes[0]] if d in s.budget),
                default=_UNBUDGETED,
            )
            for c in live
        ]

        def col(values: list[int]) -> np.ndarray:
            return np.array(values, dtype=np.int64)

        return _Columns(
            ids=col([c.id for c in live]),
            model=col([index[c.model] for c in live]),
            gpus=col([b.node_gpus for b in best]),
            residual=col([b.residual for b in best]),
            cpu=col([b.cpu for b in best]),
            mem=col([b.mem for b in best]),
            headroom=col(headroom),
            kind=col([c.kind for c in live]),
            models=list(model_node),
            model_node=list(model_node.values()),
        )

    def explain(self, pod: Pod, gang_note: str | None = None, gang_missing: int = 0) -> Unplaced:
        # Pods of one shape fall short the same way: the state is final when this runs.
        # ... except where rules on other pods have a say: those differ pod by pod.
        shape = fit_shape(pod) if self.state.pod_rules is None else (pod.key,)
        if shape not in self._by_shape:
            self._by_shape[shape] = self._why(pod)
        shortfalls, reason = self._by_shape[shape]
        if not shortfalls and gang_missing:
            shortfalls = [Shortfall(resource="gang", domain="cluster", amount=gang_missing)]
            reason = ""
        if gang_note:
            reason = f"{gang_note}: {reason}" if reason else gang_note
        return Unplaced(pod=pod.key, reason=reason, shortfalls=shortfalls)

    def _why(self, pod: Pod) -> tuple[list[Shortfall], str]:
        """What falls short on the nodes the filters let the pod onto; and first, where nodes
        refuse it, kube-scheduler's count of them by why."""
        refused = self.state.filters.refusals(pod)
        total = len(self.state.nodes)
        s = self.state
        counted: set[int] = set()  # nodes counted below, beyond the filters' own
        if pod.resources or pod.host_ports or s.pod_rules is not None:
            # NodePorts and NodeResourcesFit, on the nodes the filters let it onto; then, on
            # those with room for it, PodTopologySpread and InterPodAffinity.
            for i, n in enumerate(s.nodes):
                if not n.schedulable or not s.filters.admits(pod, i):
                    continue
                counted.add(i)
                if not s.ports_ok(pod.host_ports, i):
                    refused["node(s) didn't have free ports for the requested pod ports"] += 1
                elif pod.resources and not s.extra_ok(pod.resources, i):
                    free = s.extra[i] if s.extra is not None else n.resources
                    r = next(r for r, q in sorted(pod.resources.items()) if free.get(r, 0) < q)
                    refused[f"Insufficient {r}"] += 1
                elif s.pod_rules is not None:
                    why = self._short(pod, i) or s.pod_rules.refusal(pod, i)
                    if why is not None:
                        refused[why] += 1
                    else:
                        counted.discard(i)
                else:
                    counted.discard(i)
        if refused and sum(refused.values()) >= total:
            return [Shortfall(resource="node", domain="cluster", amount=1)], summary(refused, total)
        shortfalls, reason = self._why_on_admitted(pod)
        if refused:
            short = self._short_everywhere(pod, counted)
            if short is not None:
                # Every node refuses it: kube-scheduler's whole line, then what falls short.
                refused.update(short)
                return shortfalls, f"{summary(refused, total)} {reason}"
            line = summary(refused, total).rstrip(".")
            reason = f"{line}; on the {total - sum(refused.values())} others: {reason}"
        return shortfalls, reason

    @cached_property
    def _per_node(self) -> dict[str, np.ndarray]:
        """Every node's free capacity, as arrays (asked once per pending shape)."""
        s = self.state
        headroom = [
            min((s.budget[d] - s.power[d] for d in chain if d in s.budget), default=_UNBUDGETED)
            for chain in s.chain
        ]
        models = self._models = sorted({n.gpu_model for n in s.nodes})
        return {
            "open": np.array([c >= 0 for c in s.class_of], dtype=bool),
            "kind": np.array(s.filters.kind, dtype=np.int64),
            "nfree": np.array(s.nfree, dtype=np.int64),
            "residual": np.array([max(r, default=0) for r in s.res], dtype=np.int64),
            "cpu": np.array(s.cpu, dtype=np.int64),
            "mem": np.array(s.mem, dtype=np.int64),
            "headroom": np.array(headroom, dtype=np.int64),
            "model": np.array([models.index(n.gpu_model) for n in s.nodes], dtype=np.int64),
            "models": np.array([s.node_index[n] for n in _first_of(s, models)], dtype=np.int64),
        }

    def _short_everywhere(self, pod: Pod, counted: set[int]) -> Counter[str] | None:
        """NodeResourcesFit's words (and the power budget's) for every node the filters let the
        pod onto and nothing above counted; None where one of them has room for it."""
        s, t = self.state, self._per_node
        left = t["open"] & np.isin(t["kind"], s.filters.admitted_kinds(pod))
        if counted:
            left[list(counted)] = False
        if pod.gpus == 0:
            gpu = np.zeros(len(left), dtype=bool)
        elif pod.fractional:
            gpu = t["residual"] < pod.gpu_milli
        else:
            gpu = t["nfree"] < pod.gpus
        watts = np.array([s.watts(pod, int(i)) for i in t["models"]], dtype=np.int64)[t["model"]]
        shorts = {
            "Insufficient nvidia.com/gpu": gpu,
            "Insufficient cpu": t["cpu"] < pod.cpu_milli,
            "Insufficient memory": t["mem"] < pod.memory_mi_b,
            "node(s) had no power headroom for it": watts > t["headroom"],
        }
        if pod.gpu_models:
            wanted = [i for i, m in enumerate(self._models) if m in pod.gpu_models]
            shorts["node(s) had none of its GPU models"] = ~np.isin(t["model"], wanted)
        if (left & ~np.logical_or.reduce(list(shorts.values()))).any():
            return None
        out: Counter[str] = Counter()
        for why, mask in shorts.items():
            n = int((left & mask).sum())
            if n:
                out[why] = n
        return out

    def _short(self, pod: Pod, node: int) -> str | None:
        """NodeResourcesFit's word for a node without room for the pod, in its order."""
        s = self.state
        if s.cpu[node] < pod.cpu_milli:
            return "Insufficient cpu"
        if s.mem[node] < pod.memory_mi_b:
            return "Insufficient memory"
        if s.gpus_for(pod, node) is None:
            return "Insufficient nvidia.com/gpu"
        return None

    def _why_on_admitted(self, pod: Pod) -> tuple[list[Shortfall], str]:
        shortfalls = self._shortfalls(pod)
        if shortfalls:
            return shortfalls, self._describe(pod, shortfalls[0])
        if self.state.find(pod) is None:
            # Each resource is there somewhere, but no node has them all, within spread limits.
            if pod.app:
                reason = f"spread: every node with room already runs the most pods of app {pod.app}"
                return [Shortfall(resource="spread", domain="cluster", amount=1)], reason
            reason = "node: no single node has the GPUs, CPU, memory and power headroom at once"
            return [Shortfall(resource="node", domain="cluster", amount=1)], reason
        return [], (
            "outbid: it fits on its own, but the capacity went to higher-value work "
            "(priority-weighted GPU allocation)"
        )

    def _describe(self, pod: Pod, s: Shortfall) -> str:
        if s.resource == "model" and pod.gpu_models:
            return f"model: no schedulable node has GPU model {' or '.join(pod.gpu_models)}"
        if s.resource == "node":
            return "node: no schedulable node takes new work"
        if s.resource == "power":
            budget = self.state.budget[s.domain]
            draw = budget + s.amount
            return f"power: {s.domain} would draw {draw} W > {budget} W budget (short {s.amount} W)"
        if s.resource == "gpu":
            return (
                f"gpu: needs {pod.gpus} free healthy GPUs on one node; best node {s.domain} "
                f"has {pod.gpus - s.amount}{self._roomier(pod, pod.gpus - s.amount)}"
            )
        if s.resource == "gpuMilli":
            return (
                f"gpuMilli: needs {pod.gpu_milli} of one GPU; the roomiest GPU has "
                f"{pod.gpu_milli - s.amount} left"
            )
        if s.resource == "spread":
            return f"spread: every fitting node already runs the most pods of app {pod.app}"
        unit = "cpuMilli" if s.resource == "cpuMilli" else "MiB"
        return f"{s.resource}: short {s.amount} {unit} on the best node {s.domain}"

    def _roomier(self, pod: Pod, named: int) -> str:
        """Where a node with more free GPUs than the one named is out for other reasons: which
        node, and why (else "best node ... has 0" reads as if no node had any)."""
        ids, _, gap = self._admitted_columns(pod)
        c = int(ids[int(np.argmin(gap))])
        best = self._class_best(c)
        why = [_short_of(x) for x in self._class_shortfalls(pod, c) if x.resource != "gpu"]
        if best.node_gpus <= named or not why:
            return ""
        return f"; {best.node_name} has {best.node_gpus} free but {', '.join(why)}"

    def _class_shortfalls(self, pod: Pod, c: int) -> list[Shortfall]:
        """What one class of nodes lacks for the pod, the worst power domain included."""
        s, best = self.state, self._class_best(c)
        node = s.classes[c].nodes[0]
        out: list[Shortfall] = []
        if pod.fractional and best.residual < pod.gpu_milli:
            out.append(
                Shortfall(
                    resource="gpuMilli", domain=best.node_name, amount=pod.gpu_milli - best.residual
                )
            )
        elif not pod.fractional and best.node_gpus < pod.gpus:
            out.append(
                Shortfall(resource="gpu", domain=best.node_name, amount=pod.gpus - best.node_gpus)
            )
        w = s.watts(pod, node)
        over = [
            (s.power[d] + w - s.budget[d], d)
            for d in s.chain[node]
            if d in s.budget and s.power[d] + w > s.budget[d]
        ]
        if over:
            amount, domain = max(over)
            out.append(Shortfall(resource="power", domain=domain, amount=amount))
        if best.cpu < pod.cpu_milli:
            out.append(
                Shortfall(
                    resource="cpuMilli", domain=best.node_name, amount=pod.cpu_milli - best.cpu
                )
            )
        if best.mem < pod.memory_mi_b:
            out.append(
                Shortfall(
                    resource="memoryMiB", domain=best.node_name, amount=pod.memory_mi_b - best.mem
                )
            )
        return out

    def _shortfalls(self, pod: Pod) -> list[Shortfall]:
        """The shortfalls of the class of nodes that comes closest: fewest resources short,
        and of those the one with the most of the GPU room the pod asks for (else a class
        with no free GPU was named "best" beside one with 4)."""
        ids, short, gap = self._admitted_columns(pod)
        if not len(ids):
            resource = "model" if pod.gpu_models else "node"
            return [Shortfall(resource=resource, domain="cluster", amount=max(pod.gpus, 1))]
        # The first such class, as a scan in class order finds it (lexsort is stable).
        first = int(np.lexsort((gap, short))[0])
        if short[first]:
            return self._class_shortfalls(pod, int(ids[first]))
        if self.state.spread_limit(pod) is not None:
            return [Shortfall(resource="spread", domain="cluster", amount=1)]
        return []

    def _admitted_columns(self, pod: Pod) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The classes the pod may go to: their ids, how many resources each is short of, and
        how far its roomiest node is from the GPU room the pod asks for."""
        t = self._columns
        ids, short = t.ids, self._counts(pod)
        if pod.fractional:
            gap = np.maximum(pod.gpu_milli - t.residual, 0)
        else:
            gap = np.maximum(pod.gpus - t.gpus, 0)
        keep = np.ones(len(ids), dtype=bool)
        if pod.gpu_models:
            keep &= np.isin(t.model, [i for i, m in enumerate(t.models) if m in pod.gpu_models])
        filters = self.state.filters
        if not filters.trivial:
            mask = self._admitted.get(pod.rules_key)
            if mask is None:
                mask = self._admitted[pod.rules_key] = np.isin(t.kind, filters.admitted_kinds(pod))
            keep &= mask
        return ids[keep], short[keep], gap[keep]

    def _counts(self, pod: Pod) -> np.ndarray:
        """How many resources each class is short of: what _class_shortfalls would list."""
        s, t = self.state, self._columns
        watts = np.array([s.watts(pod, n) for n in t.model_node], dtype=np.int64)[t.model]
        if pod.fractional:
            short = (t.residual < pod.gpu_milli).astype(np.int64)
        else:
            short = (t.gpus < pod.gpus).astype(np.int64)
        short += watts > t.headroom
        short += t.cpu < pod.cpu_milli
        short += t.mem < pod.memory_mi_b
        return short


def _short_of(s: Shortfall) -> str:
    """A shortfall of a node, as the end of a sentence about it."""
    if s.resource == "power":
        return f"its power domain {s.domain} is {s.amount} W short"
    unit = {"cpuMilli": "cpuMilli", "memoryMiB": "MiB", "gpuMilli": "milli-GPU"}
    return f"is {s.amount} {unit.get(s.resource, s.resource)} short"
