"""The operator's configuration: the ConfigMap with the packing policy and the GPU models."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from scheduler.cli import documents, files
from scheduler.errors import UserError
from scheduler.model import GpuModel, PackingPolicy

POLICY_KEY = "policy.yaml"
MODELS_KEY = "gpu-models.yaml"
_MODELS = TypeAdapter(list[GpuModel])


def read_config(cm: dict[str, Any] | None, where: str) -> tuple[PackingPolicy, list[GpuModel]]:
    """The policy (defaults when the key is absent) and the GPU models of the ConfigMap.
    Raises UserError naming the key and field."""
    data = (cm or {}).get("data") or {}
    policy = PackingPolicy()
    if data.get(POLICY_KEY, "").strip():
        name = f"{where} key {POLICY_KEY}"
        try:
            policy = PackingPolicy.model_validate(documents.parse(data[POLICY_KEY], name))
        except ValidationError as e:
            raise files.describe(e, name, "policy") from None
    models: list[GpuModel] = []
    if data.get(MODELS_KEY, "").strip():
        name = f"{where} key {MODELS_KEY}"
        try:
            models = _MODELS.validate_python(documents.parse(data[MODELS_KEY], name))
        except ValidationError as e:
            raise files.describe(e, name, "snapshot") from None  # the gpuModels of a snapshot
    if not models:
        raise UserError(
            f"{where}: no GPU models (key {MODELS_KEY})",
            "list the cluster's GPU models: name, tdpWatts, idleWatts, memoryMiB",
        )
    return policy, models
