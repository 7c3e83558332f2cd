#!/usr/bin/env bash
# Regenerates api_pb2.py and api_pb2_grpc.py from api.proto (needs the dev extra: grpcio-tools).
# protoc runs from the repository root with -I . so that the generated gRPC module imports
# api_pb2 by its package path (operators.kubelet.podresources), not as a top-level module.
set -euo pipefail
cd "$(dirname "$0")/../../.."
python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. \
  operators/kubelet/podresources/api.proto
