"""The kubelet room: the only place that imports grpc, to ask the node's kubelet which pods
hold which devices (the PodResources API on its unix socket)."""

# Here, not in pod_gpus: the CLI needs the default without importing grpc for every command.
DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
