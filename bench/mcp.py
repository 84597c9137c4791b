#!/usr/bin/env python3
"""MCP through Weir against the server directly, in one run on 127.0.0.1.

Starts fixture MCP servers (crates/weir/tests/python/mcp_server.py, the Python SDK) and one
`weir standalone` with an MCP route in front of them, then measures:
  - `tools/call` (add) latency, direct and through Weir, p50/p99 over --calls calls, in the
    stateless revision (one keep-alive connection, JSON answers), and Weir's CPU time per call;
  - the same in the sessionful revision (a session through Weir holds one upstream session);
  - Weir's RSS before and after --sessions sessions are begun (`initialize`), and the servers'
    share of that work (the ids Weir hands out are sealed: it keeps no table of them), then
    with all of them listening at once (each holding its GET stream open);
  - `tools/list` latency direct, with 1 server and with --fanout servers behind the route, and
    with --fanout servers whose lists say `ttlMs` 60000, `cacheScope: public` (Weir keeps them).
Prints one JSON object (and writes it to --out).

usage: bench/mcp.py [--weir target/release/weir] [--calls 500] [--sessions 1000] [--fanout 10]
Everything stops by itself; only loopback is used. Needs `pip install mcp==2.3.0` (it brings httpx2).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import httpx2 as httpx  # the HTTP client the mcp SDK ships with

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "crates/weir/tests/python/mcp_server.py")
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p / 100))], 3) if xs else None


def start_server(name, extra=()):
    p = subprocess.Popen([sys.executable, FIXTURE, "--name", name, "--only", "both", *extra], stdout=subprocess.PIPE, text=True)
    port = int(p.stdout.readline().split()[1])
    return p, port


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_weir(weir, servers, tmp):
    listen, admin = free_port(), free_port()
    lines = "".join(f"        - {{ name: {n}, url: \"http://127.0.0.1:{p}/mcp\" }}\n" for n, p in servers)
    cfg = os.path.join(tmp, f"weir-{servers[0][0]}-{len(servers)}.yaml")
    with open(cfg, "w") as f:
        f.write(f"listeners:\n  - {{ name: main, address: 127.0.0.1:{listen} }}\nadmin: {{ address: 127.0.0.1:{admin} }}\n"
                f"routes:\n  - name: tools\n    match: {{ path: {{ exact: /mcp }} }}\n    mcp:\n"
                f"      session_key: \"bench-key-bench-key-bench-key-0123456789\"\n      servers:\n{lines}")
    p = subprocess.Popen([weir, "standalone", "-c", cfg, "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=1)
            return p, listen
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("weir did not start")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stateless(client, url, method, params, name=None):
    headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": method, "accept": "application/json, text/event-stream"}
    if name:
        headers["mcp-name"] = name
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": META}}
    r = client.post(url, json=body, headers=headers)
    r.raise_for_status()
    return r


def timed(n, f):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def sessionful_call(client, url, sid, tool):
    h = {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25", "accept": "application/json, text/event-stream"}
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": {"a": 1, "b": 2}}}
    client.post(url, json=body, headers=h).raise_for_status()


def listen(port, sid):
    """Opens a session's GET stream on a raw socket and leaves it open (the caller closes it)."""
    import socket
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall((f"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nmcp-session-id: {sid}\r\n"
               "accept: text/event-stream\r\nmcp-protocol-version: 2025-11-25\r\n\r\n").encode())
    return s


