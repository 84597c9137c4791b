#!/usr/bin/env bash
# Builds Weir and runs it standalone on examples/weir.yaml, with three echo upstreams behind it.
# Then, from another terminal:
#   curl -s localhost:8080/orders/42             # 90 % to "orders" (9001/9002 at 3:1), 10 % to orders-v2 (9003)
#   curl -s -H 'x-canary: true' localhost:8080/orders/42   # always orders-v2
#   curl -s localhost:9901/stats                 # pools, health, config version
# Edit examples/weir.yaml while it runs: the change applies within a second.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin weir
./target/release/weir echo-server --listen 127.0.0.1:9001 --listen 127.0.0.1:9002 --listen 127.0.0.1:9003 &
ECHO=$!
trap 'kill $ECHO 2>/dev/null || true' EXIT
exec_status=0
./target/release/weir standalone -c examples/weir.yaml "$@" || exec_status=$?
exit $exec_status
