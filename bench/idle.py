#!/usr/bin/env python3
"""Memory of idle keep-alive clients: Weir vs nginx holding the same N connections.

Each proxy (one worker) gets N client connections; each sends one request, reads its answer
and then stays open, idle. RSS is read before and after (the proxies' own processes). Traffic
goes to 127.0.0.1 only and the run stops by itself.
Usage: bench/idle.py [--conns 10000]   (builds nothing: uses target/release/weir)
"""
import argparse, resource, selectors, socket, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import WEIR, rss_kib, start, tree, wait_port  # noqa: E402

UP, WEIR_PORT, NGINX_PORT = 18400, 18401, 18402


def nginx_conf(d, name, body, conns):
    conf = d / f"{name}.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {d}/{name}.pid; error_log {d}/{name}.err warn; worker_rlimit_nofile {conns + 100};
events {{ worker_connections {conns}; }}
http {{ access_log off; keepalive_requests 1000000; {body} }}
""")
    return conf


def hold(port, n):
    """Opens n connections, one request each, and returns them still open."""
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    answered, end = 0, time.time() + 60
    while answered < n and time.time() < end:
        for key, _ in sel.select(1):
            if key.fileobj.recv(4096):
                answered += 1
            sel.unregister(key.fileobj)
    return socks, answered


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=10000)
    a = ap.parse_args()
    want = a.conns * 2 + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    d = Path(tempfile.mkdtemp(prefix="weir-idle-"))
    up = start(["nginx", "-c", nginx_conf(d, "up", f"server {{ listen 127.0.0.1:{UP}; location / {{ return 200 'ok'; }} }}", 4096), "-p", str(d)], 1)
    (d / "weir.yaml").write_text(
        f"listeners: [{{ name: b, address: 127.0.0.1:{WEIR_PORT}, limits: {{ max_connections: {want}, idle_timeout: 600s }} }}]\n"
        "routes: [{ name: all, upstream: up }]\n"
        f"upstreams: [{{ name: up, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {UP} }}] }} }}]\n"
    )
    proxies = {
        "weir": start([str(WEIR), "standalone", "-c", str(d / "weir.yaml"), "--workers", "1"], 0),
        "nginx": start(["nginx", "-c", nginx_conf(d, "proxy", f"""
            upstream up {{ server 127.0.0.1:{UP}; keepalive 64; }}
            server {{ listen 127.0.0.1:{NGINX_PORT}; keepalive_timeout 600s; keepalive_requests 100000;
              location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""",
            want), "-p", str(d)], 0),
    }
    ports = {"weir": WEIR_PORT, "nginx": NGINX_PORT}
    try:
        for name, port in ports.items():
            wait_port(port)
        print(f"| proxy | RSS before MiB | RSS holding {a.conns} idle MiB | per connection KiB | answered |")
        print("|---|---|---|---|---|")
        for name, port in ports.items():
            pids = tree(proxies[name].pid)
            before = rss_kib(pids)
            socks, answered = hold(port, a.conns)
            time.sleep(1)
            held = rss_kib(pids)
            print(f"| {name} | {before / 1024:.1f} | {held / 1024:.1f} | {(held - before) / a.conns:.2f} | {answered} |", flush=True)
            for s in socks:
                s.close()
    finally:
        for p in list(proxies.values()) + [up]:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
