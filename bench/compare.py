#!/usr/bin/env python3
"""Drive Weir, nginx and HAProxy with the same wrk load and report CPU time per request.

Every proxy runs with one worker pinned to core 0; the upstream (nginx `return 200`) and wrk
share core 1. Proxies alternate within each round so drift on a shared machine hits all of
them alike. CPU per request = the proxy processes' user+system time / requests served.
Traffic goes to 127.0.0.1 only and every run stops by itself (wrk -d).
"""
import argparse, os, re, shutil, signal, subprocess, sys, tempfile, time, json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEIR = ROOT / "target/release/weir"
TICK = os.sysconf("SC_CLK_TCK")
UP_PORT, WEIR_PORT, NGINX_PORT, HAPROXY_PORT = 18000, 18081, 18082, 18083
TLS_OFFSET = 10  # TLS listeners: 18091 weir, 18092 nginx, 18093 haproxy


def cpu_seconds(pids, only=None):
    """User+system CPU seconds of `pids`; `only="sys"` gives the kernel part alone."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            utime, stime = int(fields[11]), int(fields[12])
            total += stime if only == "sys" else utime + stime
        except FileNotFoundError:
            pass
    return total / TICK


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def rss_parts_kib(pids):
    """(anonymous, file-backed) resident KiB: the heap and stacks vs the binary's own pages."""
    anon = file = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    anon += int(line.split()[1])
                elif line.startswith("RssFile:") or line.startswith("RssShmem:"):
                    file += int(line.split()[1])
        except FileNotFoundError:
            pass
    return anon, file


