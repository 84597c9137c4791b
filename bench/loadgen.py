#!/usr/bin/env python3
"""Weir's load generator vs wrk against the same nginx (`return 200`), in one run.

Both use 2 threads and the same connection count, closed loop, alternating per round.
Prints requests/s for each and Weir's ratio to wrk. Traffic stays on 127.0.0.1.
Usage: bench/run.sh builds first; then python3 bench/loadgen.py [--duration 10] [--rounds 3]
"""
import argparse, re, subprocess, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 18010


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=64)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="weir-loadgen-"))
    conf = d / "nginx.conf"
    conf.write_text(f"""worker_processes 1; daemon off; pid {d}/n.pid; error_log {d}/err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{PORT} backlog=4096; location / {{ return 200 'ok'; }} }} }}""")
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(d)])
    scenario = d / "s.yaml"
    scenario.write_text(f"target: http://127.0.0.1:{PORT}\nrequests: [{{ path: / }}]\nconnections: {args.conns}\nduration: {args.duration}s\n")
    time.sleep(0.5)
    wrk, weir = [], []
    try:
        for r in range(args.rounds):
            out = subprocess.run(["wrk", "-t2", f"-c{args.conns}", f"-d{args.duration}s", f"http://127.0.0.1:{PORT}/"], capture_output=True, text=True).stdout
            wrk.append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))
            out = subprocess.run([str(ROOT / "target/release/weir"), "loadtest", str(scenario), "--threads", "2"], capture_output=True, text=True).stdout
            m = re.search(r"(\d+) requests in ([\d.]+)s", out)
            weir.append(int(m.group(1)) / float(m.group(2)))
            print(f"round {r + 1}: wrk {wrk[-1]:.0f} req/s, weir loadtest {weir[-1]:.0f} req/s", flush=True)
    finally:
        nginx.terminate()
        nginx.wait()
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"\nmedian: wrk {med(wrk):.0f} req/s, weir loadtest {med(weir):.0f} req/s, ratio {med(weir) / med(wrk):.2f}x")


if __name__ == "__main__":
    main()
