"""Lease-based leader election (coordination.k8s.io Lease), with the Kubernetes client's own
elector: one replica acts, the others wait and take over when its lease runs out."""

from __future__ import annotations

import threading
from typing import Protocol

import structlog
from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = structlog.get_logger(__name__)


class Runnable(Protocol):
    def run(self) -> None: ...
    def stop(self) -> None: ...


class _Metrics(Protocol):
    leader: object


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
    config = electionconfig.Config(
        LeaseLock(name, namespace, identity),
        lease_duration=lease_seconds,
        renew_deadline=renew,
        retry_period=retry,
        onstarted_leading=started,
        onstopped_leading=stopped,
    )
    log.info("waiting_for_lease", identity=identity, lease=f"{namespace}/{name}")
    elector = threading.Thread(
        target=leaderelection.LeaderElection(config).run, name="leader-election", daemon=True
    )
    elector.start()
    while not (done.is_set() or lost.is_set()):
        done.wait(0.5)
