"""XID events on their own thread: NVML's event wait blocks, and the sampling loop must not.

The thread drains the event set in short waits and keeps what came per GPU until the next
round takes it. An error in the wait is logged and retried; the thread never dies of it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class XidWatcher:
    def __init__(
        self,
        drain: Callable[[int], dict[int, list[int]]],
        wait_ms: int = 1000,
        retry_s: float = 1.0,
    ) -> None:
        self._drain = drain
        self._wait_ms = wait_ms
        self._retry_s = retry_s
        self._pending: dict[int, list[int]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xid-watcher", daemon=True)

    def start(self) -> XidWatcher:
        self._thread.start()
        return self

    def take(self) -> dict[int, list[int]]:
        """The XIDs seen since the last take, per GPU index."""
        with self._lock:
            out, self._pending = dict(self._pending), defaultdict(list)
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._wait_ms / 1000 + self._retry_s + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got = self._drain(self._wait_ms)
            except Exception as e:  # a failed wait is logged and retried, never fatal
                log.error("xid_wait_failed", error=str(e))
                self._stop.wait(self._retry_s)
                continue
            if got:
                with self._lock:
                    for gpu, xids in got.items():
                        self._pending[gpu].extend(xids)
                for gpu, xids in got.items():
                    log.warning("xid", gpu=gpu, xids=xids)


def sleep_until(deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
    left = deadline - clock()
    if left > 0:
        time.sleep(left)
