#!/usr/bin/env python3
"""DNS change propagation benchmark: from an A record's change to every gateway routing to the
new address.

Starts dnsmasq on a high port of 127.0.0.1 (answers from a hosts file, TTL 0), one
`weir echo-server` listening on 127.0.0.1:P and 127.0.0.2:P, and N `weir standalone` gateways
(`--workers 1`) whose upstream finds its endpoint by DNS (`min_ttl`, default 100ms). Then flips
the record between the two addresses `--changes` times (rewrite the file, SIGHUP dnsmasq); each
change is timed until every gateway's answer comes from the new address (the echo server names
the address it was reached at). Reports p50/p99. A gateway polls DNS, so the time is bounded
below by the record's TTL clamped to `min_ttl`: expect about min_ttl/2 at p50 and min_ttl plus
the apply at p99.

With `--upstreams U` the gateways also discover U-1 other upstreams of `--endpoints E` A
records each (never dialled, asked every 5 s), to show that a change costs the same whatever
else a gateway watches.

usage: bench/dns_propagation.py [--weir target/release/weir] [--gateways 10] [--changes 100]
                                [--min-ttl 100ms] [--upstreams 1] [--endpoints 10]
                                [--out bench/out/dns-propagation.json]
Everything stops by itself; only loopback is used.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from propagation import free_port, pct, report, stop_all, wait_until  # noqa: E402


def answered_by(port):
    """The address the echo server behind the gateway on `port` was reached at, or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
            return json.loads(r.read())["server"].rsplit(":", 1)[0]
    except Exception:  # noqa: BLE001 - a refused or failed request is "not yet"
        return None


def start_dns(tmp, hosts):
    """dnsmasq on a port free for UDP and TCP; returns (process, port)."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    for _ in range(5):
        port = free_port()
        p = subprocess.Popen([binary, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                              "--bind-interfaces", "--listen-address=127.0.0.1", "--user=root", "--local-ttl=0",
                              "--log-facility=-", f"--port={port}", f"--pid-file={tmp}/dnsmasq.pid",
                              f"--addn-hosts={hosts}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 5
        while time.time() < deadline and p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return p, port
            except OSError:
                time.sleep(0.02)
        p.kill()
        p.wait()
    sys.exit("dnsmasq did not start (apt-get install dnsmasq-base)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--gateways", type=int, default=10)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--min-ttl", default="100ms")
    ap.add_argument("--upstreams", type=int, default=1)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--out")
    a = ap.parse_args()
    a.weir = os.path.abspath(a.weir)
    tmp = tempfile.mkdtemp(prefix="weir-dns-")
    hosts = os.path.join(tmp, "hosts")
    others = [f"127.1.{k // 250}.{k % 250 + 1} o{u}.bench.test\n"
              for u in range(1, a.upstreams) for k in range(a.endpoints)]

    def write_hosts(address):
        with open(hosts + ".tmp", "w") as f:
            f.write(f"{address} svc.bench.test\n")
            f.writelines(others)
        os.replace(hosts + ".tmp", hosts)

    write_hosts("127.0.0.1")
    procs = []
    log = open(os.path.join(tmp, "logs.txt"), "w")
    print(f"logs: {tmp}/logs.txt", file=sys.stderr)
    try:
        dns, dns_port = start_dns(tmp, hosts)
        procs.append(dns)
        up = free_port()
        procs.append(subprocess.Popen([a.weir, "echo-server", "-l", f"127.0.0.1:{up}", "-l", f"127.0.0.2:{up}"],
                                      stdout=subprocess.DEVNULL, stderr=log))
        ports = []
        for i in range(a.gateways):
            port = free_port()
            cfg = os.path.join(tmp, f"g{i}.yaml")
            server = f'server: "127.0.0.1:{dns_port}"'
            with open(cfg, "w") as f:
                f.write(f"""listeners: [{{ name: main, address: "127.0.0.1:{port}" }}]
routes: [{{ name: all, upstream: svc }}]
upstreams:
  - name: svc
    discovery:
      dns: {{ name: svc.bench.test, port: {up}, {server}, min_ttl: {a.min_ttl}, max_ttl: 1s }}
""")
                for u in range(1, a.upstreams):
                    f.write(f"  - {{ name: o{u}, discovery: {{ dns: {{ name: o{u}.bench.test, port: 9, {server}, "
                            f"min_ttl: 5s, max_ttl: 5s }} }} }}\n")
            procs.append(subprocess.Popen([a.weir, "standalone", "-c", cfg, "--workers", "1"], cwd=tmp,
                                          stdout=subprocess.DEVNULL, stderr=log,
                                          env={"RUST_LOG": "warn", **os.environ}))
            ports.append(port)
        for p in ports:
            wait_until(lambda p=p: answered_by(p) == "127.0.0.1", 60, f"the gateway on {p}")
        times = []
        current = "127.0.0.1"
        for _ in range(a.changes):
            current = "127.0.0.2" if current == "127.0.0.1" else "127.0.0.1"
            write_hosts(current)
            t = time.perf_counter()
            dns.send_signal(signal.SIGHUP)
            waiting = set(ports)
            while waiting:
                waiting = {p for p in waiting if answered_by(p) != current}
                if time.perf_counter() - t > 10:
                    sys.exit(f"gateways {sorted(waiting)} still route to the old address after 10s")
            times.append((time.perf_counter() - t) * 1000)
        result = {
            "gateways": a.gateways, "changes": a.changes, "min_ttl": a.min_ttl,
            "upstreams": a.upstreams, "endpoints_each_other": a.endpoints if a.upstreams > 1 else 0,
            "propagation_ms": {"p50": round(pct(times, 50), 2), "p99": round(pct(times, 99), 2),
                               "max": round(max(times), 2)},
        }
        report(result, a.out)
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
