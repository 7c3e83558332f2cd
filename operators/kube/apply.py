"""Carrying out a plan on the API server: bind, evict, and tell users why a pod waits.

Bindings go through the pods/binding subresource, one request a pod: the Binding carries the
pod's UID as precondition and the `wattpack.io/gpu-indices` annotation, which the server writes
in the same update that sets the node, and it refuses a pod being deleted or bound already. A
cycle's groups (a gang, or one pod) share no GPU and are bound several at once. A gang is
checked whole first (every member read from the server: still pending, the same UID, not being
deleted) and only then bound, one member after another; a member that fails the check stops the
whole gang. Before any group is bound, each node its groups go to is read once: it must still be
there (the server binds to a deleted node), and the GPUs the groups are handed free against the
pods bound there as the server has them now (not the cache, which may lag). A bind whose answer
is lost is read back (bound to the planned node with the planned GPUs); one the server did not
answer (429, 5xx, a dropped connection), or refused with a conflict while the pod read back is
still pending (etcd lost mid-write), is tried again, and a gang member that still is not bound
leaves the members bound for the next plan to complete (only a member read back gone, replaced
or bound elsewhere takes the gang back). Evictions go through pods/eviction
(PodDisruptionBudgets hold) with a UID precondition. Events go out in the background
(operators.kube.events). Every write first asks `may_write`: a replica that lost its lease
writes nothing more. With dry_run, every write is logged as what it would be and none is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from operators.kube import dra
from operators.kube.cache import read_json
from operators.kube.convert import (
    CHECKPOINT_REQUESTED,
    CHECKPOINTED,
    GPU_INDICES,
    gpus_held,
    holds_resources,
    share_milli,
)
from operators.kube.dra_apply import ClaimRefused, ClaimWriter, Written
from operators.kube.errors import describe
from operators.kube.events import EventSender
from operators.kube.owners import SURGE, Scaler, surged
from operators.timestamps import rfc3339
from scheduler.model import Binding, Eviction

log = structlog.get_logger(__name__)


_CONFLICT_TRIES = 5
# Groups bound (and nodes read) at once, as kube-scheduler's 16 binding goroutines: each
# request waits mostly on the server, so a loaded one is kept busy without being flooded.
PARALLEL = 16
# A write the server did not answer is tried again this often, waiting 0.2 s, 0.4 s, ... between
# tries: long enough for a dropped connection or a 503, not for a server that is down.
_BIND_TRIES, _BIND_BACKOFF = 4, 0.2
_TRANSIENT = {429, 500, 502, 503, 504}
# A pod read back after a bind: bound as planned, lost to its gang, still pending, not readable.
_BOUND, _LOST, _PENDING, _UNKNOWN = "bound", "lost", "pending", "unknown"


def _split(key: str) -> tuple[str, str]:
    ns, name = key.split("/", 1)
    return ns, name


@dataclass
class Outcome:
    bound: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # pod key -> why
    evicted: list[str] = field(default_factory=list)


class Applier:
    def __init__(
        self,
        api: client.ApiClient,
        dry_run: bool,
        identity: str = "wattpack",
        may_write: Callable[[], bool] = lambda: True,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.dry_run = dry_run
        self.identity = identity
        # Fencing: asked before every write; False once this replica may no longer act (it
        # lost its lease), so a cycle in flight writes nothing more.
        self.may_write = may_write
        self.custom = client.CustomObjectsApi(api)
        self.claims = ClaimWriter(api, lambda: self.may_write())  # DRA: claims before binds
        self.events = EventSender(self.core, identity, lambda: self.may_write())
        self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="bind")
        self._told: dict[str, str] = {}  # pod uid -> the last message we reported on it
        # Deployments this process scaled, and when (monotonic): a surge annotation it has not
        # seen yet in its cache is its own, not an orphan.
        self.scaled_at: dict[tuple[str, str], float] = {}
        self._domains: dict[str, dict[str, Any]] = {}  # domain -> the status last written

    # -- bind ---------------------------------------------------------------------------------

    def bind_group(
        self,
        bindings: list[Binding],
        uids: Mapping[str, str],
        cached: Mapping[str, dict[str, Any]] | None = None,
    ) -> Outcome:
        """Bind a gang (or one pod) all together: check every member, then bind each."""
        return self.bind_groups([bindings], uids, cached)[0]

    def bind_groups(
        self,
        groups: list[list[Binding]],
        uids: Mapping[str, str],
        cached: Mapping[str, dict[str, Any]] | None = None,
    ) -> list[Outcome]:
        """Bind groups (gangs, or one pod each) that share no GPU, each whole or not at all,
        several at once; the outcome of each. `cached`: the pods as the cache has them (key ->
        object). A lone pod without claims is checked against it, and the server checks the
        same again in the Binding itself (the UID, not being deleted, not bound yet); a gang's
        members are read from the server, so that none is bound unless all are still pending,
        and so is a pod with claims, whose allocation needs the pod as it is now."""
        outs = [Outcome() for _ in groups]
        if self.dry_run:
            for b in (b for group in groups for b in group):
                log.info("would_bind", pod=b.pod, node=b.node, gpus=b.gpu_indices)
            return outs
        checked = self._checked(groups, uids, cached or {}, outs)
        free = self._fenced(groups, checked, outs)
        # Claims are written one group after another: two groups may share a claim.
        plain = [i for i in free if not any(dra.has_claims(p) for p in checked[i][0].values())]
        claimed = [i for i in free if i not in plain]
        tasks = [[i] for i in plain] + ([claimed] if claimed else [])

        def bind(indices: list[int]) -> None:
            for i in indices:
                self._bind_checked(groups[i], uids, checked[i][0], outs[i])

        self._each(bind, tasks)
        return outs

    def _each(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """fn of each item, PARALLEL at a time; every call ends before an error is raised."""
        futures = [self._pool.submit(fn, x) for x in items]
        wait(futures)
        return [f.result() for f in futures]

    def _checked(
        self,
        groups: list[list[Binding]],
        uids: Mapping[str, str],
        cached: Mapping[str, dict[str, Any]],
        outs: list[Outcome],
    ) -> dict[int, tuple[dict[str, dict[str, Any]], dict[str, int]]]:
        """Per group whose every member can be bound now: the members (key -> pod) and the
        milli each takes of each of its GPUs."""

        def read(group: list[Binding], b: Binding) -> bool:
            pod = cached.get(b.pod)
            return len(group) > 1 or pod is None or dra.has_claims(pod)

        keys = [b.pod for group in groups for b in group if read(group, b)]
        fresh = dict(zip(keys, self._each(self._read, keys), strict=True))
        out = {}
        for i, group in enumerate(groups):
            pods: dict[str, dict[str, Any]] = {}
            for b in group:
                pod, why = fresh.get(b.pod) or (cached[b.pod], None)
                why = why or _unbindable(pod, uids.get(b.pod, ""))
                if why:
                    self._not_bound(group, outs[i], b.pod, why)
                    break
                pods[b.pod] = pod
            else:
                out[i] = (pods, {key: share_milli(pod) for key, pod in pods.items()})
        return out

    def _read(self, key: str) -> tuple[dict[str, Any], str | None]:
        """The pod as the server has it now, or why it cannot be read."""
        pod, e = self._read_raising(key)
        if e is None:
            return pod, None
        return {}, "gone" if isinstance(e, ApiException) and e.status == 404 else describe(e)

    def _read_raising(self, key: str) -> tuple[dict[str, Any], Exception | None]:
        """The pod as the server has it now, or the error reading it."""
        ns, name = _split(key)
        try:
            return read_json(self.core.read_namespaced_pod(name, ns, _preload_content=False)), None
        except (ApiException, HTTPError) as e:
            return {}, e

    def _fenced(
        self,
        groups: list[list[Binding]],
        checked: dict[int, tuple[dict[str, dict[str, Any]], dict[str, int]]],
        outs: list[Outcome],
    ) -> list[int]:
        """The checked groups whose nodes are there and whose GPUs are free on the server now,
        not only in the cache (a watch that lags past the assumption window shows bound pods
        as pending): each node read once for all of them, the groups given their GPUs in order,
        so that no two of them are given the same one either."""
        nodes = sorted({b.node for i in checked for b in groups[i]})
        used: dict[tuple[str, int], int] = {}
        broken: dict[str, str] = {}
        for node, (held, why) in zip(nodes, self._each(self._on_node, nodes), strict=True):
            if why:
                broken[node] = why
            used.update({(node, g): milli for g, milli in held.items()})
        free = []
        for i, (_, needs) in sorted(checked.items()):
            group = groups[i]
            bad = next((b for b in group if b.node in broken), None)
            if bad is not None:
                self._not_bound(group, outs[i], bad.pod, broken[bad.node])
                continue
            taken = _give(group, needs, used)
            if taken:
                self._not_bound(group, outs[i], *taken)
                continue
            free.append(i)
        return free

    def _on_node(self, node: str) -> tuple[dict[int, int], str | None]:
        """The milli of each GPU of the node that pods bound there hold now (by their GPU
        annotation); or why nothing may be bound there: the node is gone or going, or it
        cannot be read."""
        try:
            # A node deleted since the cache was read: the server would bind to it anyway, and
            # the pod would never run (and be collected as an orphan).
            got = read_json(self.core.read_node(node, _preload_content=False))
        except ApiException as e:
            why = "is gone" if e.status == 404 else f"cannot be read: {describe(e)}"
            return {}, f"node {node} {why}"
        except HTTPError as e:
            return {}, f"node {node} cannot be read: {describe(e)}"
        if got["metadata"].get("deletionTimestamp"):
            return {}, f"node {node} is being deleted"
        try:
            pods = read_json(
                self.core.list_pod_for_all_namespaces(
                    field_selector=f"spec.nodeName={node}", _preload_content=False
                )
            )
        except (ApiException, HTTPError) as e:
            return {}, f"cannot read the pods on {node}: {describe(e)}"
        held: dict[int, int] = {}
        for raw in pods.get("items", []):
            if holds_resources(raw):
                for g, milli in gpus_held(raw).items():
                    held[g] = held.get(g, 0) + milli
        return held, None

    def _bind_checked(
        self,
        bindings: list[Binding],
        uids: Mapping[str, str],
        pods: dict[str, dict[str, Any]],
        out: Outcome,
    ) -> None:
        """Bind a group whose members passed the checks, one member after another."""
        # DRA: every member's claims are allocated to its planned GPUs before any is bound;
        # where one cannot be, what was written is taken back and none is bound.
        written = Written()
        try:
            held = self.claims.reserve(bindings, pods, written)
        except ClaimRefused as e:
            self.claims.undo(written, set(pods))
            member, _, why = str(e).partition(": ")
            if member not in pods:
                member, why = bindings[0].pod, str(e)
            self._not_bound(bindings, out, member, why)
            return
        for b in bindings:
            if not self.may_write():
                self.claims.undo(written, set(pods) - set(out.bound))
                self._not_bound(bindings, out, b.pod, "this replica no longer leads")
                return
            if b.pod in held:  # the annotation names the devices its claims hold
                b = b.model_copy(update={"gpu_indices": held[b.pod]})
            failed = self._bind_retrying(b, uids.get(b.pod, ""))
            if failed is None:
                out.bound.append(b.pod)
                continue
            e, lost = failed
            why = describe(e)
            log.error("bind_failed", pod=b.pod, node=b.node, error=why, bound=out.bound)
            self.claims.undo(written, set(pods) - set(out.bound))
            if not lost:
                # The server did not bind it (down, overloaded, the network, its storage) but
                # the member is still pending, so the next cycle's plan places it beside the
                # members bound (the planner repairs a gang missing members). Taking them back
                # would evict pods that have a place, and delete those no controller makes
                # again.
                if out.bound:
                    log.warning("gang_left_partly_bound", pods=out.bound, member=b.pod, why=why)
                out.failed.update({x.pod: f"{b.pod}: {why}" for x in bindings[len(out.bound) :]})
                return
            # The checks above passed a moment ago: a member deleted, replaced or bound by
            # someone else in between, so the gang cannot be completed. A gang is all or
            # nothing: the members already bound are taken back (evicted: their controller
            # makes them again, pending), so no half gang holds GPUs.
            self._take_back(bindings, out, uids)
            out.failed.update({x.pod: f"{b.pod}: {why}" for x in bindings})
            return

    def _bind_retrying(self, b: Binding, uid: str) -> tuple[Exception, bool] | None:
        """Bind, trying again where the server did not answer; None once bound (a lost answer
        is read back), else the last error and whether the member is lost to the gang (gone,
        replaced, being deleted, or bound elsewhere), as the pod read back after it says."""
        for attempt in range(_BIND_TRIES):
            try:
                self._bind(b, uid)
                return None
            except (ApiException, HTTPError) as e:
                now = self._read_back(b, uid)
                if now == _BOUND:
                    return None
                if now == _LOST or (now == _UNKNOWN and _status(e) == 404):
                    return e, True
                # Still pending (or not readable): a 409 then is the server's storage, not the
                # pod (etcd gone mid-write answers "Operation cannot be fulfilled ... code =
                # Unavailable"), and is tried again as a write the server did not answer.
                again = _transient(e) or _status(e) == 409
                if not again or attempt == _BIND_TRIES - 1 or not self.may_write():
                    return e, False
                time.sleep(_BIND_BACKOFF * (attempt + 1))
        raise AssertionError("unreachable")

    def _take_back(self, bindings: list[Binding], out: Outcome, uids: Mapping[str, str]) -> None:
        """Evict the members already bound (a Binding cannot be undone; their controller makes
        them again, pending, and the gang is planned whole)."""
        failed = next(b.pod for b in bindings if b.pod not in out.bound)
        for key in out.bound:
            ns, name = _split(key)
            uid = uids.get(key, "")
            try:
                read_json(
                    self.core.create_namespaced_pod_eviction(
                        name, ns, _eviction_body(name, ns, uid), _preload_content=False
                    )
                )
                log.warning("gang_member_taken_back", pod=key, gang=[x.pod for x in bindings])
                message = f"gang member {failed} could not be bound: the gang is taken back whole"
                self._event(key, uid, "GangRolledBack", message, "Warning")
            except (ApiException, HTTPError) as e:
                log.error("take_back_failed", pod=key, error=describe(e))
        out.bound = []

    def _not_bound(self, bindings: list[Binding], out: Outcome, member: str, why: str) -> Outcome:
        log.warning("group_not_bound", pods=[x.pod for x in bindings], member=member, why=why)
        out.failed.update({x.pod: f"{member}: {why}" for x in bindings})
        return out

    def _read_back(self, b: Binding, uid: str) -> str:
        """The pod after a bind that failed or whose answer was lost, read from the server:
        _BOUND to the planned node with the planned GPUs (the annotation comes in the same
        write: it went through), _LOST (gone, replaced, being deleted, or bound elsewhere),
        _PENDING, or _UNKNOWN where it cannot be read. The read is tried again where the
        server did not answer it."""
        for attempt in range(_BIND_TRIES):
            pod, e = self._read_raising(b.pod)
            if e is None:
                break
            if _status(e) == 404:
                return _LOST
            if not _transient(e) or attempt == _BIND_TRIES - 1:
                return _UNKNOWN
            time.sleep(_BIND_BACKOFF * (attempt + 1))
        same = not uid or pod["metadata"].get("uid") == uid
        node = pod.get("spec", {}).get("nodeName")
        if same and node == b.node and gpus_held(pod).keys() == set(b.gpu_indices):
            log.info("bound", pod=b.pod, node=b.node, gpus=b.gpu_indices, read_back=True)
            return _BOUND
        # Replaced, being deleted or bound elsewhere: the same reasons the checks refuse a pod.
        return _LOST if _unbindable(pod, uid) else _PENDING

    def _bind(self, b: Binding, uid: str) -> None:
        ns, name = _split(b.pod)
        indices = ",".join(str(i) for i in b.gpu_indices)
        # The server copies a Binding's annotations onto the pod in the same write that sets
        # its node: the device plugin never sees the pod bound without its GPUs.
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(
                name=name, namespace=ns, uid=uid or None, annotations={GPU_INDICES: indices}
            ),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=b.node),
        )
        # The client cannot read the Status the server answers a Binding with: take it raw.
        read_json(self.core.create_namespaced_pod_binding(name, ns, body, _preload_content=False))
        log.info("bound", pod=b.pod, node=b.node, gpus=b.gpu_indices)
        self._scheduled(b, uid)

    def _scheduled(self, b: Binding, uid: str) -> None:
        """The Event kube-scheduler writes on a binding, with the GPUs."""
        gpus = ",".join(str(i) for i in b.gpu_indices) or "none"
        message = f"Successfully assigned {b.pod} to {b.node} (GPUs {gpus})"
        self._event(b.pod, uid, "Scheduled", message, "Normal")

    # -- evict --------------------------------------------------------------------------------

    def refuses(self, e: Eviction, uid: str) -> str | None:
        """Why the API server would refuse the eviction now (a PodDisruptionBudget's 429, a pod
        gone or replaced), asked with a server-side dry run, which writes nothing; None if it
        would go through. In the operator's own dry run nothing is asked."""
        if self.dry_run:
            return None
        ns, name = _split(e.pod)
        try:
            read_json(
                self.core.create_namespaced_pod_eviction(
                    name, ns, _eviction_body(name, ns, uid), dry_run="All", _preload_content=False
                )
            )
        except (ApiException, HTTPError) as err:
            return describe(err)
        return None

    def evict(self, e: Eviction, uid: str, event: str | None = "Preempted") -> bool:
        """Evict through the Eviction API; `event`: the Event's reason (None: none, for a
        move, whose Moving Event says it already)."""
        if self.dry_run:
            log.info("would_evict", pod=e.pod, node=e.node, reason=e.reason)
            return False
        if not self.may_write():
            log.warning("not_evicted", pod=e.pod, why="this replica no longer leads")
            return False
        ns, name = _split(e.pod)
        try:
            read_json(
                self.core.create_namespaced_pod_eviction(
                    name, ns, _eviction_body(name, ns, uid), _preload_content=False
                )
            )
        except (ApiException, HTTPError) as err:
            # 429: a PodDisruptionBudget says not now; the next cycle plans again.
            log.warning("evict_failed", pod=e.pod, error=describe(err))
            return False
        log.info("evicted", pod=e.pod, node=e.node, reason=e.reason)
        if event is not None:
            self._event(e.pod, uid, event, e.reason, "Normal")
        return True

    # -- move ---------------------------------------------------------------------------------

    def moving(self, key: str, uid: str, reason: str) -> None:
        """The Event on a pod whose move begins."""
        log.info("move_begun", pod=key, reason=reason)
        self._event(key, uid, "Moving", reason, "Normal")

    def moved(self, key: str, uid: str, old: str, reason: str) -> None:
        """The Event on a replacement once it is bound where its old copy was planned to go."""
        log.info("move_placed", pod=old, replacement=key, reason=reason)
        self._event(key, uid, "Moved", f"replaces {old}: {reason}", "Normal")

    def scale(self, scaler: Scaler, by: int) -> bool:
        """A surge: the Deployment's replicas up (or back down) by `by`, and its
        wattpack.io/surge annotation (the replicas wattpack added and has not taken back) with
        them, in one write with the resourceVersion read, so a change made meanwhile by someone
        else is not overwritten, and a leader that takes over finds what a dead one left
        (Operator: orphaned surges). A conflict (its controller writes its status all the time)
        is read again and retried."""
        if self.dry_run:
            log.info("would_scale", deployment=f"{scaler.namespace}/{scaler.name}", by=by)
            return False
        for _ in range(_CONFLICT_TRIES):
            if not self.may_write():
                return False
            try:
                d = read_json(
                    self.apps.read_namespaced_deployment(
                        scaler.name, scaler.namespace, _preload_content=False
                    )
                )
                replicas = max(0, int((d.get("spec") or {}).get("replicas") or 0) + by)
                ann = d["metadata"].setdefault("annotations", {})
                ann[SURGE] = str(max(0, surged(d) + by))
                d["spec"]["replicas"] = replicas  # metadata keeps the resourceVersion read
                read_json(
                    self.apps.replace_namespaced_deployment(
                        scaler.name, scaler.namespace, d, _preload_content=False
                    )
                )
            except ApiException as e:
                if e.status == 409:
                    continue
                log.warning("scale_failed", deployment=scaler.name, by=by, error=describe(e))
                return False
            except HTTPError as e:
                log.warning("scale_failed", deployment=scaler.name, by=by, error=describe(e))
                return False
            log.info("scaled", deployment=f"{scaler.namespace}/{scaler.name}", replicas=replicas)
            self.scaled_at[(scaler.namespace, scaler.name)] = time.monotonic()
            return True
        log.warning("scale_failed", deployment=scaler.name, by=by, error="409 conflicts")
        return False

    def request_checkpoint(self, key: str, uid: str, stamp: str) -> bool:
        """Ask the workload to checkpoint before it is evicted: the annotation
        wattpack.io/checkpoint-requested, and an Event. Whether the request was written."""
        if self.dry_run:
            log.info("would_request_checkpoint", pod=key)
            return False
        if not self.may_write():
            return False
        ns, name = _split(key)
        try:
            self.core.patch_namespaced_pod(
                name, ns, {"metadata": {"annotations": {CHECKPOINT_REQUESTED: stamp}}}
            )
        except (ApiException, HTTPError) as e:
            log.warning("checkpoint_request_failed", pod=key, error=describe(e))
            return False
        log.info("checkpoint_requested", pod=key)
        message = f"checkpoint requested: evicted once {CHECKPOINTED} is set, or at a timeout"
        self._event(key, uid, "CheckpointRequested", message, "Normal")
        return True

    def nominate(self, key: str, node: str | None) -> None:
        """status.nominatedNodeName, as kube-scheduler sets it on a pod that waits for its
        victims to go (None clears it)."""
        if self.dry_run:
            log.info("would_nominate", pod=key, node=node)
            return
        if not self.may_write():
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
        if not self.may_write():
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
            if not self.may_write():
                return
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
        if not self.dry_run:
            self.events.send(key, uid, reason, message, type_)


