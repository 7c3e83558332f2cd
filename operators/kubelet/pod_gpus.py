"""Which pods hold which GPU, from the kubelet's PodResources API (as dcgm-exporter reads it).

The kubelet serves the devices it handed to each container on a unix socket
(/var/lib/kubelet/pod-resources/kubelet.sock). This is attribution only: when the socket is
missing or the call fails, the answer is empty and the agent goes on without it.
"""

from __future__ import annotations

import os

import grpc
import structlog

from operators.kubelet import DEFAULT_SOCKET
from operators.kubelet.podresources import api_pb2, api_pb2_grpc

__all__ = ["DEFAULT_SOCKET", "PodGpus", "device_pods"]

log = structlog.get_logger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
# The NVIDIA device plugin's "mixed" MIG strategy hands out MIG devices under these names.
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
# The kubelet's own PodResources client allows 16 MiB; gRPC's default of 4 MiB could cut off
# a busy node's answer.
_MAX_MESSAGE = 16 * 1024 * 1024


class PodGpus:
    def __init__(self, socket_path: str, timeout: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._seen_errors: set[str] = set()  # warned about since the last good read

    def read(self) -> dict[str, list[str]]:
        """Device id -> the pods ("namespace/name") whose containers hold it, sorted; {} when
        the kubelet cannot be asked. Ids are the device plugin's: GPU UUIDs ("GPU-..."), MIG
        UUIDs ("MIG-..."), or NVML indices ("0", "0:1") under its index id strategy."""
        try:
            if not os.path.exists(self.socket_path):
                raise FileNotFoundError(f"no socket at {self.socket_path}")
            response = self._list()
        except Exception as e:  # attribution is best effort: nothing here may stop a round
            self._failed(_describe(e))
            return {}
        if self._seen_errors:
            log.info("pod_resources_recovered", socket=self.socket_path)
            self._seen_errors.clear()
        return device_pods(response)

    def _list(self) -> api_pb2.ListPodResourcesResponse:
        # A fresh channel per read: a kept one sits in reconnect backoff (up to minutes) after a
        # kubelet restart, and one connect per round on a local socket costs nothing.
        options = [("grpc.max_receive_message_length", _MAX_MESSAGE)]
        with grpc.insecure_channel(f"unix:{self.socket_path}", options=options) as channel:
            stub = api_pb2_grpc.PodResourcesListerStub(channel)
            return stub.List(api_pb2.ListPodResourcesRequest(), timeout=self.timeout)

    def _failed(self, error: str) -> None:
        # Once per distinct error until the kubelet answers again: the agent reads every round,
        # and a node without a kubelet socket would otherwise log the same line forever.
        if error in self._seen_errors:
            return
        self._seen_errors.add(error)
        log.warning("pod_resources_unavailable", socket=self.socket_path, error=error)


def device_pods(response: api_pb2.ListPodResourcesResponse) -> dict[str, list[str]]:
    out: dict[str, set[str]] = {}
    for pod in response.pod_resources:
        who = f"{pod.namespace}/{pod.name}"
        for container in pod.containers:
            for devices in container.devices:
                name = devices.resource_name
                if name != GPU_RESOURCE and not name.startswith(MIG_RESOURCE_PREFIX):
                    continue
                for device_id in devices.device_ids:
                    # Time-slicing replicas are "<id>::<n>": several pods share the one device.
                    out.setdefault(device_id.split("::", 1)[0], set()).add(who)
    return {device: sorted(pods) for device, pods in out.items()}


def _describe(e: Exception) -> str:
    if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return f"{e.code().name}: {e.details()}"
    return str(e) or type(e).__name__
