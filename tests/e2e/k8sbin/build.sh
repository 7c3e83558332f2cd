#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane for the end-to-end tests from Go
# modules (no release downloads, no Docker) into a cache outside the work tree,
# and prints the folder that holds the binaries. A warm cache costs nothing.
# Also helm, for the chart's tests (charts/wattpack, tests/e2e/test_helm_chart.py), and
# prometheus-operator's ServiceMonitor and PrometheusRule CRDs (monitoring-crds/), made by
# controller-gen from the API types that monitoring/go.mod pins, so that the API server checks
# the chart's monitoring objects against their real schema.
#
#   WATTPACK_K8S_CACHE   cache root (default ~/.cache/wattpack/k8s)
set -euo pipefail

K8S_VERSION=v1.34.1
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.22.0
CONTROLLER_GEN_VERSION=v0.23.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${WATTPACK_K8S_CACHE:-$HOME/.cache/wattpack/k8s}/${K8S_VERSION}-kwok-${KWOK_VERSION}"
binaries=(kube-apiserver kube-scheduler kube-controller-manager kubectl etcd kwok helm)

# helm is not in the folder's name (a new helm must not rebuild the control plane): its
# version is asked instead.
helm_current() {
	[[ -x "$out/helm" ]] && [[ "$("$out/helm" version --template '{{.Version}}')" == "$HELM_VERSION" ]]
}
monitoring_version="$(awk '{for (i = 1; i < NF; i++) if ($i == "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring") print $(i + 1)}' "$here/monitoring/go.mod")"
[[ -n "$monitoring_version" ]] || { echo "no prometheus-operator version in $here/monitoring/go.mod" >&2; exit 1; }
monitoring_current() {
	[[ "$(cat "$out/monitoring-crds/version" 2>/dev/null)" == "$monitoring_version" ]]
}
complete() {
	for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || return 1; done
	helm_current && monitoring_current
}
if complete; then
	echo "$out"
	exit 0
fi

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$out"
minor="${K8S_VERSION#v1.}"
minor="${minor%%.*}"
stamp="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
stamp+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}"
stamp+=" -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}"

cd "$here"
for cmd in kube-apiserver kube-scheduler kube-controller-manager kubectl; do
	[[ -x "$out/$cmd" ]] && continue
	echo "building $cmd ${K8S_VERSION}" >&2
	go build -trimpath -ldflags "$stamp" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
	mv "$out/$cmd.tmp" "$out/$cmd"
done
if [[ ! -x "$out/etcd" ]]; then
	echo "building etcd (the version k8s.io/kubernetes ${K8S_VERSION} requires)" >&2
	go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3
	mv "$out/etcd.tmp" "$out/etcd"
fi
if [[ ! -x "$out/kwok" ]]; then
	echo "building kwok ${KWOK_VERSION}" >&2
	# Outside this module: kwok's own go.mod decides its dependencies.
	(cd / && GOFLAGS= GOBIN="$out/.kwok" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}")
	mv "$out/.kwok/kwok" "$out/kwok"
	rmdir "$out/.kwok"
fi
if ! helm_current; then
	echo "building helm ${HELM_VERSION}" >&2
	# Stamped with the control plane's Kubernetes version: helm template and helm lint then
	# judge the chart against the server the tests run (unstamped, helm assumes v1.20).
	hstamp="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
	for pkg in pkg/chartutil pkg/lint/rules; do
		hstamp+=" -X helm.sh/helm/v3/${pkg}.k8sVersionMajor=1 -X helm.sh/helm/v3/${pkg}.k8sVersionMinor=${minor}"
	done
	(cd / && GOFLAGS= GOBIN="$out/.helm" go install -trimpath -ldflags "$hstamp" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
	mv "$out/.helm/helm" "$out/helm"
	rmdir "$out/.helm"
fi
if ! monitoring_current; then
	echo "generating prometheus-operator ${monitoring_version} CRDs" >&2
	if [[ ! -x "$out/.controller-gen-${CONTROLLER_GEN_VERSION}/controller-gen" ]]; then
		(cd / && GOFLAGS= GOBIN="$out/.controller-gen-${CONTROLLER_GEN_VERSION}" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/controller-tools/cmd/controller-gen@${CONTROLLER_GEN_VERSION}")
	fi
	rm -rf "$out/.monitoring-crds"
	(cd "$here/monitoring" && "$out/.controller-gen-${CONTROLLER_GEN_VERSION}/controller-gen" \
		crd:crdVersions=v1,maxDescLen=0 \
		paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1 \
		output:crd:dir="$out/.monitoring-crds")
	echo "$monitoring_version" >"$out/.monitoring-crds/version"
	rm -rf "$out/monitoring-crds"
	mv "$out/.monitoring-crds" "$out/monitoring-crds"
fi
complete
echo "$out"
