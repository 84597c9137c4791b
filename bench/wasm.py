#!/usr/bin/env python3
"""The cost of a proxy-wasm plugin: the same header edits done by the built-in `headers` plugin
and by the `header-edit` package (plugins/examples/, the proxy-wasm Rust SDK), on one route,
in one run, against a route without plugins.

For each of plain / built-in / wasm, on one worker pinned to core 0 (wrk on core 1):
  - user-space instructions per request (callgrind; repeatable on a shared machine),
  - CPU microseconds per request (utime+stime over a wrk run).
Then the wasm package alone:
  - hot-update time: a new module (new sha256) and config written, until the new version answers,
    and RSS (anonymous and file-backed) before and after, each after some traffic and a second idle,
  - memory per loaded plugin: RSS with 1 vs 21 routes, each with its own instance.
Traffic goes to 127.0.0.1 only and the run stops by itself.
Usage: bench/wasm.py [--seconds 10] [--updates 100] [--only-updates]   (builds release Weir and the examples)
"""
import argparse, shutil, statistics, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, WEIR, cpu_seconds, nginx_conf, parse_wrk, rss_kib, rss_parts_kib, start, tree, wait_port  # noqa: E402

UP, PORT, ADMIN = 18500, 18501, 18502
EXAMPLES = ROOT / "plugins/examples"
EDITS = "{ request: { add: { x-bench: \"1\" } }, response: { add: { x-bench: \"1\" } } }"


PROCS = []


def run(cmd, core):
    """Starts `cmd` on `core`, remembered so an interrupted run leaves nothing behind."""
    p = start(cmd, core)
    PROCS.append(p)
    return p


def port_free(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        return True
    return False


def config(d, mode, routes=1, version=0):
    if mode == "plain":
        plugins = ""
    elif mode == "builtin":
        plugins = f"    plugins: [{{ name: headers, config: {EDITS} }}]\n"
    else:
        cfg = f"{{ response: {{ set: {{ x-version: \"{version}\" }} }} }}" if version else EDITS
        plugins = f"    plugins: [{{ name: header-edit, config: {cfg} }}]\n"
    extra = "".join(
        f"  - name: r{i}\n    match: {{ path: {{ prefix: /r{i}/ }} }}\n    upstream: up\n"
        f"    plugins: [{{ name: header-edit, config: {{ response: {{ add: {{ x-r: \"{i}\" }} }} }} }}]\n"
        for i in range(1, routes)
    )
    (d / "weir.yaml").write_text(
        f"admin: {{ address: 127.0.0.1:{ADMIN} }}\n"
        f"listeners: [{{ name: b, address: 127.0.0.1:{PORT} }}]\n"
        f"plugin_packages: [{d / 'header-edit'}]\n"
        f"routes:\n  - name: all\n    upstream: up\n{plugins}{extra}"
        f"upstreams: [{{ name: up, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {UP} }}] }} }}]\n"
    )
    return d / "weir.yaml"


def package(d):
    p = d / "header-edit"
    p.mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "header-edit/config.schema.json", p / "config.schema.json")
    # Under callgrind a callback runs ~50x slower than natively: a 1 s CPU cap keeps the
    # default 10 ms from interrupting it (which would count instance rebuilds, not requests).
    meta = (EXAMPLES / "header-edit/metadata.yaml").read_text()
    (p / "metadata.yaml").write_text(meta + "limits: { cpu: 1s }\n")
    shutil.copy(EXAMPLES / "target/wasm32-wasip1/release/header_edit.wasm", p / "plugin.wasm")
    return p


def wrk(seconds):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "--latency", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{PORT}/"],
                         capture_output=True, text=True).stdout
    return parse_wrk(out)


def cpu_per_request(d, mode, seconds):
    p = run([str(WEIR), "standalone", "-c", str(config(d, mode)), "--workers", "1"], 0)
    wait_served(30)
    wrk(2)  # warm-up
    pids = tree(p.pid)
    c0 = cpu_seconds(pids)
    reqs, rps, _, p99, errs = wrk(seconds)
    used = cpu_seconds(pids) - c0
    p.terminate(); p.wait()
    return used / reqs * 1e6, rps, p99, errs


