"""Lease-based leader election (coordination.k8s.io Lease), with the Kubernetes client's own
elector: one replica acts, the others wait and take over when its lease runs out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

import structlog
import urllib3
from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = structlog.get_logger(__name__)


class Runnable(Protocol):
    def run(self) -> None: ...
    def stop(self) -> None: ...


class _Metrics(Protocol):
    leader: object


class _LeaseCalls:
    """The lock's Lease API, each call bounded in time, and a refused or dropped connection
    turned into the ApiException the lock already treats as a failed try. Without this the
    client's elector thread ends on the first refused connection (an API server restarting),
    and a call that never answers holds a leader past its renewal deadline."""

    def __init__(self, api: client.CoordinationV1Api, timeout: float) -> None:
        self._api = api
        self._timeout = timeout

    def __getattr__(self, name: str) -> Callable[..., Any]:
        call = getattr(self._api, name)

        def bounded(*args: Any, **kwargs: Any) -> Any:
            try:
                return call(*args, _request_timeout=self._timeout, **kwargs)
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise client.ApiException(status=0, reason=f"{type(e).__name__}: {e}") from e

        return bounded


def lead(
    api: client.ApiClient,
    namespace: str,
    name: str,
    identity: str,
    lease_seconds: int,
    work: Runnable,
    metrics: _Metrics,
    done: threading.Event,
) -> None:
    """Wait for the lease, run `work` while holding it; return when it is lost (the caller
    exits) or when `done` is set (a clean stop)."""
    lost = threading.Event()

    def started() -> None:
        log.info("leading", identity=identity, lease=f"{namespace}/{name}")
        metrics.leader.set(1)  # type: ignore[attr-defined]
        work.run()

    def stopped() -> None:
        log.warning("leadership_lost", identity=identity)
        metrics.leader.set(0)  # type: ignore[attr-defined]
        work.stop()
        lost.set()

    # Renew well inside the lease, retry a few times per renewal window (the client's rules:
    # lease > renew deadline > 1.2 x retry period, all at least 1 s).
    renew = max(1.5, lease_seconds * 2 / 3)
    retry = max(1.0, min(renew / 3, 2.0))
    lock = LeaseLock(name, namespace, identity)
    # Two tries fit in a renewal deadline.
    lock.api_instance = _LeaseCalls(client.CoordinationV1Api(api), timeout=renew / 2)
    config = electionconfig.Config(
        lock,
        lease_duration=lease_seconds,
        renew_deadline=renew,
        retry_period=retry,
        onstarted_leading=started,
        onstopped_leading=stopped,
    )

    def elect() -> None:
        # Whatever else ends the client's elector (_LeaseCalls handles the known causes) is
        # logged as one line, and the loop below stops this replica.
        try:
            leaderelection.LeaderElection(config).run()
        except Exception as e:
            log.error("leader_election_failed", identity=identity, error=str(e) or repr(e))

    log.info("waiting_for_lease", identity=identity, lease=f"{namespace}/{name}")
    elector = threading.Thread(target=elect, name="leader-election", daemon=True)
    elector.start()
    while not (done.is_set() or lost.is_set()):
        done.wait(0.5)
        if not elector.is_alive() and not lost.is_set():
            # A leader whose lease is no longer renewed must stop before it runs out and a
            # standby takes over; a standby that cannot elect would wait healthy for ever.
            # Either way the caller exits, and Kubernetes restarts the replica.
            log.error("leader_election_stopped", identity=identity, action="exiting")
            metrics.leader.set(0)  # type: ignore[attr-defined]
            work.stop()
            return
