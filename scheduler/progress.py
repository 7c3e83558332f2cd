"""How far a long computation has got (a plan's phase, the solver's best so far), for whoever
listens: the command line's spinner. A context variable rather than a callback handed through
every call: the planner's stages report where they are, and where nobody listens (the
operator, the simulator, the tests) a report costs one look-up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# (phase, detail): "CP-SAT", "solution 3, gap 1.2%"
Listener = Callable[[str, str], None]

_listener: ContextVar[Listener | None] = ContextVar("wattpack_progress", default=None)


def report(phase: str, detail: str = "") -> None:
    listener = _listener.get()
    if listener is not None:
        listener(phase, detail)


def current() -> Listener | None:
    """The listener of this context: for work that reports from threads of its own (CP-SAT's
    solution callback), which do not share the context."""
    return _listener.get()


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
