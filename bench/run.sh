#!/usr/bin/env bash
# Builds the gateway and the benchmark in release mode, then runs the whole matrix:
# direct, nginx, HAProxy and the gateway, interleaved round by round. Extra arguments go to
# `wsfleet-bench run` (see `wsfleet-bench run --help`), e.g. `bench/run.sh --rounds 1`.
# Not part of the test command: it takes about ten minutes and wants a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# The proxies compared against, from Debian; installed once.
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null; then
    apt-get update
    apt-get install -y nginx-light haproxy
fi

cargo build --release -p wsfleet-gateway -p wsfleet-bench

# Two descriptors per proxied connection: the idle scenario needs the hard limit.
ulimit -n "$(ulimit -Hn)"
# The load generator and the echo upstream share core 0; the runner pins each proxy to core 1.
exec taskset -c 0 target/release/wsfleet-bench run "$@"
