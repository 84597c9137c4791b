#!/usr/bin/env python3
"""Time from process start to ready, and memory at idle, for `weir standalone` with 10 and
10,000 routes (docs/operations.md).

Ready is the first 200 from /readyz: the config is parsed, validated, compiled and its
listeners bound. Idle memory is the RSS a second after that, with no traffic.

Usage: bench/startup.py [--runs 5]   (needs target/release/weir: cargo build --release --bin weir)
       bench/startup.py --image weir:0.1.0   (the container image of scripts/image.sh, run by
                                              podman as in production: not root, read-only)
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import WEIR, rss_kib, tree  # noqa: E402

ADMIN, PUBLIC = 19911, 19912


def config(routes):
    lines = [f"admin: {{ address: 127.0.0.1:{ADMIN} }}",
             f"listeners: [{{ name: public, address: 127.0.0.1:{PUBLIC} }}]",
             "upstreams:",
             "  - { name: app, load_balancer: { endpoints: [{ address: 127.0.0.1, port: 9 }] } }",
             "routes:"]
    for i in range(routes):
        lines.append(f"  - {{ name: r{i}, match: {{ path: {{ prefix: /r{i}/ }} }}, upstream: app }}")
    return "\n".join(lines) + "\n"


def ready():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def once(path):
    t0 = time.monotonic()
    p = subprocess.Popen([str(WEIR), "standalone", "-c", str(path), "--workers", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not ready():
            if p.poll() is not None or time.monotonic() - t0 > 60:
                sys.exit("weir did not become ready")
            time.sleep(0.002)
        took = time.monotonic() - t0
        time.sleep(1)
        return took, rss_kib(tree(p.pid))
    finally:
        p.terminate()
        p.wait()


def once_image(path, tag):
    """The same, from `podman run` of the image to ready (the runtime's own start included)."""
    name = f"weir-startup-{path.stem}"
    t0 = time.monotonic()
    subprocess.run(["podman", "run", "-d", "--rm", "--name", name, "--runtime", "runc", "--network", "host",
                    "--read-only", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096",
                    "-v", f"{path.parent}:/etc/weir:ro", tag,
                    "standalone", "-c", f"/etc/weir/{path.name}", "--workers", "1"],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        while not ready():
            if time.monotonic() - t0 > 60:
                sys.exit("the container did not become ready")
            time.sleep(0.002)
        took = time.monotonic() - t0
        time.sleep(1)
        pid = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", name],
                             check=True, capture_output=True, text=True).stdout.strip()
        return took, rss_kib(tree(int(pid)))
    finally:
        subprocess.run(["podman", "rm", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--image", help="time this container image (podman) instead of the release binary")
    a = ap.parse_args()
    if not a.image and not WEIR.exists():
        sys.exit(f"{WEIR} is missing: cargo build --release --bin weir")
    with tempfile.TemporaryDirectory() as d:
        # The image runs as uid 65532: it must be able to read the mounted config.
        Path(d).chmod(0o755)
        print("routes   ready ms (median, max)   idle RSS MiB")
        for routes in (10, 10_000):
            path = Path(d) / f"{routes}.yaml"
            path.write_text(config(routes))
            runs = [once_image(path, a.image) if a.image else once(path) for _ in range(a.runs)]
            times = [t * 1e3 for t, _ in runs]
            rss = statistics.median(r for _, r in runs) / 1024
            print(f"{routes:>6}   {statistics.median(times):>8.0f} {max(times):>6.0f}            {rss:>6.1f}")


if __name__ == "__main__":
    main()