def tree(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [int(p) for p in out.split()]


def wait_port(port, timeout=10):
    import socket
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def start(cmd, core, **kw):
    return subprocess.Popen(["taskset", "-c", str(core)] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def nginx_conf(d, name, body):
    conf = d / f"{name}.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {d}/{name}.pid; error_log {d}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; {body} }}
""")
    return conf


def parse_wrk(out):
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, u = float(m.group(1)), m.group(2)
        return v * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs = (int(errors.group(1)) if errors else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return reqs, rps, lat("50"), lat("99"), errs


JWT_SECRET = "bench-secret-of-at-least-32-bytes"


def jwt_hs256():
    """An HS256 token for the chain scenario, made with the standard library only."""
    import base64, hashlib, hmac, json as js
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(js.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(js.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
    sig = b64(hmac.new(JWT_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def drive(scenario, conns, duration, port):
    """Runs the load generator for one cell on core 1; returns its output."""
    if scenario == "chain":
        # Weir: jwt-auth (cached token) + local rate limit + metrics + access log to a file.
        # nginx and HAProxy proxy the same path plainly: the goal is >= 0.8x their throughput.
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "-H", f"Authorization: Bearer {jwt_hs256()}", f"http://127.0.0.1:{port}/chain/"]
    elif scenario == "plain":
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/"]
    elif scenario == "tls-h1":
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", f"https://127.0.0.1:{port + TLS_OFFSET}/"]
    elif scenario == "tls-handshake":
        # A new connection (full handshake) for every request: req/s = handshakes/s.
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "-H", "Connection: close", f"https://127.0.0.1:{port + TLS_OFFSET}/"]
    elif scenario == "tls-h2":
        cmd = ["h2load", "-D", str(duration), "-c", str(min(conns, 64)), "-m", "10", "-t", "1", f"https://127.0.0.1:{port + TLS_OFFSET}/"]
    else:
        sys.exit(f"unknown scenario {scenario}")
    return subprocess.run(["taskset", "-c", "1"] + cmd, capture_output=True, text=True).stdout


def parse_h2load(out):
    reqs = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    unit = lambda v, u: float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
    mean = unit(m.group(5), m.group(6)) if m else 0.0
    failed = int(re.search(r"(\d+) failed", out).group(1))
    # h2load reports mean and max, not percentiles: both columns show the mean.
    return reqs, rps, mean, mean, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", default="64,256")
    ap.add_argument("--only", default="weir,nginx,haproxy")
    ap.add_argument("--out", default=str(ROOT / "bench/out"))
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL:K=V[,K=V]",
                    help="also run Weir with these environment settings, e.g. purge0:MIMALLOC_PURGE_DELAY=0")
    ap.add_argument("--scenarios", default="plain", help="comma list of plain, chain, tls-h1, tls-handshake, tls-h2")
    args = ap.parse_args()
    import socket
    for port in (UP_PORT, WEIR_PORT, NGINX_PORT, HAPROXY_PORT) + tuple(p + TLS_OFFSET for p in (WEIR_PORT, NGINX_PORT, HAPROXY_PORT)):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            sys.exit(f"port {port} is in use: stop whatever listens there (an earlier bench run?) and retry")
        except OSError:
            pass
    d = Path(tempfile.mkdtemp(prefix="weir-bench-"))
    procs = []
    try:
        up = nginx_conf(d, "upstream", f"server {{ listen 127.0.0.1:{UP_PORT} reuseport backlog=4096; location / {{ return 200 'ok'; }} }}")
        procs.append(start(["nginx", "-c", str(up), "-p", str(d)], 1))
        wait_port(UP_PORT)

        crt, key = d / "cert.pem", d / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost", "-days", "2", "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
        (d / "combined.pem").write_text(crt.read_text() + key.read_text())
        proxies = {}
        def weir_config(name, port):
            cfg = d / f"{name}.yaml"
            cfg.write_text(f"""
listeners:
  - {{ name: bench, address: 127.0.0.1:{port} }}
  - {{ name: bench-tls, address: 127.0.0.1:{port + TLS_OFFSET}, tls: {{ certificates: [{{ cert: "{crt}", key: "{key}" }}] }} }}
routes:
  - {{ name: all, upstream: up }}
  - name: chain
    match: {{ path: {{ prefix: /chain }} }}
    upstream: up
    plugins:
      - {{ name: jwt-auth, config: {{ keys: [{{ alg: HS256, secret: {JWT_SECRET} }}] }} }}
      - {{ name: rate-limit, config: {{ requests: 1000000000, window: 1s, key: {{ consumer: {{}} }} }} }}
      - {{ name: access-log, config: {{ sink: {{ file: {{ path: "{d}/access.log" }} }} }} }}
upstreams:
  - name: up
    load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {UP_PORT} }}] }}
    pool: {{ max_connections: 1024, max_idle: 512 }}
""")
            return cfg

        # Each variant is Weir again with environment settings, on its own ports.
        weirs = [("weir", WEIR_PORT, {})] if "weir" in args.only else []
        for i, v in enumerate(args.variant):
            label, _, assigns = v.partition(":")
            env = dict(a.split("=", 1) for a in assigns.split(",") if a)
            weirs.append((f"weir-{label}", WEIR_PORT + 3 + i, env))
        for name, port, env in weirs:
            p = start([str(WEIR), "standalone", "-c", str(weir_config(name, port)), "--workers", "1"], 0,
                      env={**os.environ, "RUST_LOG": "warn", **env})
            procs.append(p)
            proxies[name] = (p, port)
        if "nginx" in args.only:
            conf = nginx_conf(d, "proxy", f"""
upstream up {{ server 127.0.0.1:{UP_PORT}; keepalive 512; }}
server {{ listen 127.0.0.1:{NGINX_PORT} backlog=4096; listen 127.0.0.1:{NGINX_PORT + TLS_OFFSET} ssl http2 backlog=4096;
  ssl_certificate {crt}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;
  location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; }} }}""")
            p = start(["nginx", "-c", str(conf), "-p", str(d)], 0)
            procs.append(p)
            proxies["nginx"] = (p, NGINX_PORT)
        if "haproxy" in args.only and shutil.which("haproxy"):
            conf = d / "haproxy.cfg"
            conf.write_text(f"""
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend fe
  bind 127.0.0.1:{HAPROXY_PORT}
  bind 127.0.0.1:{HAPROXY_PORT + TLS_OFFSET} ssl crt {d}/combined.pem alpn h2,http/1.1
  default_backend be
