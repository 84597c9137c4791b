#!/usr/bin/env python3
"""Drives the control plane's web dashboard in a real browser (Debian's chromium, headless,
through selenium and chromedriver): the fleet view lists the gateways with their revisions,
the rollouts view shows a failed rollout and why, the history view shows a rollback's diff,
and the rollback button makes a new revision.

usage: dashboard.py BASE_URL GATEWAYS REVISION ROLLBACK_TO SHOTS_DIR
Prints one JSON line: {"gateways": [[id, revision], ...], "new_revision": N, "load_ms": ..., "bytes": ...}.
"""
import json
import os
import re
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    o = Options()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def main():
    base, want, revision, to, shots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    os.makedirs(shots, exist_ok=True)
    d = browser()
    out = {}
    try:
        d.get(base + "/ui")
        # Views re-render as they poll: an element found a moment ago may be gone, so try again.
        wait = WebDriverWait(d, 20, ignored_exceptions=(StaleElementReferenceException,))

        def rows():
            found = [(r.get_attribute("data-id"), r.find_element(By.CSS_SELECTOR, ".revision").text)
                     for r in d.find_elements(By.CSS_SELECTOR, "#gateways tr[data-id]")]
            return found if len(found) == want and all(rev == str(revision) for _, rev in found) else False

        out["gateways"] = wait.until(lambda _: rows())
        timing = d.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "return [n.domContentLoadedEventEnd, n.transferSize + performance.getEntriesByType('resource')"
            ".reduce((s, r) => s + r.transferSize, 0)];")
        out["load_ms"], out["bytes"] = round(timing[0], 1), timing[1]
        time.sleep(2)  # a few points on the chart
        d.save_screenshot(os.path.join(shots, "dashboard-fleet.png"))
        d.find_element(By.CSS_SELECTOR, "nav button[data-tab=resources]").click()
        wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#items tr"))
        d.save_screenshot(os.path.join(shots, "dashboard-resources.png"))
        d.find_element(By.CSS_SELECTOR, "nav button[data-tab=rollouts]").click()
        # The view re-renders on every poll, so elements go stale between finding and reading:
        # read the texts in the page, in one script, once the first rollout is drawn.
        texts = wait.until(lambda _: d.execute_script(
            "const p = document.querySelector('.rollout-phase'), r = document.querySelector('.rollout-reason');"
            "return p && r ? [p.textContent, r.textContent] : null;"))
        out["rollout_phase"], out["rollout_reason"] = (t.strip() for t in texts)
        d.save_screenshot(os.path.join(shots, "dashboard-rollout.png"))
        d.find_element(By.CSS_SELECTOR, "nav button[data-tab=history]").click()
        button = wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, f"button.rollback[data-rev='{to}']"))[0]
        button.click()
        wait.until(lambda _: d.find_element(By.ID, "diffbox").is_displayed())
        d.save_screenshot(os.path.join(shots, "dashboard-rollback.png"))
        d.find_element(By.ID, "confirm").click()
        toast = wait.until(lambda _: re.search(r"now revision (\d+)", d.find_element(By.ID, "toast").text))
        out["new_revision"] = int(toast.group(1))
    finally:
        d.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