def instructions(d, mode):
    out = d / f"cg.{mode}"
    vg = run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(WEIR), "standalone", "-c",
                str(config(d, mode)), "--workers", "1"], 0)
    wait_served(180)
    wrk(3)
    subprocess.run(["callgrind_control", "-z", str(vg.pid)], capture_output=True)
    reqs = wrk(10)[0]
    subprocess.run(["callgrind_control", "-d", str(vg.pid)], capture_output=True)
    time.sleep(1)
    vg.terminate(); vg.wait()
    total = 0
    for f in d.glob(f"cg.{mode}*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("summary:"):
                total += int(line.split()[1])
    return total / reqs


def variant(wasm, n):
    name, payload = b"weir-bench", n.to_bytes(4, "little")
    return wasm + bytes([0, 1 + len(name) + len(payload), len(name)]) + name + payload


def wait_served(timeout):
    """Until the config is applied (the listener binds before plugins are compiled)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("the gateway never served its config")


def header(name):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=5) as r:
        return r.headers.get(name)


def hot_updates(d, n):
    p = run([str(WEIR), "standalone", "-c", str(config(d, "wasm")), "--workers", "1"], 0)
    wait_served(30)
    base = (d / "header-edit/plugin.wasm").read_bytes()
    settle()
    rss0 = rss_kib(tree(p.pid))
    parts0 = rss_parts_kib(tree(p.pid))
    took = []
    marks = {}
    for v in range(1, n + 1):
        t0 = time.time()
        tmp = d / "header-edit/plugin.wasm.tmp"
        tmp.write_bytes(variant(base, v))
        tmp.rename(d / "header-edit/plugin.wasm")
        config(d, "wasm", version=v)
        while header("x-version") != str(v):
            time.sleep(0.005)
        took.append(time.time() - t0)
        if v in (1, 10, 25, 50, 100, 200) or v == n:
            marks[v] = rss_kib(tree(p.pid))
    settle()
    rss1 = rss_kib(tree(p.pid))
    parts1 = rss_parts_kib(tree(p.pid))
    print(f"anonymous {parts0[0] / 1024:.1f} -> {parts1[0] / 1024:.1f} MiB, "
          f"file-backed (the binary's pages) {parts0[1] / 1024:.1f} -> {parts1[1] / 1024:.1f} MiB")
    p.terminate(); p.wait()
    return statistics.median(took) * 1e3, max(took) * 1e3, rss0, rss1, marks


def settle():
    """Some traffic, then a second idle: RSS measured in the same state before and after."""
    for _ in range(200):
        header("x-version")
    time.sleep(1)


def per_plugin_memory(d):
    rss = []
    for routes in (1, 21):
        p = run([str(WEIR), "standalone", "-c", str(config(d, "wasm", routes=routes)), "--workers", "1"], 0)
        wait_served(60)
        time.sleep(0.5)
        rss.append(rss_kib(tree(p.pid)))
        p.terminate(); p.wait()
    return (rss[1] - rss[0]) / 20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--updates", type=int, default=100)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--only-updates", action="store_true", help="skip the per-request figures")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "weir"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1"], cwd=EXAMPLES, check=True)
    for port in (UP, PORT, ADMIN):
        if not port_free(port):
            sys.exit(f"port {port} is taken (a previous run still going?)")
    d = Path(tempfile.mkdtemp(prefix="weir-wasm-bench-"))
    package(d)
    up = start(["nginx", "-c", nginx_conf(d, "up", f"server {{ listen 127.0.0.1:{UP}; location / {{ return 200 'ok'; }} }}"), "-p", str(d)], 1)
    try:
        wait_port(UP)
        print("mode      instr/req   cpu µs/req   req/s    p99 ms  errors")
        base = {}
        for mode in [] if a.only_updates else ["plain", "builtin", "wasm"]:
            ir = instructions(d, mode)
            us, rps, p99, errs = cpu_per_request(d, mode, a.seconds)
            base[mode] = (ir, us)
            print(f"{mode:<9} {ir:>9.0f}   {us:>10.2f}   {rps:>7.0f}  {p99:>6.2f}  {errs}")
        if base:
            (bi, bu), (wi, wu) = base["builtin"], base["wasm"]
            print(f"wasm over built-in: {wi - bi:+.0f} instructions, {wu - bu:+.2f} µs CPU per request")
        med, worst, rss0, rss1, marks = hot_updates(d, a.updates)
        print(f"hot update ({a.updates}x, new module + config, until served): median {med:.0f} ms, max {worst:.0f} ms; "
              f"RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB")
        print("RSS after N updates (MiB): " + ", ".join(f"{v}: {k / 1024:.1f}" for v, k in sorted(marks.items())))
        print(f"memory per loaded plugin instance (20 more routes, one worker): {per_plugin_memory(d):.0f} KiB")
    finally:
        for p in PROCS + [up]:
            if p.poll() is None:
                p.terminate()
                p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
