"""The node agent's side of its GPUNode (manifests/crds): the status it writes with server-side
apply, and the power limits it is asked for in spec.

The object is named as its node and owned by the Node object, so deleting the node deletes it.
A status is written when what it says changed (health, reasons, counts, unsupported fields,
power limits) and otherwise only every `every` seconds, to keep the telemetry in it fresh
without a write per round on every node. API errors are logged and retried on the next round;
they never stop the agent.
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from operators.kube.errors import describe

log = structlog.get_logger(__name__)

GROUP, VERSION, PLURAL, KIND = "wattpack.io", "v1alpha1", "gpunodes", "GPUNode"
APPLY = "application/apply-patch+yaml"
# The agent's round waits on these calls: an API server that hangs must not stop the readings.
_TIMEOUT = (5, 10)  # seconds: connect, read

# Fields of a GPU entry a reader acts on; draw, energy, temperature and utilisation move every
# round and are left to the periodic write.
_GPU_KEYS = (
    "index",
    "uuid",
    "model",
    "health",
    "reasons",
    "unsupported",
    "powerLimitWatts",
    "pods",
)


def _essence(status: dict[str, Any]) -> Any:
    gpus = [{k: g.get(k) for k in _GPU_KEYS} for g in status.get("gpus", [])]
    return status.get("gpuCount"), status.get("healthyCount"), gpus


class GpuNodePublisher:
    def __init__(
        self,
        api: client.ApiClient,
        node_name: str,
        field_manager: str = "wattpack-agent",
        every: float = 60.0,
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.node = node_name
        self.field_manager = field_manager
        self.every = every
        self.last_error: str | None = None
        self._owned = False  # the object exists with its ownerReference to the Node
        self._written: Any = None  # the essence of the last status written
        self._written_at = -math.inf

    def publish(self, status: dict[str, Any], now: float) -> bool:
        """Write `status` if it says something new or the last write is `every` s old
        (`now`: a monotonic clock). True when it was written."""
        essence = _essence(status)
        if essence == self._written and now - self._written_at < self.every:
            return False
        try:
            if not self._owned:
                self._apply_object()
            self._apply(self.custom.patch_cluster_custom_object_status, {"status": status})
        except (ApiException, HTTPError) as e:
            if isinstance(e, ApiException) and e.status == 404:
                self._owned = False  # deleted under us: create it again next round
            self.last_error = describe(e)
            log.error("gpunode_publish_failed", node=self.node, error=self.last_error)
            return False
        if essence != self._written:
            log.info(
                "gpunode_published",
                node=self.node,
                gpus=status.get("gpuCount"),
                healthy=status.get("healthyCount"),
            )
        self.last_error = None
        self._written, self._written_at = essence, now
        return True

    def desired_limits(self) -> dict[int, int]:
        """spec.powerLimits as {GPU index: watts}; empty when there is no GPUNode yet or it
        cannot be read (logged)."""
        try:
            obj = self.custom.get_cluster_custom_object(
                GROUP, VERSION, PLURAL, self.node, _request_timeout=_TIMEOUT
            )
        except ApiException as e:
            if e.status != 404:
                log.error("gpunode_read_failed", node=self.node, error=describe(e))
            return {}
        except HTTPError as e:
            log.error("gpunode_read_failed", node=self.node, error=describe(e))
            return {}
        out: dict[int, int] = {}
        # The CRD validates entries; the checks here only keep a hand-edited object that
        # slipped past an older schema from breaking the round.
        for entry in (obj.get("spec") or {}).get("powerLimits") or []:
            index, watts = entry.get("index"), entry.get("watts")
            if isinstance(index, int) and isinstance(watts, int) and index >= 0 and watts > 0:
                out[index] = watts
        return out

    def _apply_object(self) -> None:
        metadata: dict[str, Any] = {"name": self.node}
        try:
            node = self.core.read_node(self.node, _request_timeout=_TIMEOUT)
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": node.metadata.uid}
            ]
        except (ApiException, HTTPError) as e:
            # Published without an owner it still serves the operator; the owner is tried
            # again with the next write.
            log.warning("gpunode_owner_unknown", node=self.node, error=describe(e))
        self._apply(self.custom.patch_cluster_custom_object, {"metadata": metadata})
        self._owned = "ownerReferences" in metadata

    def _apply(self, patch: Any, fields: dict[str, Any]) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": self.node},
            **fields,
        }
        patch(
            GROUP,
            VERSION,
            PLURAL,
            self.node,
            body,
            field_manager=self.field_manager,
            force=True,
            _content_type=APPLY,
            _request_timeout=_TIMEOUT,
        )
