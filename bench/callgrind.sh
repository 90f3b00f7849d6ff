#!/usr/bin/env bash
# User-space instructions the gateway spends per forwarded message and per handshake, by the
# method in BENCHMARKS.md: the release gateway under callgrind, in front of the benchmark's echo
# upstream, loaded for 4 s and for 12 s; (Ir_12 - Ir_4) / (work_12 - work_4), so start-up and
# shutdown cancel out. The work is read from the gateway's own counters. Needs valgrind.
# BASE_PORT (default 18480) moves the three ports used; GATEWAY=PATH measures that gateway binary
# instead of the one built here.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -p wsfleet-gateway -p wsfleet-bench
bin=$CARGO_TARGET_DIR/release
gateway_bin=${GATEWAY:-$bin/wsfleet-gateway}
base=${BASE_PORT:-18480}
echo_addr=127.0.0.1:$base listen=127.0.0.1:$((base + 1)) metrics=127.0.0.1:$((base + 2))
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# The benchmark matrix's gateway config (bench/src/proxies.rs) and an HS256 token for it.
secret='wsfleet-bench HS256 secret, 32+ bytes long'
mkdir "$work/gateway" && printf '%s' "$secret" >"$work/gateway/jwt.key"
cat >"$work/gateway/gateway.yaml" <<EOF
listen: {address: $listen, path: /}
metrics: {address: $metrics}
upstream: {url: "ws://$echo_addr/"}
auth: {jwt: {issuer: wsfleet-bench, audiences: [wsfleet-bench], algorithms: [HS256], keyFile: $work/gateway/jwt.key}}
limits:
  maxConnections: 10000
  connectionsPerIP: {perSecond: 1000000, burst: 1000000}
  messagesPerConnection: {perSecond: 1000000, burst: 1000000}
EOF
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
claims=$(printf '{"iss":"wsfleet-bench","aud":"wsfleet-bench","sub":"load-generator","exp":%d}' \
    $(($(date +%s) + 86400)) | b64url)
unsigned=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url).$claims
token=$unsigned.$(printf '%s' "$unsigned" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)

"$bin/wsfleet-bench" echo --listen "$echo_addr" >"$work/echo.log" 2>&1 &

# Runs one scenario for $2 seconds under callgrind; prints "INSTRUCTIONS WORK", the work being
# the sum of the gateway's counter family $3.
measure() {
    local scenario=$1 secs=$2 family=$3 out=$work/callgrind.$1.$2
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$gateway_bin" --config "$work/gateway/gateway.yaml" --worker-threads 1 \
        >"$work/gateway.$scenario.$secs.log" 2>&1 &
    local gateway=$!
    until curl -sf "http://$metrics/readyz" >/dev/null; do sleep 0.2; done
    case $scenario in
    messages) set -- --scenario latency --connections 64 --size 128 --rate 1000 ;;
    handshakes) set -- --scenario handshakes --connections 8 ;;
    esac
    "$bin/wsfleet-bench" load --url "ws://$listen/" --token "$token" "$@" \
        --warmup-secs 0 --measure-secs "$secs" >/dev/null
    sleep 1 # the last connections' counts land when they close
    local work_done
    work_done=$(curl -sf "http://$metrics/metrics" | awk -v f="$family" \
        'index($0, f "{") == 1 { sum += $NF } END { printf "%d", sum }')
    kill -TERM "$gateway" && wait "$gateway" || true
    echo "$(awk '/^totals:/ { print $2 }' "$out") $work_done"
}

# Instructions per unit of work between the short and the long run.
per_unit() {
    read -r ir4 n4 < <(measure "$1" 4 "$2")
    read -r ir12 n12 < <(measure "$1" 12 "$2")
    echo "$1: $(((ir12 - ir4) / (n12 - n4))) instructions each ($((n4)) and $((n12)) counted)"
}
per_unit messages wsfleet_gateway_messages_total
per_unit handshakes wsfleet_gateway_handshakes_total
