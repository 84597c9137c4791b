#!/usr/bin/env bash
# Builds Weir and runs it standalone on examples/weir.yaml, with three echo upstreams behind it.
# Then, from another terminal:
#   curl -s localhost:8080/orders/42             # 90 % to "orders" (9001/9002 at 3:1), 10 % to orders-v2 (9003)
#   curl -s -H 'x-canary: true' localhost:8080/orders/42   # always orders-v2
#   curl -s localhost:9901/stats                 # pools, health, config version
# Edit examples/weir.yaml while it runs: the change applies within a second.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every port the example needs, checked before anything starts: a half-started example (echo
# servers without Weir, or Weir without its upstreams) misleads more than it helps.
for port in 8080 9901 9001 9002 9003; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: port $port is taken (something listens on 127.0.0.1:$port); stop it, or edit examples/weir.yaml and this script" >&2
    exit 1
  fi
done
cargo build --release --bin weir
./target/release/weir echo-server --listen 127.0.0.1:9001 --listen 127.0.0.1:9002 --listen 127.0.0.1:9003 &
ECHO=$!
trap 'kill $ECHO 2>/dev/null || true' EXIT
sleep 0.2
if ! kill -0 "$ECHO" 2>/dev/null; then
  echo "error: the echo upstreams did not start (see above); nothing else was started" >&2
  exit 1
fi
exec_status=0
./target/release/weir standalone -c examples/weir.yaml "$@" || exec_status=$?
exit $exec_status
