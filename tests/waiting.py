"""Waiting for a condition, polled: never a fixed sleep, never an assertion on how long it took
(the machines that run the suite are shared and noisy)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    pred: Callable[[], Any],
    timeout: float,
    what: str,
    every: float = 0.25,
    describe: Callable[[], Any] | None = None,
) -> Any:
    """`pred`'s first truthy answer; `describe`: what the failure message shows of the state."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            seen = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{seen}")
        time.sleep(every)
