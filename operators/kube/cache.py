"""A list+watch cache of one resource (an informer without the framework).

List, then watch from the list's resourceVersion with bookmarks. A watch that ends (server
timeout, a dropped connection, the API server restarting) resumes from the last resourceVersion
seen; a 410 Gone (the server no longer has that version) relists. Objects are the API server's
JSON as dicts: the snapshot conversion reads them as `export` does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from kubernetes import watch
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

log = structlog.get_logger(__name__)

Lister = Callable[..., Any]
_GONE = 410


def key_of(obj: dict[str, Any]) -> str:
    md = obj["metadata"]
    ns = md.get("namespace")
    return f"{ns}/{md['name']}" if ns else md["name"]


def read_json(resp: Any) -> dict[str, Any]:
    """The body of a `_preload_content=False` response, and its connection back to the pool."""
    try:
        return dict(json.loads(resp.data))
    finally:
        resp.release_conn()


def list_all(lister: Lister) -> tuple[list[dict[str, Any]], str]:
    """Every object and the list's resourceVersion, as raw JSON (the typed models cost time
    and drop fields we do not need to know about)."""
    body = read_json(lister(_preload_content=False))
    return body.get("items") or [], body["metadata"]["resourceVersion"]


class Informer:
    """Keeps `objects` (key -> dict) in step with the server; calls on_change after each
    change. Run it on its own thread with `start()`."""

    def __init__(
        self,
        kind: str,
        lister: Lister,
        on_change: Callable[[str], None] = lambda kind: None,
        watch_timeout: int = 240,
        backoff: float = 1.0,
    ) -> None:
        self.kind = kind
        self.lister = lister
        self.on_change = on_change
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.objects: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._rv: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Informer:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        if self._thread is not None:
            self._thread.join(5)

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.objects.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._rv is None:
                    self._relist()
                self._follow()
            except ApiException as e:
                if e.status == _GONE:
                    log.info("watch_expired_relisting", kind=self.kind, resource_version=self._rv)
                    self._rv = None
                    continue
                self._pause("watch_failed", e)
            except (HTTPError, OSError, ValueError) as e:
                # The server went away (restart, network): resume from the last version.
                self._pause("watch_broken", e)
            except Exception as e:  # a dead cache thread would freeze the operator's view
                log.exception("watch_unexpected_error", kind=self.kind)
                self._rv = None
                self._pause("watch_restarting", e)

    def _pause(self, event: str, e: Exception) -> None:
        if self._stop.is_set():
            return
        log.warning(event, kind=self.kind, error=str(e)[:200], retry_in=self.backoff)
        self._stop.wait(self.backoff)

    def _relist(self) -> None:
        items, rv = list_all(self.lister)
        objects = {key_of(o): o for o in items}
        with self.lock:
            changed = objects != self.objects
            self.objects = objects
        self._rv = rv
        log.info("listed", kind=self.kind, objects=len(items), resource_version=rv)
        first = not self.synced.is_set()
        self.synced.set()
        # A relist that finds what the cache held (a watch that keeps breaking, a 410 after a
        # quiet spell) is no change: the operator is not woken to plan the same cluster again.
        if first or changed:
            self.on_change(self.kind)

    def _follow(self) -> None:
        # Every event as the server's JSON: no typed model is built (the client has none for
        # some kinds it lists, resource.k8s.io/v1 ResourceClaims among them, and a watch that
        # looks one up fails at once), and ERROR events still come as ApiException.
        self._watch = watch.Watch(return_type="object")
        for event in self._watch.stream(
            self.lister,
            resource_version=self._rv,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
        ):
            if self._stop.is_set():
                self._watch.stop()
                return
            kind, obj = event["type"], event["raw_object"]
            rv = obj.get("metadata", {}).get("resourceVersion")
            if rv:
                self._rv = rv
            if kind == "BOOKMARK":
                continue
            with self.lock:
                if kind == "DELETED":
                    self.objects.pop(key_of(obj), None)
                else:
                    self.objects[key_of(obj)] = obj
            self.on_change(self.kind)


def wait_synced(informers: list[Informer], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    return all(i.synced.wait(max(0.0, deadline - time.monotonic())) for i in informers)
