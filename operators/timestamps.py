"""The one timestamp format wattpack writes into API objects and snapshots (RFC 3339, UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
