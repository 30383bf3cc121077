"""What one /metrics scrape costs the recorder's process, measured directly (the rate comparison in
bench.run's metrics_cost cannot separate a few per cent from the machine's drift between runs).

    python -m bench.scrape_cost [--scrapes 300]

The simulators and the recorder (all 12 feeds, [http] on) run in this process. The process's CPU
time is measured over a quiet stretch, then over N back-to-back scrapes of /metrics from a thread
of this process; the difference, less the quiet rate over the same wall time, divided by N, is the
CPU of one scrape: the handler on the event loop plus the HTTP client (so it is an upper bound on
what the event loop pays). At one scrape every s seconds, ingest loses at most that share.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


async def measure(scrapes: int) -> dict:
    from e2e import FAST, make_config

    from recorder import config as cfgmod
    from recorder.simulators.fleet import SIM_ENV, start_fleet
    from recorder.supervisor import run_recorder

    root = Path(tempfile.mkdtemp(prefix="scrape-cost-"))
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, FAST)
        base = make_config(fleet, root)
        cfg = cfgmod.parse({"storage": {"root": str(root / "data")}, "http": {"listen": "127.0.0.1:0"},
                            "feeds": [f for f in fleet.feeds()]}, environ=SIM_ENV)
        assert len(cfg.feeds) == len(base.feeds)
        urls: list[str] = []
        stop = trio.Event()
        async with trio.open_nursery() as rec:
            await rec.start(lambda task_status: run_recorder(cfg, stop=stop, on_http=urls.append, task_status=task_status))
            await trio.sleep(3.0)  # every feed connected and recording
            t0, w0 = time.process_time(), time.monotonic()
            await trio.sleep(3.0)
            quiet_rate = (time.process_time() - t0) / (time.monotonic() - w0)

            def scrape_all() -> int:
                size = 0
                for _ in range(scrapes):
                    size = len(urllib.request.urlopen(urls[0] + "/metrics", timeout=10).read())
                return size

            t0, w0 = time.process_time(), time.monotonic()
            size = await trio.to_thread.run_sync(scrape_all)
            cpu, wall = time.process_time() - t0, time.monotonic() - w0
            stop.set()
        sims.cancel_scope.cancel()
    per_scrape = (cpu - quiet_rate * wall) / scrapes
    return {"scrapes": scrapes, "feeds": len(cfg.feeds), "bytes": size, "quiet_cpu_share": round(quiet_rate, 3),
            "cpu_ms_per_scrape": round(per_scrape * 1000, 3), "wall_ms_per_scrape": round(wall / scrapes * 1000, 3),
            "share_at_1s": round(per_scrape, 5), "share_at_15s": round(per_scrape / 15, 6)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrapes", type=int, default=300)
    r = trio.run(measure, ap.parse_args().scrapes)
    print(json.dumps(r))
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    (out / "scrape_cost.json").write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
