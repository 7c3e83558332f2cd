# The one image both the operator and the agent run (manifests/operator.yaml, manifests/agent.yaml).
#   docker build -t ghcr.io/wattpack/wattpack:0.1.0 .
# No USER here: the agent needs root on the node (power limits, the kubelet's PodResources
# socket), and the operator's Deployment sets its own non-root user.
FROM python:3.11-slim
WORKDIR /opt/wattpack
COPY pyproject.toml README.md ./
COPY scheduler ./scheduler
COPY operators ./operators
RUN pip install --no-cache-dir . && wattpack --version
ENTRYPOINT []
CMD ["wattpack", "--help"]
