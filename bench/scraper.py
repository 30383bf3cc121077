"""Scrapes a recorder's /metrics every INTERVAL seconds until terminated, as Prometheus would (in its
own process, so the scraping costs the recorder only what serving it costs); prints the number of
scrapes and the mean response size on SIGTERM.

    python -m bench.scraper URL INTERVAL
"""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.request


def main() -> None:
    url, interval = sys.argv[1].rstrip("/") + "/metrics", float(sys.argv[2])
    scrapes, size = 0, 0

    def done(*_):
        print(json.dumps({"scrapes": scrapes, "bytes": size // max(scrapes, 1)}), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, done)
    while True:
        with urllib.request.urlopen(url, timeout=10) as r:
            size += len(r.read())
        scrapes += 1
        time.sleep(interval)


if __name__ == "__main__":
    main()
