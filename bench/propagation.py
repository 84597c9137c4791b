#!/usr/bin/env python3
"""Config propagation benchmark: from an API change to every gateway serving it.

Starts an echo upstream, `weir control-plane` and N `weir gateway` processes on 127.0.0.1,
loads R routes, then changes one route `--applies` times with `PUT …?wait=10s` (the call
returns once every live gateway has ACKed, i.e. swapped the new config in) and checks each
gateway serves the change. Reports p50/p99 of that time, the validation-only time (dry run),
and the memory of the control plane and gateways.

usage: bench/propagation.py [--weir target/release/weir] [--gateways 10] [--routes 10000]
                            [--applies 100] [--out bench/out/propagation-R.json]
Everything stops by itself; only loopback is used.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(method, url, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_until(pred, within, what):
    deadline = time.time() + within
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.02)
    sys.exit(f"timed out waiting for {what}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def report(result, out):
    """Prints `result` and, with `out`, writes it there as JSON."""
    print(json.dumps(result, indent=2))
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=2)


def stop_all(procs):
    """SIGTERM to every process, then SIGKILL to any still running after 10 s."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--gateways", type=int, default=10)
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--applies", type=int, default=100)
    ap.add_argument("--out")
    a = ap.parse_args()
    a.weir = os.path.abspath(a.weir)

    procs = []
    tmp = tempfile.mkdtemp(prefix="weir-prop-")
    log = open(os.path.join(tmp, "logs.txt"), "w")
    print(f"logs: {tmp}/logs.txt", file=sys.stderr)

    def spawn(*args):
        p = subprocess.Popen([a.weir, *args], cwd=tmp, stdout=subprocess.DEVNULL, stderr=log,
                             env={"RUST_LOG": "warn", **os.environ})
        procs.append(p)
        return p

    try:
        echo = free_port()
        spawn("echo-server", "-l", f"127.0.0.1:{echo}")
        grpc, api = free_port(), free_port()
        cp = spawn("control-plane", "--store", "redb:cp.redb", "--grpc-address", f"127.0.0.1:{grpc}",
                   "--admin-address", f"127.0.0.1:{api}")
        base = f"http://127.0.0.1:{api}"
        wait_until(lambda: get(base + "/healthz") == 200, 10, "the control plane")

        ups = {"kind": "Upstream", "name": "echo",
               "body": {"name": "echo", "load_balancer": {"endpoints": [{"address": "127.0.0.1", "port": echo}]}}}
        routes = [{"kind": "Route", "name": f"r{i}",
                   "body": {"name": f"r{i}", "match": {"path": {"exact": f"/r/{i}"}}, "upstream": "echo"}}
                  for i in range(a.routes)]
        t = time.perf_counter()
        st, v = call("POST", base + "/api/v1/apply", {"resources": [ups, *routes]})
        initial_ms = (time.perf_counter() - t) * 1000
        assert st in (200, 201), v

        listen = []
        gws = []
        for i in range(a.gateways):
            port = free_port()
            listen.append(port)
            gws.append(spawn("gateway", "--id", f"g{i}", "--control-plane", f"http://127.0.0.1:{grpc}",
                             "--listen", f"127.0.0.1:{port}", "--state-dir", f"g{i}", "--workers", "1"))
        t = time.perf_counter()
        for port in listen:
            wait_until(lambda: get(f"http://127.0.0.1:{port}/r/0") == 200, 120, f"gateway on {port}")
        cold_ms = (time.perf_counter() - t) * 1000

        times, dry = [], []
        for k in range(a.applies):
            body = {"match": {"path": {"exact": f"/moved/{k}"}}, "upstream": "echo"}
            t = time.perf_counter()
            st, v = call("PUT", base + "/api/v1/routes/r0?dry_run=true", body)
            dry.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            st, v = call("PUT", base + "/api/v1/routes/r0?wait=10s", body)
            times.append((time.perf_counter() - t) * 1000)
            assert st == 200 and not v.get("pending_gateways"), v
            for port in listen:
                assert get(f"http://127.0.0.1:{port}/moved/{k}") == 200, (port, k)
        _, gwlist = call("GET", base + "/api/v1/gateways")
        assert all(g["status"] == "up" for g in gwlist), gwlist
        gw_rss = [rss_kib(p.pid) for p in gws]
        result = {
            "gateways": a.gateways, "routes": a.routes, "applies": a.applies,
            "initial_apply_ms": round(initial_ms, 1),
            "all_gateways_serving_after_start_ms": round(cold_ms, 1),
            "propagation_ms": {"p50": round(pct(times, 50), 2), "p99": round(pct(times, 99), 2),
                               "max": round(max(times), 2)},
            "validate_only_ms": {"p50": round(pct(dry, 50), 2), "p99": round(pct(dry, 99), 2)},
            "control_plane_rss_mib": round(rss_kib(cp.pid) / 1024, 1),
            "gateway_rss_mib": {"mean": round(sum(gw_rss) / len(gw_rss) / 1024, 1),
                                "max": round(max(gw_rss) / 1024, 1)},
        }
        report(result, a.out)
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
