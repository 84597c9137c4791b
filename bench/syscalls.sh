#!/usr/bin/env bash
# System calls and context switches per proxied request, Weir vs nginx in one run: `strace -c`
# on the proxy while wrk drives it, then `perf stat` (context switches, CPU migrations) over
# the same load. Explains kernel time that CPU per request alone cannot.
# Usage: bench/syscalls.sh [WEIR_BINARY]   (default: target/release/weir, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
for b in strace nginx wrk taskset curl; do
  command -v "$b" >/dev/null || { echo "needs $b (apt-get install strace nginx wrk util-linux curl)" >&2; exit 1; }
done
bin=${1:-target/release/weir}
[[ -x $bin ]] || cargo build --release --bin weir
d=$(mktemp -d /tmp/weir-sys.XXXXXX)
up=19401 port=19402 nport=19403
cat > "$d/up.conf" <<CONF
daemon off; worker_processes 1; error_log /dev/null; pid $d/up.pid;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; server { listen 127.0.0.1:$up; location / { return 200 'ok'; } } }
CONF
cat > "$d/weir.yaml" <<CONF
listeners: [{ name: bench, address: "127.0.0.1:$port" }]
routes: [{ name: all, upstream: up }]
upstreams: [{ name: up, load_balancer: { endpoints: [{ address: 127.0.0.1, port: $up }] } }]
CONF
cat > "$d/proxy.conf" <<CONF
daemon off; master_process off; worker_processes 1; error_log /dev/null; pid $d/proxy.pid;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$up; keepalive 64; }
  server { listen 127.0.0.1:$nport;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme; } } }
CONF
taskset -c 1 nginx -c "$d/up.conf" -p "$d" & ngx=$!
RUST_LOG=warn taskset -c 0 "$bin" standalone -c "$d/weir.yaml" --workers 1 & weir=$!
taskset -c 0 nginx -c "$d/proxy.conf" -p "$d" & proxy=$!
trap 'kill $ngx $weir $proxy 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT
for p in $port $nport; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
# count NAME PID PORT: syscalls per request under strace, then context switches under perf.
count() {
  local name=$1 pid=$2 p=$3
  taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$p/" >/dev/null
  timeout -s INT 6 strace -c -f -p "$pid" -o "$d/$name.strace" 2>/dev/null &
  local st=$!
  sleep 0.5
  local n
  n=$(taskset -c 1 wrk -t1 -c64 -d5s "http://127.0.0.1:$p/" | awk '/requests in/{print $1}')
  wait $st 2>/dev/null || true
  echo "== $name: $n requests under strace"
  awk -v n="$n" 'NR>2 && $NF != "total" && $4 ~ /^[0-9]+$/ {printf "  %-16s %6.2f per request\n", $NF, $4 / n}' "$d/$name.strace" | sort -k2 -rn | head -8
  if command -v perf >/dev/null && perf stat -e context-switches true >/dev/null 2>&1; then
    perf stat -e context-switches,cpu-migrations -p "$pid" -o "$d/$name.perf" -- sleep 5 &
    local ps=$!
    n=$(taskset -c 1 wrk -t1 -c64 -d5s "http://127.0.0.1:$p/" | awk '/requests in/{print $1}')
    wait $ps 2>/dev/null || true
    awk -v n="$n" '/context-switches|cpu-migrations/ {gsub(",","",$1); printf "  %-16s %6.3f per request\n", $2, $1 / n}' "$d/$name.perf"
  fi
}
count weir $weir $port
count nginx $proxy $nport
