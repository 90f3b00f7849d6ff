#!/usr/bin/env bash
# Builds the autoscaling add-ons the real-node tests run on the host: KEDA's operator and
# metrics adapter (from the module in keda/, which pins KEDA and its one replace directive),
# the sample adapter of sigs.k8s.io/custom-metrics-apiserver (in KEDA's module graph; it stands
# where prometheus-adapter would serve custom.metrics.k8s.io) and metrics-server (a plain
# module, installed at a pinned version), plus KEDA's CRDs from the module and cert-manager's
# CRDs (plain YAML in its module zip; the controller itself cannot be built from the proxy). Everything goes into a cache directory keyed by keda/go.mod, keda/go.sum and this
# script; prints that directory. A warm cache returns at once; a cold build takes 10-50 minutes
# on 2 busy cores (KEDA is large: its operator binary is about 180 MB).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
metrics_server_version=v0.8.0
cert_manager_version=v1.21.2

key=$(cat "$here/keda/go.mod" "$here/keda/go.sum" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
out="${XDG_CACHE_HOME:-$HOME/.cache}/wsfleet/addons/$key"
if [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out/keda-crds" "$out/cert-manager-crds"

export CGO_ENABLED=0
build() { # name package
  echo "building $1 ($2)" >&2
  (cd "$here/keda" && nice go build -trimpath -ldflags "-s -w" -o "$out/$1" "$2") >&2
}
build keda-operator github.com/kedacore/keda/v2/cmd/operator
build keda-adapter github.com/kedacore/keda/v2/cmd/adapter
build custom-metrics-adapter sigs.k8s.io/custom-metrics-apiserver/test-adapter
keda_dir=$(cd "$here/keda" && go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)
# All of them: the operator waits for every kind it watches (eventing.keda.sh too), and exits
# after two minutes if one is missing.
cp "$keda_dir"/config/crd/bases/*.yaml "$out/keda-crds/"
chmod u+w "$out"/keda-crds/*.yaml

# cert-manager's CRDs for certificates and issuers (not its ACME ones): what the operator's
# Certificates are validated against.
# Outside any module, so that no go.sum (and no cache key) changes.
cert_manager_dir=$(cd "$out" && go mod download -json "github.com/cert-manager/cert-manager@$cert_manager_version" |
  sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
cp "$cert_manager_dir"/deploy/crds/cert-manager.io_*.yaml "$out/cert-manager-crds/"
chmod u+w "$out"/cert-manager-crds/*.yaml

# metrics-server pins a Prometheus that KEDA's module graph cannot share: a module of its own.
echo "building metrics-server" >&2
GOBIN="$out" nice go install -trimpath -ldflags "-s -w" \
  "sigs.k8s.io/metrics-server/cmd/metrics-server@$metrics_server_version" >&2

touch "$out/.complete"
echo "$out"
