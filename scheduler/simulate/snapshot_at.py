"""The state of a replay at one simulated time, as the ClusterSnapshot an operator would read.

The inventory is the ledger's (a GPU that failed in the replay shows as failed), every running pod
is where the ledger holds it (node and gpuIndices), and every queued pod is pending with
waitingSeconds = the time since it was queued: its arrival, or the eviction or GPU failure that
put it back in the queue (a recreated pod's wait starts anew, as its creation time does). Pods
that fit on no node of the empty cluster are never queued by the replay, so they are absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from scheduler.model import ClusterSnapshot, Pod, SnapshotMeta
from scheduler.simulate.ledger import Ledger

# (scheduler, simulated time, snapshot) -> None: where a replay sends the snapshots it takes.
SnapshotSink = Callable[[str, float, ClusterSnapshot], None]


def snapshot_at(
    ledger: Ledger, queued: Iterable[tuple[Sequence[Pod], float]], at: float, name: str
) -> ClusterSnapshot:
    """The cluster at simulated time `at`: the ledger's nodes and running pods, and the queued
    pods, given as (pods, queued since), pending. Validated, consistency checks included."""
    running = [r.pod for r in ledger.running.values()]
    pending = [
        p.model_copy(update={"waiting_seconds": max(0.0, at - since)})
        for pods, since in queued
        for p in pods
    ]
    inv = ledger.inventory
    return ClusterSnapshot(
        metadata=SnapshotMeta(name=name),
        gpu_models=inv.gpu_models,
        power_domains=inv.power_domains,
        nodes=inv.nodes,
        pods=running + pending,
    )


def time_label(at: float) -> str:
    """A simulated time as names show it: whole seconds without a point (12345), else as is."""
    return str(int(at)) if float(at).is_integer() else repr(float(at))


def snapshot_name(cluster: str, scheduler: str, at: float) -> str:
    """`<cluster>-<scheduler>-t<time>`, the name a replay gives a snapshot."""
    return f"{cluster}-{scheduler}-t{time_label(at)}"
