#!/usr/bin/env bash
# Builds the local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok), the real node's kubelet, kube-proxy and CoreDNS, plus helm
# and crane, from Go modules into a cache directory keyed by the go.mod/go.sum files and this
# script. Prints the directory holding the binaries.
# A warm cache returns at once; a cold build takes 15-30 minutes on 2 cores.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
k8s_version=v1.36.3
helm_version=v3.22.0
crane_version=v0.22.1

key=$(cat "$here/go.mod" "$here/go.sum" "$here/coredns/go.mod" "$here/coredns/go.sum" "${BASH_SOURCE[0]}" |
  sha256sum | cut -c1-16)
out="${XDG_CACHE_HOME:-$HOME/.cache}/wsfleet/controlplane/$key"
if [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"

minor=${k8s_version#v1.}
minor=${minor%%.*}
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

export CGO_ENABLED=0
build() { # name package [module dir]
  echo "building $1 ($2)" >&2
  (cd "${3:-$here}" && go build -trimpath -ldflags "-s -w $stamp" -o "$out/$1" "$2") >&2
}
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kubectl k8s.io/kubernetes/cmd/kubectl
build kwok sigs.k8s.io/kwok/cmd/kwok
build kubelet k8s.io/kubernetes/cmd/kubelet
build kube-proxy k8s.io/kubernetes/cmd/kube-proxy
# CoreDNS pins other k8s.io versions, so it has a module of its own.
build coredns github.com/coredns/coredns "$here/coredns"

# helm and crane are plain modules without replace directives: install them at pinned versions.
echo "building helm and crane" >&2
GOBIN="$out" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$helm_version" >&2
GOBIN="$out" go install -trimpath -ldflags "-s -w" "github.com/google/go-containerregistry/cmd/crane@$crane_version" >&2

touch "$out/.complete"
echo "$out"
