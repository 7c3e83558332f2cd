"""Writes charts/wattpack/values.schema.json, the schema helm checks the chart's values against.

The policy and GPU-model parts are wattpack's own models (`wattpack schema policy`), so a policy
typo in values is refused by `helm install` before it reaches the ConfigMap. Run after changing
the chart's values or the policy format:

    python charts/values_schema.py          # rewrite the file
    python charts/values_schema.py --check  # exit 1 if the file is out of date (the tests run it)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from scheduler.model import GpuModel, PackingPolicy

OUT = Path(__file__).resolve().parent / "wattpack" / "values.schema.json"


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = required
    return out


_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_SECONDS = {"type": "number", "exclusiveMinimum": 0}
_STUCK_AFTER = {"type": "number", "minimum": 1}  # --stuck-after's own minimum
# Free-form Kubernetes fields (resources, affinity, tolerations, labels): the API server
# checks them.
_MAP = {"type": "object"}
_LIST = {"type": "array"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_ARGS = {"type": "array", "items": {"type": "string"}}


def _hoisted(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema without its $defs, which go to the root (where its #/$defs/ refs point)."""
    body = dict(schema)
    for name, d in body.pop("$defs", {}).items():
        if defs.get(name, d) != d:
            raise SystemExit(f"two different definitions named {name}")
        defs[name] = d
    return body


def schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    policy = _hoisted(PackingPolicy.model_json_schema(by_alias=True), defs)
    model = _hoisted(GpuModel.model_json_schema(by_alias=True), defs)
    props = {
        "image": _obj(
            {
                "repository": {"type": "string", "minLength": 1},
                "tag": {**_STR, "description": "Empty: the chart's appVersion."},
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            }
        ),
        "imagePullSecrets": _LIST,
        "namespace": _obj({"create": _BOOL}),
        "crds": _obj({"install": _BOOL, "keep": _BOOL}),
        "logLevel": {"enum": ["debug", "info", "warning", "error"]},
        "operator": _obj(
            {
                "replicas": {"type": "integer", "minimum": 1},
                "leaderElection": _obj(
                    {"enabled": _BOOL, "leaseSeconds": {"type": "integer", "minimum": 2}}
                ),
                "intervalSeconds": {"type": "number", "minimum": 0.1},
                "stuckAfterSeconds": _STUCK_AFTER,
                "resources": _MAP,
                "nodeSelector": _STR_MAP,
                "tolerations": _LIST,
                "affinity": _MAP,
                "extraArgs": _ARGS,
            }
        ),
        "agent": _obj(
            {
                "enabled": _BOOL,
                "intervalSeconds": _SECONDS,
                "stuckAfterSeconds": _STUCK_AFTER,
                "dcgmNames": _BOOL,
                "publish": _BOOL,
                "runtimeClassName": _STR,
                "priorityClassName": _STR,
                "nodeSelector": _STR_MAP,
                "tolerations": _LIST,
                "resources": _MAP,
                "extraArgs": _ARGS,
            }
        ),
        "metrics": _obj(
            {
                "operatorPort": _PORT,
                "agentPort": _PORT,
                "serviceMonitor": _obj(
                    {
                        "enabled": _BOOL,
                        "interval": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                        "labels": _STR_MAP,
                    }
                ),
                "prometheusRule": _obj(
                    {
                        "enabled": _BOOL,
                        "labels": _STR_MAP,
                    }
                ),
            }
        ),
        "policy": {**policy, "description": "A PackingPolicy (`wattpack schema policy`)."},
        "gpuModels": {"type": "array", "minItems": 1, "items": model},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "wattpack chart values",
        **_obj(props),
        "$defs": dict(sorted(defs.items())),
    }


def render() -> str:
    return json.dumps(schema(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date; run python charts/values_schema.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: python charts/values_schema.py [--check]", file=sys.stderr)
        return 2
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
