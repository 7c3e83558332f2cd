//go:build tools

// Package k8sbin pins the Kubernetes control plane the end-to-end tests run
// against. It is never compiled; it exists so that `go mod tidy` keeps the
// modules whose main packages build.sh builds.
package k8sbin

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
