#!/usr/bin/env bash
# Peer comparison: Weir vs nginx vs HAProxy as reverse proxies in one run on this machine.
# Builds release, installs nginx/wrk/haproxy when missing, then runs bench/compare.py.
# Usage: bench/run.sh [--duration 10] [--rounds 3] [--conns 64,256]
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for b in nginx wrk haproxy taskset h2load openssl; do command -v "$b" >/dev/null || missing+=("$b"); done
if ((${#missing[@]})); then
  pkgs=()
  for b in "${missing[@]}"; do case $b in taskset) pkgs+=(util-linux);; h2load) pkgs+=(nghttp2-client);; *) pkgs+=("$b");; esac; done
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
fi
cargo build --release --bin weir
exec python3 bench/compare.py "$@"