backend be
  server s1 127.0.0.1:{UP_PORT}
""")
            p = start(["haproxy", "-f", str(conf)], 0)
            procs.append(p)
            proxies["haproxy"] = (p, HAPROXY_PORT)
        for _, (_, port) in proxies.items():
            wait_port(port)
        # Warm-up: pools filled, pages touched.
        for name, (_, port) in proxies.items():
            subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d2s", f"http://127.0.0.1:{port}/"], capture_output=True)

        conns = [int(c) for c in args.conns.split(",")]
        scenarios = args.scenarios.split(",")
        cells = [(sc, c) for sc in scenarios for c in conns]
        results = {(n, sc, c): [] for n in proxies for (sc, c) in cells}
        for r in range(args.rounds):
            for sc, c in cells:
                for name, (p, port) in proxies.items():
                    pids = tree(p.pid)
                    before, sys_before = cpu_seconds(pids), cpu_seconds(pids, "sys")
                    out = drive(sc, c, args.duration, port)
                    cpu = cpu_seconds(pids) - before
                    sys_cpu = cpu_seconds(pids, "sys") - sys_before
                    reqs, rps, p50, p99, errs = parse_h2load(out) if sc == "tls-h2" else parse_wrk(out)
                    results[(name, sc, c)].append(dict(reqs=reqs, rps=rps, p50=p50, p99=p99, errors=errs, cpu=cpu, us_per_req=cpu / max(reqs, 1) * 1e6, sys_us_per_req=sys_cpu / max(reqs, 1) * 1e6, rss_mib=rss_kib(pids) / 1024))
                    print(f"round {r+1} {sc:<13} c={c:<4} {name:<8} {rps:>9.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  cpu/req {cpu / max(reqs,1) * 1e6:5.1f} us (kernel {sys_cpu / max(reqs,1) * 1e6:4.1f})  errors {errs}", flush=True)

        def med(xs):
            xs = sorted(xs)
            return xs[len(xs) // 2]
        lines = [f"# Proxy comparison, {time.strftime('%Y-%m-%d %H:%M')}", "",
                 f"Machine: {os.cpu_count()} cores, `{platform_cpu()}`; {args.rounds} rounds x {args.duration}s per cell, medians; proxies pinned to core 0, upstream nginx + load generator on core 1.", "",
                 "| scenario | conns | proxy | req/s | p50 ms | p99 ms | CPU µs/req | kernel µs/req | RSS MiB | errors | req/s vs nginx | CPU/req vs nginx |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        summary = {}
        for sc, c in cells:
            base = results.get(("nginx", sc, c))
            for name in proxies:
                rs = results[(name, sc, c)]
                m = {k: med([x[k] for x in rs]) for k in rs[0]}
                summary[f"{name}/{sc}/{c}"] = m
                rr = rc = "-"
                if base:
                    b = {k: med([x[k] for x in base]) for k in base[0]}
                    rr, rc = f"{m['rps'] / max(b['rps'], 1e-9):.2f}x", f"{m['us_per_req'] / max(b['us_per_req'], 1e-9):.2f}x"
                lines.append(f"| {sc} | {c} | {name} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['us_per_req']:.1f} | {m['sys_us_per_req']:.1f} | {m['rss_mib']:.1f} | {sum(x['errors'] for x in rs)} | {rr} | {rc} |")
        report = "\n".join(lines) + "\n"
        print("\n" + report)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "latest.md").write_text(report)
        (out / "latest.json").write_text(json.dumps(summary, indent=2))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


def platform_cpu():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
