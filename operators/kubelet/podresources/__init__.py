"""The kubelet's PodResources v1 API: api.proto from k8s.io/kubelet and the modules generated
from it (api_pb2, api_pb2_grpc; regenerate.sh rebuilds them, never edit them by hand)."""
