"""Why a pod stays pending: the resource, the place and the amount it falls short by."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.fit.state import ClusterState
from scheduler.model import Pod, Shortfall, Unplaced


@dataclass
class _ClassBest:
    node_gpus: int
    node_name: str
    residual: int
    cpu: int
    mem: int


class Explainer:
    """Explains pending pods against the final state; per-class maxima are computed once."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._best: dict[int, _ClassBest] = {}
        self._by_shape: dict[tuple, list[Shortfall]] = {}

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

    def explain(self, pod: Pod, gang_note: str | None = None) -> Unplaced:
        # Pods of one shape fall short the same way: the state is final when this runs.
        shape = (
            pod.gpus,
            pod.gpu_milli,
            pod.cpu_milli,
            pod.memory_mi_b,
            tuple(pod.gpu_models),
            pod.kind,
            pod.power_watts_per_gpu,
            pod.app,
            pod.max_per_node,
        )
        if shape not in self._by_shape:
            self._by_shape[shape] = self._shortfalls(pod)
        shortfalls = self._by_shape[shape]
        if shortfalls:
            first = shortfalls[0]
            reason = self._describe(pod, first)
        else:
            reason = (
                "outbid: it fits on its own, but the capacity went to higher-value work "
                "(priority-weighted GPU allocation)"
            )
        if gang_note:
            reason = f"{gang_note}: {reason}"
        return Unplaced(pod=pod.key, reason=reason, shortfalls=shortfalls)

    def _describe(self, pod: Pod, s: Shortfall) -> str:
        if s.resource == "model":
            return f"model: no schedulable node has GPU model {' or '.join(pod.gpu_models)}"
        if s.resource == "power":
            budget = self.state.budget[s.domain]
            draw = budget + s.amount
            return f"power: {s.domain} would draw {draw} W > {budget} W budget (short {s.amount} W)"
        if s.resource == "gpu":
            return (
                f"gpu: needs {pod.gpus} free healthy GPUs on one node; best node {s.domain} "
                f"has {pod.gpus - s.amount}"
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

    def _shortfalls(self, pod: Pod) -> list[Shortfall]:
        s = self.state
        classes = [c for c in s.classes if not pod.gpu_models or c.model in pod.gpu_models]
        classes = [c for c in classes if c.nodes]
        if not classes:
            return [Shortfall(resource="model", domain="cluster", amount=max(pod.gpus, 1))]
        found: dict[str, Shortfall] = {}

        def keep(resource: str, domain: str, amount: int) -> None:
            if amount > 0 and (resource not in found or amount < found[resource].amount):
                found[resource] = Shortfall(resource=resource, domain=domain, amount=amount)

        fits_somewhere: dict[str, bool] = {}
        for cls in classes:
            best = self._class_best(cls.id)
            node = cls.nodes[0]
            w = s.watts(pod, node)
            power_ok = True
            for d in s.chain[node]:
                if d in s.budget and s.power[d] + w > s.budget[d]:
                    keep("power", d, s.power[d] + w - s.budget[d])
                    power_ok = False
            if pod.fractional:
                gpu_ok = best.residual >= pod.gpu_milli
                if not gpu_ok:
                    keep("gpuMilli", best.node_name, pod.gpu_milli - best.residual)
            else:
                gpu_ok = best.node_gpus >= pod.gpus
                if not gpu_ok:
                    keep("gpu", best.node_name, pod.gpus - best.node_gpus)
            keep("cpuMilli", best.node_name, pod.cpu_milli - best.cpu)
            keep("memoryMiB", best.node_name, pod.memory_mi_b - best.mem)
            for resource, ok in (
                ("power", power_ok),
                ("gpu", gpu_ok),
                ("cpuMilli", best.cpu >= pod.cpu_milli),
                ("memoryMiB", best.mem >= pod.memory_mi_b),
            ):
                fits_somewhere[resource] = fits_somewhere.get(resource, False) or ok
        # A resource that some class has enough of is not what keeps the pod out.
        short = [
            f for r, f in found.items() if not fits_somewhere.get(r if r != "gpuMilli" else "gpu")
        ]
        if not short and s.spread_limit(pod) is not None:
            short = [Shortfall(resource="spread", domain="cluster", amount=1)]
        order = {"model": 0, "gpu": 1, "gpuMilli": 1, "power": 2, "cpuMilli": 3, "memoryMiB": 4}
        return sorted(short, key=lambda f: order.get(f.resource, 9))
