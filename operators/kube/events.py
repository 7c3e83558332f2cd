"""Events, written in the background, as kube-scheduler's event broadcaster writes them: a
binding never waits for the Event that tells of it (a loaded server takes longer to write an
Event than the Binding itself).

Best effort, as Events are: one the server refuses is logged and dropped, and so is one made
while the queue is full (the server far behind). Each is stamped when it is made, not when it
is written, and none is written once this replica may no longer write (it lost its lease).
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from operators.kube.cache import read_json
from operators.kube.convert import SCHEDULER_NAME
from operators.kube.errors import describe

log = structlog.get_logger(__name__)

_WORKERS = 2  # Events in flight at once: enough to keep up with parallel binds, no more
_QUEUED = 10_000


class EventSender:
    def __init__(
        self, core: client.CoreV1Api, identity: str, may_write: Callable[[], bool]
    ) -> None:
        self.core = core
        self.identity = identity
        self.may_write = may_write
        self._queue: queue.Queue[tuple[str, str, client.CoreV1Event]] = queue.Queue(_QUEUED)
        self._started = False
        self._lock = threading.Lock()

    def send(self, key: str, uid: str, reason: str, message: str, type_: str) -> None:
        """Queue an Event on the pod `key` (namespace/name)."""
        if not self.may_write():
            return
        ns, name = key.split("/", 1)
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
        self._start()
        try:
            self._queue.put_nowait((key, reason, body))
        except queue.Full:
            log.warning("event_dropped", pod=key, reason=reason, why="the queue is full")

    def wait(self) -> None:
        """Until every Event queued so far is written (or dropped)."""
        self._queue.join()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            for i in range(_WORKERS):
                threading.Thread(target=self._run, name=f"events-{i}", daemon=True).start()
            self._started = True

    def _run(self) -> None:
        while True:
            key, reason, body = self._queue.get()
            try:
                if self.may_write():
                    ns = body.metadata.namespace
                    read_json(self.core.create_namespaced_event(ns, body, _preload_content=False))
            except (ApiException, HTTPError) as e:
                log.warning("event_failed", pod=key, reason=reason, error=describe(e))
            except Exception:  # a dead sender would silently drop every later Event
                log.exception("event_failed", pod=key, reason=reason)
            finally:
                self._queue.task_done()
