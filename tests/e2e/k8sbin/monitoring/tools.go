//go:build tools

// Package monitoring pins prometheus-operator's API types: k8sbin/build.sh runs controller-gen
// over them to make the ServiceMonitor and PrometheusRule CRDs the chart's tests install.
package monitoring

import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