def initialize(client, url):
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
    r = client.post(url, json=body, headers={"accept": "application/json, text/event-stream"})
    r.raise_for_status()
    return r.headers["mcp-session-id"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--fanout", type=int, default=10)
    ap.add_argument("--out")
    a = ap.parse_args()
    procs, res = [], {}
    try:
        with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=30) as c:
            servers = []
            for i in range(a.fanout):
                p, port = start_server(f"s{i}")
                procs.append(p)
                servers.append((f"s{i}", port))
            direct = f"http://127.0.0.1:{servers[0][1]}/mcp"
            w1, port1 = start_weir(a.weir, servers[:1], tmp)
            procs.append(w1)
            via = f"http://127.0.0.1:{port1}/mcp"
            call = lambda url, tool: stateless(c, url, "tools/call", {"name": tool, "arguments": {"a": 1, "b": 2}}, tool)  # noqa: E731
            for _ in range(50):
                call(direct, "add"), call(via, "s0__add")
            d = timed(a.calls, lambda: call(direct, "add"))
            cpu0 = cpu_seconds(w1.pid)
            v = timed(a.calls, lambda: call(via, "s0__add"))
            cpu = (cpu_seconds(w1.pid) - cpu0) / a.calls * 1e6
            res["stateless_call_ms"] = {"direct": {"p50": pct(d, 50), "p99": pct(d, 99)}, "weir": {"p50": pct(v, 50), "p99": pct(v, 99)},
                                        "added_p50": round(pct(v, 50) - pct(d, 50), 3), "weir_cpu_us_per_call": round(cpu, 1)}
            sid_d, sid_v = initialize(c, direct), initialize(c, via)
            d = timed(a.calls, lambda: sessionful_call(c, direct, sid_d, "add"))
            v = timed(a.calls, lambda: sessionful_call(c, via, sid_v, "s0__add"))
            res["sessionful_call_ms"] = {"direct": {"p50": pct(d, 50), "p99": pct(d, 99)}, "weir": {"p50": pct(v, 50), "p99": pct(v, 99)},
                                         "added_p50": round(pct(v, 50) - pct(d, 50), 3)}
            before = rss_kib(w1.pid)
            t0 = time.perf_counter()
            for _ in range(a.sessions):
                initialize(c, via)
            took = time.perf_counter() - t0
            after = rss_kib(w1.pid)
            sids = [initialize(c, via) for _ in range(a.sessions)]
            streams = [listen(port1, sid) for sid in sids]
            for st in streams:
                st.settimeout(5)
                st.recv(256)  # the response head: the stream is open at Weir
            listening = rss_kib(w1.pid)
            for st in streams:
                st.close()
            res["sessions"] = {"count": a.sessions, "weir_rss_before_kib": before, "weir_rss_after_kib": after,
                               "initialize_ms_mean": round(took / a.sessions * 1000, 3),
                               "weir_rss_all_listening_kib": listening,
                               "per_listening_session_kib": round((listening - after) / a.sessions, 2)}
            w10, port10 = start_weir(a.weir, servers, tmp)
            procs.append(w10)
            via10 = f"http://127.0.0.1:{port10}/mcp"
            lst = lambda url: stateless(c, url, "tools/list", {})  # noqa: E731
            for _ in range(20):
                lst(via), lst(via10)
            kept = []
            for i in range(a.fanout):
                p, port = start_server(f"k{i}", ["--list-ttl", "60000", "--list-scope", "public"])
                procs.append(p)
                kept.append((f"k{i}", port))
            wk, portk = start_weir(a.weir, kept, tmp)
            procs.append(wk)
            viak = f"http://127.0.0.1:{portk}/mcp"
            lst(viak)
            alone = timed(a.calls // 5, lambda: lst(direct))
            one = timed(a.calls // 5, lambda: lst(via))
            many = timed(a.calls // 5, lambda: lst(via10))
            cpu0 = cpu_seconds(wk.pid)
            cached = timed(a.calls // 5, lambda: lst(viak))
            cpu_cached = (cpu_seconds(wk.pid) - cpu0) / (a.calls // 5) * 1e6
            res["tools_list_ms"] = {"direct": {"p50": pct(alone, 50), "p99": pct(alone, 99)},
                                    "servers_1": {"p50": pct(one, 50), "p99": pct(one, 99)},
                                    f"servers_{a.fanout}": {"p50": pct(many, 50), "p99": pct(many, 99)},
                                    f"servers_{a.fanout}_kept": {"p50": pct(cached, 50), "p99": pct(cached, 99),
                                                                 "weir_cpu_us_per_list": round(cpu_cached, 1)}}
    finally:
        for p in procs:
            p.kill()
    print(json.dumps(res, indent=2))
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
