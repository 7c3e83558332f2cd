"""What recreates a pod, read from its owner references: how it may move (scheduler MoveBy),
and, for a move, which pods are its replacements.

A pod whose controller is a ReplicaSet, a StatefulSet, a Job or a ReplicationController is
recreated when it goes, so it may restart elsewhere; a pod with no controller, or with one that
may not recreate it (a custom resource's operator), would be lost, so it never moves. An
inference replica surges (the replica starts first) only where its owner allows a surge: its
ReplicaSet is the one active ReplicaSet of a Deployment that is not paused and whose rolling
update allows maxSurge above 0. wattpack scales that Deployment up by one for the replica, and
down again when the old copy goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.model import MoveBy, Pod, PodKind

SURGE = "wattpack.io/surge"  # on a Deployment: replicas a surge added and has not taken back


def surged(deployment: dict[str, Any]) -> int:
    """The replicas wattpack's surges added to the Deployment (its wattpack.io/surge)."""
    try:
        return max(0, int((deployment["metadata"].get("annotations") or {}).get(SURGE, "0")))
    except ValueError:
        return 0


@dataclass(frozen=True)
class Scaler:
    """The Deployment a surge scales."""

    namespace: str
    name: str


def controller_uid(raw: dict[str, Any]) -> str | None:
    for ref in raw["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _controller_ref(raw: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (r for r in raw["metadata"].get("ownerReferences") or [] if r.get("controller")), None
    )


def _allows_surge(deployment: dict[str, Any]) -> bool:
    spec = deployment.get("spec") or {}
    if spec.get("paused"):
        return False
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return False
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    return str(surge).strip() not in ("0", "0%")


def surge_scalers(
    replicasets: list[dict[str, Any]],
    deployments: list[dict[str, Any]],
    autoscalers: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, Scaler]:
    """ReplicaSet uid -> the Deployment a surge of its pods scales, for every ReplicaSet that
    is its Deployment's only one with replicas (not mid-rollout) and whose Deployment allows a
    surge and has no HorizontalPodAutoscaler (which would undo the extra replica)."""
    scaled = {
        ((a["metadata"].get("namespace") or "default"), ref.get("name"))
        for a in autoscalers
        if (ref := (a.get("spec") or {}).get("scaleTargetRef") or {}).get("kind") == "Deployment"
    }
    by_uid = {
        str(d["metadata"].get("uid")): d
        for d in deployments
        if (d["metadata"].get("namespace") or "default", d["metadata"]["name"]) not in scaled
    }
    active: dict[str, list[dict[str, Any]]] = {}
    for rs in replicasets:
        ref = _controller_ref(rs)
        if ref is None or ref.get("kind") != "Deployment" or str(ref.get("uid")) not in by_uid:
            continue
        if ((rs.get("spec") or {}).get("replicas") or 0) > 0:
            active.setdefault(str(ref.get("uid")), []).append(rs)
    out = {}
    for uid, sets in active.items():
        d = by_uid[uid]
        if len(sets) == 1 and _allows_surge(d):
            md = d["metadata"]
            out[str(sets[0]["metadata"].get("uid"))] = Scaler(
                md.get("namespace", "default"), md["name"]
            )
    return out


# Controllers that make an evicted pod again. Others (a custom resource's operator, say) may not:
# their pods never move. A Job counts the eviction against its backoffLimit unless its
# podFailurePolicy ignores DisruptionTarget.
RECREATES = ("ReplicaSet", "StatefulSet", "Job", "ReplicationController")


def move_by(pod: Pod, raw: dict[str, Any], scalers: dict[str, Scaler]) -> MoveBy:
    ref = _controller_ref(raw)
    if ref is None or ref.get("kind") not in RECREATES:
        return MoveBy.NONE
    owner = str(ref.get("uid"))
    if pod.kind == PodKind.INFERENCE and pod.gang is None and owner in scalers:
        return MoveBy.SURGE
    return MoveBy.RESTART
