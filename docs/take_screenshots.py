"""Screenshots of each screen with the REAL model and the shipped adapters, for the README.

    .venv/bin/racq pool build --n 20 --db /tmp/racq-shots.db      # once (a few minutes on a CPU)
    .venv/bin/python docs/take_screenshots.py --db /tmp/racq-shots.db

Starts `app.py` on a free port against that DB (a copy, so the votes cast here stay out of it), drives
headless Debian chromium with Playwright, and writes docs/screenshots/{explore,annotate,leaderboard,feedback}.png.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "screenshots"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="annotation DB with a candidate pool")
    ap.add_argument("--query", default="Where did Ireland finish in the Eurovision Song Contest 2018?")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="racq-shots-"))
    db = tmp / "racq.db"
    shutil.copy(args.db, db)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--db", str(db)], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium"),
                                         args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.locator("#explore-query textarea").fill(args.query)
            page.locator("#explore-ask").click()
            page.wait_for_function("() => (document.querySelector('#explore-status')?.innerText || '')"
                                   ".match(/done|ready|seconds| s\\b/i)", timeout=180_000)
            time.sleep(1)
            page.screenshot(path=str(OUT / "explore.png"), full_page=True)
            page.get_by_role("tab", name="Annotate").click()
            page.locator("#ann-name textarea, #ann-name input").first.fill("demo-annotator")
            page.locator("#ann-signin").click()
            page.locator("#vote-left").wait_for(timeout=60_000)
            time.sleep(1.5)
            page.screenshot(path=str(OUT / "annotate.png"), full_page=True)
            for key in ("1", "2", "3"):
                page.locator("body").press(key)
                time.sleep(1.5)
            page.get_by_role("tab", name="Leaderboard").click()
            time.sleep(4)
            page.screenshot(path=str(OUT / "leaderboard.png"), full_page=True)
            page.get_by_role("tab", name="Feedback training").click()
            time.sleep(3)
            page.screenshot(path=str(OUT / "feedback.png"), full_page=True)
            browser.close()
        print(f"wrote {', '.join(p.name for p in sorted(OUT.glob('*.png')))} to {OUT}")
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
