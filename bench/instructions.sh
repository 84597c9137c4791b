#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: repeatable whatever else the
# machine does (unlike CPU time), so it shows small request-path changes that timing cannot.
# Kernel time is not counted; bench/run.sh measures the whole.
# nginx (one worker, keep-alive upstream pool) is counted the same way in the same run.
# Usage: bench/instructions.sh [WEIR_BINARY]   (default: builds and uses target/release/weir)
#        KEEP=DIR bench/instructions.sh …      keeps the callgrind files in DIR (callgrind_annotate)
set -euo pipefail
cd "$(dirname "$0")/.."
for b in valgrind callgrind_control nginx wrk taskset curl; do
  command -v "$b" >/dev/null || { echo "needs $b (apt-get install valgrind nginx wrk util-linux curl)" >&2; exit 1; }
done
bin=${1:-}
if [[ -z $bin ]]; then cargo build --release --bin weir; bin=target/release/weir; fi
d=$(mktemp -d /tmp/weir-instr.XXXXXX)
up=19301 port=19302 nport=19303
cat > "$d/up.conf" <<CONF
daemon off; worker_processes 1; error_log /dev/null; pid $d/up.pid;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$up; location / { return 200 'ok'; } } }
CONF
cat > "$d/weir.yaml" <<CONF
listeners: [{ name: bench, address: "127.0.0.1:$port" }]
routes: [{ name: all, upstream: up }]
upstreams: [{ name: up, load_balancer: { endpoints: [{ address: 127.0.0.1, port: $up }] } }]
CONF
taskset -c 1 nginx -c "$d/up.conf" -p "$d" & ngx=$!
cat > "$d/proxy.conf" <<CONF
daemon off; master_process off; worker_processes 1; error_log /dev/null; pid $d/proxy.pid;
events { worker_connections 1024; }
http { access_log off;
  upstream up { server 127.0.0.1:$up; keepalive 64; }
  server { listen 127.0.0.1:$nport;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto \$scheme; } } }
CONF
trap 'kill $ngx 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT
# count NAME PORT COMMAND...: runs COMMAND under callgrind, prints instructions per request.
count() {
  local name=$1 p=$2; shift 2
  RUST_LOG=warn taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$d/$name" "$@" >"$d/$name.log" 2>&1 &
  local vg=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.3; done
  taskset -c 1 wrk -t1 -c16 -d3s "http://127.0.0.1:$p/" >/dev/null   # warm-up: pool filled, code paged in
  callgrind_control -z $vg >/dev/null 2>&1
  local n ir
  n=$(taskset -c 1 wrk -t1 -c16 -d10s "http://127.0.0.1:$p/" | awk '/requests in/{print $1}')
  callgrind_control -d $vg >/dev/null 2>&1
  sleep 1
  kill $vg; wait $vg 2>/dev/null || true
  ir=$(awk '/^summary:/{s+=$2} END {print s}' "$d/$name".*)
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && cp "$d/$name".* "$KEEP/"; fi
  echo "$name: requests $n  user-space instructions per request $((ir / n))"
}
count weir $port "$bin" standalone -c "$d/weir.yaml" --workers 1
count nginx $nport nginx -c "$d/proxy.conf" -p "$d"
