"""structlog set-up for the command: logs go to stderr so that stdout holds only results."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum

import structlog


class LogFormat(StrEnum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written: a test runner swaps (and closes) it
    between invocations, and a logger must not keep a closed one."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_current: tuple[LogLevel, LogFormat] = (LogLevel.INFO, LogFormat.AUTO)


def current() -> tuple[LogLevel, LogFormat]:
    """What the last configure was given: worker processes are set up the same way."""
    return _current


def configure(level: LogLevel, fmt: LogFormat) -> None:
    """Readable lines on a terminal, JSON lines otherwise (or when asked)."""
    global _current
    _current = (level, fmt)
    stream = sys.stderr
    as_json = fmt is LogFormat.JSON or (fmt is LogFormat.AUTO and not stream.isatty())
    # The console renderer formats exceptions itself; JSON needs them as a field.
    tail: list[structlog.types.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if as_json
        else [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.value.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        # Not cached: a test runner swaps sys.stderr between invocations.
        cache_logger_on_first_use=False,
    )
