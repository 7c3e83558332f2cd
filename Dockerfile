# The one image both the operator and the agent run (manifests/, charts/wattpack). Its tag is the
# version in pyproject.toml, the chart's appVersion (docs/operations.md, "Building and releasing
# the image"):
#   docker build -t ghcr.io/wattpack/wattpack:$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) .
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
