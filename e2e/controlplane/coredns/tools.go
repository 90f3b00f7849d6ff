//go:build tools

// Package coredns pins the cluster DNS server of the end-to-end tests' real node. It lives in
// a module of its own because it pins other k8s.io versions than Kubernetes itself.
package coredns

import (
	_ "github.com/coredns/coredns"
)
