#!/usr/bin/env bash
# A fleet on one machine: a control plane, two gateways and three echo upstreams; then
# examples/weir.yaml is applied through the control plane, unchanged. Ctrl-C stops it all.
#   curl -s localhost:8080/orders/42 ; curl -s localhost:8081/orders/42   # both gateways serve it
#   ./target/release/weir ctl gateways                                  # up, applied revision, req/s
#   ./target/release/weir ctl apply -f examples/weir.yaml --dry-run     # nothing to change
# State (control-plane store, gateway snapshots) goes to ${WEIR_FLEET_DIR:-/tmp/weir-fleet}.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin weir
W=$PWD/target/release/weir
DIR=${WEIR_FLEET_DIR:-/tmp/weir-fleet}
mkdir -p "$DIR"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
$W echo-server --listen 127.0.0.1:9001 --listen 127.0.0.1:9002 --listen 127.0.0.1:9003 & pids+=($!)
$W control-plane --store "redb:$DIR/control.redb" & pids+=($!)
for i in 0 1; do
  $W gateway --id "gw-$i" --listen "127.0.0.1:808$i" --admin-address "127.0.0.1:990$((i + 1))" \
    --state-dir "$DIR/gw-$i" & pids+=($!)
done
# Wait until both gateways have registered, so `--wait` below covers them.
for _ in $(seq 100); do
  [ "$(curl -sf localhost:9180/api/v1/gateways | grep -o '"id"' | wc -l)" -ge 2 ] && break
  sleep 0.1
done
$W ctl apply -f examples/weir.yaml --wait 5s
$W ctl gateways
wait
