#!/usr/bin/env python3
"""Registration propagation benchmark: from a registration (or its removal) to every gateway
serving with it.

Starts `weir control-plane` and N `weir gateway` processes on 127.0.0.1, declares U upstreams
that take registrations and registers E endpoints in each (U×E in all), then adds and removes
one more endpoint `--changes` times. Each change is timed from the REST call until every
gateway reports (by its ACK, sent once the new config is swapped in) the revision it made.
Reports p50/p99 of that time, and the memory per registered endpoint at the control plane and
at a gateway (RSS after the registrations minus before, divided by U×E).

usage: bench/registration.py [--weir target/release/weir] [--gateways 10] [--upstreams 1000]
                             [--endpoints 10] [--changes 100] [--out bench/out/registration-U-E.json]
Everything stops by itself; only loopback is used (registered endpoints are never dialled).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from propagation import call, free_port, get, pct, report, rss_kib, stop_all, wait_until  # noqa: E402


def revision_everywhere(base, gateways, rev, within=30):
    """Waits until every gateway reports `rev` applied; returns when it did."""
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        _, gws = call("GET", base + "/api/v1/gateways")
        if len(gws) == gateways and all(g["applied_revision"] >= rev for g in gws):
            return
        time.sleep(0.001)
    sys.exit(f"revision {rev} did not reach every gateway within {within}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--gateways", type=int, default=10)
    ap.add_argument("--upstreams", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--out")
    a = ap.parse_args()
    a.weir = os.path.abspath(a.weir)
    procs = []
    tmp = tempfile.mkdtemp(prefix="weir-reg-")
    log = open(os.path.join(tmp, "logs.txt"), "w")
    print(f"logs: {tmp}/logs.txt", file=sys.stderr)

    def spawn(*args):
        p = subprocess.Popen([a.weir, *args], cwd=tmp, stdout=subprocess.DEVNULL, stderr=log,
                             env={"RUST_LOG": "warn", **os.environ})
        procs.append(p)
        return p

    try:
        grpc, api = free_port(), free_port()
        cp = spawn("control-plane", "--store", "redb:cp.redb", "--grpc-address", f"127.0.0.1:{grpc}",
                   "--admin-address", f"127.0.0.1:{api}")
        base = f"http://127.0.0.1:{api}"
        wait_until(lambda: get(base + "/healthz") == 200, 10, "the control plane")
        ups = [{"kind": "Upstream", "name": f"u{i}",
                "body": {"name": f"u{i}", "discovery": {"registry": {}}}} for i in range(a.upstreams)]
        st, v = call("POST", base + "/api/v1/apply", {"resources": ups})
        assert st in (200, 201), v
        gws = []
        for i in range(a.gateways):
            gws.append(spawn("gateway", "--id", f"g{i}", "--control-plane", f"http://127.0.0.1:{grpc}",
                             "--listen", f"127.0.0.1:{free_port()}", "--state-dir", f"g{i}", "--workers", "1"))
        _, r = call("GET", base + "/api/v1/revision")
        revision_everywhere(base, a.gateways, r["revision"], 120)
        time.sleep(1)
        before_cp, before_gw = rss_kib(cp.pid), [rss_kib(p.pid) for p in gws]
        # U×E registrations, 1,000 to a revision (one apply each).
        regs = [{"kind": "Registration", "name": f"u{u}.127.0.0.1-{20000 + e}",
                 "body": {"name": f"u{u}.127.0.0.1-{20000 + e}", "upstream": f"u{u}", "address": "127.0.0.1",
                          "port": 20000 + e, "ttl": "10m"}}
                for u in range(a.upstreams) for e in range(a.endpoints)]
        t = time.perf_counter()
        for i in range(0, len(regs), 1000):
            st, v = call("POST", base + "/api/v1/apply", {"resources": regs[i:i + 1000]})
            assert st in (200, 201), v
        _, r = call("GET", base + "/api/v1/revision")
        revision_everywhere(base, a.gateways, r["revision"], 300)
        load_ms = (time.perf_counter() - t) * 1000
        time.sleep(1)
        after_cp, after_gw = rss_kib(cp.pid), [rss_kib(p.pid) for p in gws]
        n = max(1, len(regs))
        times = []
        body = {"address": "127.0.0.1", "port": 30000, "ttl": "10m"}
        for k in range(a.changes):
            t = time.perf_counter()
            if k % 2 == 0:
                st, v = call("POST", base + "/api/v1/upstreams/u0/registrations", body)
            else:
                st, v = call("DELETE", base + "/api/v1/registrations/u0.127.0.0.1-30000")
            assert st in (200, 201), v
            revision_everywhere(base, a.gateways, v["revision"])
            times.append((time.perf_counter() - t) * 1000)
        result = {
            "gateways": a.gateways, "upstreams": a.upstreams, "endpoints_each": a.endpoints,
            "registrations": len(regs), "changes": a.changes,
            "loading_all_registrations_ms": round(load_ms, 1),
            "propagation_ms": {"p50": round(pct(times, 50), 2), "p99": round(pct(times, 99), 2),
                               "max": round(max(times), 2)},
            "slowest_ms": [[k, round(t, 1)] for k, t in sorted(enumerate(times), key=lambda x: -x[1])[:5]],
            "control_plane_bytes_per_registration": round((after_cp - before_cp) * 1024 / n),
            "gateway_bytes_per_registration": round(
                (sum(after_gw) - sum(before_gw)) * 1024 / len(gws) / n),
            "control_plane_rss_mib": round(after_cp / 1024, 1),
            "gateway_rss_mib_mean": round(sum(after_gw) / len(gws) / 1024, 1),
        }
        report(result, a.out)
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