def _give(
    group: list[Binding], needs: dict[str, int], used: dict[tuple[str, int], int]
) -> tuple[str, str] | None:
    """Add the group's GPUs to `used` (milli of each (node, GPU)) if every one has room; else
    the member whose GPU has none, and why, and `used` as it was."""
    mine: dict[tuple[str, int], int] = {}
    for b in group:
        for g in b.gpu_indices:
            mine[(b.node, g)] = mine.get((b.node, g), 0) + needs[b.pod]
            if used.get((b.node, g), 0) + mine[(b.node, g)] > 1000:
                return b.pod, f"GPU {g} of {b.node} is already taken on the server"
    for k, milli in mine.items():
        used[k] = used.get(k, 0) + milli
    return None


def _unbindable(pod: dict[str, Any], uid: str) -> str | None:
    """Why the pod (as read) cannot be bound now, if it cannot."""
    md, spec = pod["metadata"], pod.get("spec", {})
    if uid and md.get("uid") != uid:
        return "replaced by a new pod of the same name"
    if md.get("deletionTimestamp"):
        return "being deleted"
    if spec.get("nodeName"):
        return f"already bound to {spec['nodeName']}"
    return None


def _status(e: Exception) -> int | None:
    return e.status if isinstance(e, ApiException) else None


def _transient(e: Exception) -> bool:
    """The server did not answer, or answered that it could not now: the same request may
    succeed later (a 4xx other than 429 says it never will)."""
    if isinstance(e, ApiException):
        return e.status in _TRANSIENT or not e.status
    return True  # urllib3: no answer at all


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
