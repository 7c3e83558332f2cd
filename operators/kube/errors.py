"""API errors as one short line for logs and for users (the server's message, not its body)."""

from __future__ import annotations

import json

from kubernetes.client.rest import ApiException


def describe(e: Exception) -> str:
    if isinstance(e, ApiException):
        try:
            msg = json.loads(e.body or "{}").get("message") or e.reason
        except ValueError:
            msg = e.reason
        return f"{e.status}: {msg}"
    return str(e)[:200]
