"""Make docs/live.png: `recorder demo --serve`, its live page in Debian's headless Chromium, a screenshot.

    .venv/bin/python docs/make_live_png.py [--market 123 --venue predictfun] [-o docs/live.png]

Needs `apt-get install chromium` and Playwright's Python package (`pip install -e '.[test]'`).
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--market", default="123")
    p.add_argument("--venue", default="predictfun")
    p.add_argument("--seconds", type=float, default=20.0, help="the demo's recording before it serves")
    p.add_argument("--watch", type=float, default=10.0, help="seconds of live points before the screenshot")
    p.add_argument("-o", "--output", default=str(Path(__file__).with_name("live.png")))
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    recorder = Path(sys.executable).with_name("recorder")
    demo = subprocess.Popen([str(recorder), "demo", "--serve", "--seconds", str(args.seconds)],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = None
        for line in demo.stdout:
            m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            if m and "live page" in line:
                url = m.group(1)
                break
        if url is None:
            raise SystemExit("the demo printed no URL")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1200, "height": 860})
            page.goto(f"{url}/#market={args.market}&venue={args.venue}")
            page.wait_for_function("window.recorderChart && window.recorderChart.stats().received > 0", timeout=20_000)
            time.sleep(args.watch)
            page.screenshot(path=args.output, full_page=True)
            browser.close()
        print(f"wrote {args.output} from {url}")
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
