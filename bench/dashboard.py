#!/usr/bin/env python3
"""Dashboard page weight and load time against a control plane with many gateways and routes.

Starts `weir control-plane`, applies R routes, has G gateways register and report (a Python
grpcio client from the repository's .proto, as in the tests), then opens the dashboard in
headless chromium (selenium) and measures: the time until the fleet table lists every gateway,
the bytes transferred for it (page and API answers), and the time until the resources view
lists the routes.

usage: bench/dashboard.py [--weir target/release/weir] [--gateways 100] [--routes 10000]
Needs chromium, chromedriver and selenium (scripts/deps.sh installs them). Loopback only.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "../crates/weir/tests/python"))
from propagation import call, free_port, get, wait_until  # noqa: E402
from dashboard import browser  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--gateways", type=int, default=100)
    ap.add_argument("--routes", type=int, default=10000)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="weir-dash-")
    grpc, api = free_port(), free_port()
    cp = subprocess.Popen([os.path.abspath(a.weir), "control-plane", "--store", "redb:cp.redb", "--grpc-address",
                           f"127.0.0.1:{grpc}", "--admin-address", f"127.0.0.1:{api}"], cwd=tmp,
                          stderr=subprocess.DEVNULL, env={"RUST_LOG": "warn", **os.environ})
    base = f"http://127.0.0.1:{api}"
    reports = None
    try:
        wait_until(lambda: get(base + "/healthz") == 200, 10, "the control plane")
        ups = {"kind": "Upstream", "name": "echo",
               "body": {"name": "echo", "load_balancer": {"endpoints": [{"address": "127.0.0.1", "port": 9}]}}}
        routes = [{"kind": "Route", "name": f"r{i}",
                   "body": {"name": f"r{i}", "match": {"path": {"exact": f"/r/{i}"}}, "upstream": "echo"}}
                  for i in range(a.routes)]
        st, v = call("POST", base + "/api/v1/apply", {"resources": [ups, *routes]})
        assert st in (200, 201), v
        reports = subprocess.Popen([sys.executable, os.path.join(HERE, "../crates/weir/tests/python/synthetic_reports.py"),
                                    os.path.join(HERE, "../crates/weir-proto/proto"), f"127.0.0.1:{grpc}",
                                    str(a.gateways), "60", "10", "flat", "1"])
        wait_until(lambda: len(call("GET", base + "/api/v1/gateways")[1]) == a.gateways, 60, "the gateways")
        d = browser()
        try:
            d.get(base + "/healthz")  # the browser's own start-up is not the page's
            t0 = time.perf_counter()
            d.get(base + "/ui")
            WebDriverWait(d, 30, poll_frequency=0.02).until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#gateways tr[data-id]")) == a.gateways)
            fleet_ms = (time.perf_counter() - t0) * 1000
            size = d.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "const api = performance.getEntriesByType('resource').filter(r => r.name.includes('/api/v1/'));"
                "return [n.transferSize || n.encodedBodySize, api.slice(0, 3).reduce((s, r) => s + (r.transferSize || r.encodedBodySize), 0),"
                " n.domContentLoadedEventEnd, Math.max(...api.slice(0, 3).map(r => r.responseEnd))];")
            t1 = time.perf_counter()
            d.find_element(By.CSS_SELECTOR, "nav button[data-tab=resources]").click()
            WebDriverWait(d, 30, poll_frequency=0.02).until(lambda _: f"of {a.routes}" in d.find_element(By.ID, "count").text)
            resources_ms = (time.perf_counter() - t1) * 1000
        finally:
            d.quit()
        print(json.dumps({"gateways": a.gateways, "routes": a.routes, "fleet_view_ms": round(fleet_ms),
                          "page_bytes": size[0], "first_api_bytes": size[1],
                          "dom_content_loaded_ms": round(size[2]), "first_api_answers_ms": round(size[3]),
                          "resources_view_ms": round(resources_ms)}, indent=2))
    finally:
        if reports:
            reports.kill()
        cp.terminate()
        cp.wait()


if __name__ == "__main__":
    main()
