"""Carrying out a plan on the API server: bind, evict, and tell users why a pod waits.

Bindings go through the pods/binding subresource with the pod's UID as precondition, after the
`wattpack.io/gpu-indices` annotation is written. A gang is checked whole first (every member
still pending, the same UID, not being deleted) and only then bound; a member that fails the
check stops the whole gang. Evictions go through pods/eviction (PodDisruptionBudgets hold) with a
UID precondition. With dry_run, every write is logged as what it would be and none is made.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from operators.kube.cache import read_json
from operators.kube.convert import GPU_INDICES, SCHEDULER_NAME
from operators.kube.errors import describe
from operators.timestamps import rfc3339
from scheduler.model import Binding, Eviction

log = structlog.get_logger(__name__)


def _split(key: str) -> tuple[str, str]:
    ns, name = key.split("/", 1)
    return ns, name


@dataclass
class Outcome:
    bound: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # pod key -> why
    evicted: list[str] = field(default_factory=list)


class Applier:
    def __init__(self, api: client.ApiClient, dry_run: bool, identity: str = "wattpack") -> None:
        self.core = client.CoreV1Api(api)
        self.dry_run = dry_run
        self.identity = identity
        self.custom = client.CustomObjectsApi(api)
        self._told: dict[str, str] = {}  # pod uid -> the last message we reported on it
        self._domains: dict[str, dict[str, Any]] = {}  # domain -> the status last written

    # -- bind ---------------------------------------------------------------------------------

    def bind_group(self, bindings: list[Binding], uids: dict[str, str]) -> Outcome:
        """Bind a gang (or one pod) all together: check every member, then bind each."""
        out = Outcome()
        if self.dry_run:
            for b in bindings:
                log.info("would_bind", pod=b.pod, node=b.node, gpus=b.gpu_indices)
            return out
        for b in bindings:
            why = self._unbindable(b.pod, uids.get(b.pod, ""))
            if why:
                log.warning(
                    "group_not_bound", pods=[x.pod for x in bindings], member=b.pod, why=why
                )
                out.failed.update({x.pod: f"{b.pod}: {why}" for x in bindings})
                return out
        for b in bindings:
            try:
                self._bind(b, uids.get(b.pod, ""))
                out.bound.append(b.pod)
            except (ApiException, HTTPError) as e:
                why = describe(e)
                out.failed[b.pod] = why
                # The checks above passed a moment ago: only a member deleted or bound by
                # someone else in between lands here. The members already bound stay bound.
                log.error("bind_failed", pod=b.pod, node=b.node, error=why, bound=out.bound)
        return out

    def _unbindable(self, key: str, uid: str) -> str | None:
        ns, name = _split(key)
        try:
            pod = read_json(self.core.read_namespaced_pod(name, ns, _preload_content=False))
        except ApiException as e:
            return "gone" if e.status == 404 else describe(e)
        except HTTPError as e:
            return describe(e)
        md, spec = pod["metadata"], pod.get("spec", {})
        if uid and md.get("uid") != uid:
            return "replaced by a new pod of the same name"
        if md.get("deletionTimestamp"):
            return "being deleted"
        if spec.get("nodeName"):
            return f"already bound to {spec['nodeName']}"
        return None

    def _bind(self, b: Binding, uid: str) -> None:
        ns, name = _split(b.pod)
        indices = ",".join(str(i) for i in b.gpu_indices)
        self.core.patch_namespaced_pod(
            name, ns, {"metadata": {"annotations": {GPU_INDICES: indices}}}
        )
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=name, namespace=ns, uid=uid or None),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=b.node),
        )
        # The client cannot read the Status the server answers a Binding with: take it raw.
        self.core.create_namespaced_pod_binding(name, ns, body, _preload_content=False)
        log.info("bound", pod=b.pod, node=b.node, gpus=b.gpu_indices)

    # -- evict --------------------------------------------------------------------------------

    def refuses(self, e: Eviction, uid: str) -> str | None:
        """Why the API server would refuse the eviction now (a PodDisruptionBudget's 429, a pod
        gone or replaced), asked with a server-side dry run, which writes nothing; None if it
        would go through. In the operator's own dry run nothing is asked."""
        if self.dry_run:
            return None
        ns, name = _split(e.pod)
        try:
            self.core.create_namespaced_pod_eviction(
                name, ns, _eviction_body(name, ns, uid), dry_run="All", _preload_content=False
            )
        except (ApiException, HTTPError) as err:
            return describe(err)
        return None

    def evict(self, e: Eviction, uid: str) -> bool:
        if self.dry_run:
            log.info("would_evict", pod=e.pod, node=e.node, reason=e.reason)
            return False
        ns, name = _split(e.pod)
        try:
            self.core.create_namespaced_pod_eviction(
                name, ns, _eviction_body(name, ns, uid), _preload_content=False
            )
        except (ApiException, HTTPError) as err:
            # 429: a PodDisruptionBudget says not now; the next cycle plans again.
            log.warning("evict_failed", pod=e.pod, error=describe(err))
            return False
        log.info("evicted", pod=e.pod, node=e.node, reason=e.reason)
        self._event(e.pod, uid, "Preempted", e.reason, "Normal")
        return True

    def nominate(self, key: str, node: str | None) -> None:
        """status.nominatedNodeName, as kube-scheduler sets it on a pod that waits for its
        victims to go (None clears it)."""
        if self.dry_run:
            log.info("would_nominate", pod=key, node=node)
            return
        ns, name = _split(key)
        try:
            self.core.patch_namespaced_pod_status(name, ns, {"status": {"nominatedNodeName": node}})
        except (ApiException, HTTPError) as e:
            log.warning("nominate_failed", pod=key, node=node, error=describe(e))

    # -- tell ---------------------------------------------------------------------------------

    def unschedulable(self, key: str, uid: str, message: str, pod: dict[str, Any] | None) -> None:
        """PodScheduled=False with the reason, and a FailedScheduling Event, once per new
        message (a pod that waits for the same reason is not written to every cycle)."""
        if self._told.get(uid) == message and _condition_says(pod, message):
            return
        if self.dry_run:
            log.info("would_report_unschedulable", pod=key, message=message)
            self._told[uid] = message
            return
        ns, name = _split(key)
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": rfc3339(),
        }
        try:
            if not _condition_says(pod, message):
                self.core.patch_namespaced_pod_status(
                    name, ns, {"status": {"conditions": [condition]}}
                )
            self._event(key, uid, "FailedScheduling", message, "Warning")
        except (ApiException, HTTPError) as e:
            log.warning("report_failed", pod=key, error=describe(e))
            return
        self._told[uid] = message

    def domain_power(self, watts: dict[str, int], budgets: dict[str, int]) -> None:
        """PowerDomain status: the planned draw and the headroom left, written on change."""
        for domain, w in sorted(watts.items()):
            status: dict[str, Any] = {"powerWatts": w}
            if domain in budgets:
                status["headroomWatts"] = budgets[domain] - w
            if self._domains.get(domain) == status:
                continue
            if self.dry_run:
                log.info("would_write_domain_status", domain=domain, **status)
                self._domains[domain] = status
                continue
            body = {"status": {**status, "observedAt": rfc3339()}}
            try:
                self.custom.patch_cluster_custom_object_status(
                    "wattpack.io", "v1alpha1", "powerdomains", domain, body
                )
            except (ApiException, HTTPError) as e:
                if getattr(e, "status", None) != 404:  # "unassigned" is ours, not an object
                    log.warning("domain_status_failed", domain=domain, error=describe(e))
                continue
            self._domains[domain] = status

    def forget(self, uids: set[str]) -> None:
        """Drop what we remember of pods that are gone or placed."""
        for uid in list(self._told):
            if uid not in uids:
                del self._told[uid]

    def _event(self, key: str, uid: str, reason: str, message: str, type_: str) -> None:
        if self.dry_run:
            return
        ns, name = _split(key)
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"{name}.{uuid.uuid4().hex[:16]}", namespace=ns),
            involved_object=client.V1ObjectReference(
                api_version="v1", kind="Pod", name=name, namespace=ns, uid=uid or None
            ),
            reason=reason,
            message=message[:1024],
            type=type_,
            source=client.V1EventSource(component=SCHEDULER_NAME),
            reporting_component=SCHEDULER_NAME,
            reporting_instance=self.identity,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            action="Scheduling",
        )
        try:
            self.core.create_namespaced_event(ns, body, _preload_content=False)
        except (ApiException, HTTPError) as e:
            log.warning("event_failed", pod=key, reason=reason, error=describe(e))


def _eviction_body(name: str, ns: str, uid: str) -> client.V1Eviction:
    return client.V1Eviction(
        metadata=client.V1ObjectMeta(name=name, namespace=ns),
        delete_options=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid) if uid else None
        ),
    )


def _condition_says(pod: dict[str, Any] | None, message: str) -> bool:
    if pod is None:
        return False
    for c in pod.get("status", {}).get("conditions") or []:
        if c.get("type") == "PodScheduled":
            return c.get("status") == "False" and c.get("message") == message
    return False
