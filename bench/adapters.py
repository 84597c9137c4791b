#!/usr/bin/env python3
"""Apply-to-serving time through each kind of gateway: Weir, nginx and HAProxy (adapters).

Starts an echo upstream, `weir control-plane`, one `weir gateway`, `weir adapter nginx` and
`weir adapter haproxy` on 127.0.0.1, loads R routes, then changes one route `--applies` times
(PUT, no wait) and measures, for each member, the time from the call until that member serves
the changed route (polled every millisecond on its own thread). Reports p50/p99 per kind.

usage: bench/adapters.py [--weir target/release/weir] [--routes 1000] [--applies 50]
                         [--out bench/out/adapters-R.json]
Everything stops by itself; only loopback is used. Needs nginx and haproxy on PATH.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from propagation import call, free_port, get, pct, report, stop_all, wait_until  # noqa: E402


def serves_after(port, path, t0, out, key):
    while get(f"http://127.0.0.1:{port}{path}", timeout=2) != 200:
        if time.perf_counter() - t0 > 30:
            out[key] = None
            return
        time.sleep(0.001)
    out[key] = (time.perf_counter() - t0) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--routes", type=int, default=1000)
    ap.add_argument("--applies", type=int, default=50)
    ap.add_argument("--out")
    a = ap.parse_args()
    a.weir = os.path.abspath(a.weir)
    procs, tmp = [], tempfile.mkdtemp(prefix="weir-adapters-")
    log = open(os.path.join(tmp, "logs.txt"), "w")
    print(f"logs: {tmp}/logs.txt", file=sys.stderr)

    def spawn(*args):
        p = subprocess.Popen([a.weir, *args], cwd=tmp, stdout=subprocess.DEVNULL, stderr=log,
                             env={"RUST_LOG": "warn", **os.environ})
        procs.append(p)
        return p

    members = {}
    try:
        echo = free_port()
        spawn("echo-server", "-l", f"127.0.0.1:{echo}")
        grpc, api = free_port(), free_port()
        spawn("control-plane", "--store", "redb:cp.redb", "--grpc-address", f"127.0.0.1:{grpc}",
              "--admin-address", f"127.0.0.1:{api}")
        base, cp = f"http://127.0.0.1:{api}", f"http://127.0.0.1:{grpc}"
        wait_until(lambda: get(base + "/healthz") == 200, 10, "the control plane")
        ups = {"kind": "Upstream", "name": "echo",
               "body": {"name": "echo", "load_balancer": {"endpoints": [{"address": "127.0.0.1", "port": echo}]}}}
        routes = [{"kind": "Route", "name": f"r{i}",
                   "body": {"name": f"r{i}", "match": {"path": {"exact": f"/r/{i}"}}, "upstream": "echo"}}
                  for i in range(a.routes)]
        st, v = call("POST", base + "/api/v1/apply", {"resources": [ups, *routes]})
        assert st in (200, 201), v
        members["weir"] = free_port()
        spawn("gateway", "--id", "weir", "--control-plane", cp, "--listen", f"127.0.0.1:{members['weir']}",
              "--state-dir", "weir", "--workers", "1")
        for kind in ("nginx", "haproxy"):
            members[kind] = free_port()
            spawn("adapter", kind, "--id", kind, "--control-plane", cp, "--config-dir", os.path.join(tmp, kind),
                  "--listen", f"public=127.0.0.1:{members[kind]}", "--status-address", f"127.0.0.1:{free_port()}",
                  "--workers", "1")
        for kind, port in members.items():
            wait_until(lambda: get(f"http://127.0.0.1:{port}/r/0") == 200, 120, kind)
        times = {k: [] for k in members}
        for k in range(a.applies):
            body = {"match": {"path": {"exact": f"/moved/{k}"}}, "upstream": "echo"}
            got = {}
            t0 = time.perf_counter()
            st, v = call("PUT", base + "/api/v1/routes/r0", body)
            assert st == 200, v
            threads = [threading.Thread(target=serves_after, args=(port, f"/moved/{k}", t0, got, kind))
                       for kind, port in members.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for kind, ms in got.items():
                assert ms is not None, f"{kind} did not serve change {k}"
                times[kind].append(ms)
        result = {"routes": a.routes, "applies": a.applies,
                  "apply_to_serving_ms": {kind: {"p50": round(pct(t, 50), 1), "p99": round(pct(t, 99), 1)}
                                          for kind, t in times.items()}}
        report(result, a.out)
    finally:
        stop_all(procs)
        for kind in ("nginx", "haproxy"):
            try:
                pid = open(os.path.join(tmp, kind, f"{kind}.pid")).read().strip()
                subprocess.run(["kill", "-TERM", pid], check=False)
            except OSError:
                pass


if __name__ == "__main__":
    main()
