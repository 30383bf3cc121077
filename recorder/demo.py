"""`recorder demo`: the three simulators and the recorder on loopback, a disconnect injected half
way, then a summary and sample queries. The first thing a newcomer runs."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from functools import partial
from pathlib import Path

import trio

from . import config as cfgmod
from .dataset import Dataset
from .simulators.base import SimSettings
from .simulators.fleet import SIM_ENV, start_fleet
from .supervisor import run_recorder
from .output import render


async def record_demo(root: Path, seconds: float, *, say=print, serve: bool = False, port: int = 0) -> None:
    """Record for `seconds` with a disconnect half way. With `serve`, keep everything up after the
    summary, with the live page on 127.0.0.1:`port` (0: any free port), until SIGINT or SIGTERM."""
    settings = SimSettings(interval=0.05, heartbeat_interval=2.0, ping_interval=3.0, read_deadline=5.0)
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, settings)
        say("Simulated venues on loopback:")
        for name, url in fleet.urls().items():
            say(f"  {name:24} {url}")
        cfg = cfgmod.parse({"storage": {"root": str(root), "max_age_seconds": 2.0},
                            "recorder": {"summary_interval_seconds": max(5.0, seconds / 2)},
                            # a 1-2 s reconnect backoff: the injected disconnect shows as a visible gap in charts
                            "feeds": fleet.feeds(backoff_initial=2.0, backoff_max=2.0),
                            **({"http": {"listen": f"127.0.0.1:{port}"}} if serve else {})}, environ=SIM_ENV)
        stop = trio.Event()
        urls: list[str] = []
        async with trio.open_nursery() as rec:
            pipeline = await rec.start(lambda task_status: run_recorder(cfg, stop=stop, on_http=urls.append,
                                                                        task_status=task_status))
            say(f"\nRecording {len(cfg.feeds)} feeds for {seconds:g} s into {root} ...")
            await trio.sleep(seconds / 2)
            say("Injecting a disconnect on every venue (the feeds reconnect, re-auth and re-subscribe) ...")
            for sim in fleet.all:
                await sim.drop()
            await trio.sleep(seconds / 2)
            if serve:
                await wait_flush(pipeline)
                await serve_page(root, urls[0], say)
            stop.set()
        sims.cancel_scope.cancel()


async def wait_flush(pipeline, limit: float = 10.0) -> None:
    """Until the next flush has committed (so the summary shows what was recorded so far)."""
    seen = pipeline.storage_stats.flushes
    with trio.move_on_after(limit):
        while pipeline.storage_stats.flushes <= seen:
            await trio.sleep(0.1)


async def serve_page(root: Path, url: str, say) -> None:
    """`demo --serve`: the summary (of what is flushed so far) while recording goes on, then the
    page's URL, until SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        await trio.to_thread.run_sync(lambda: summarize(root, say=say))
        say(f"\nThe live page (the feeds, and charts growing as points arrive): {url}/")
        say("Recording goes on; press Ctrl-C to stop.")
        sys.stdout.flush()
        async for _ in signals:
            say("Stopping: flushing what is buffered ...")
            return


def summarize(root: Path, *, say=print) -> None:
    with Dataset.open(root) as ds:
        say("\nRows recorded per table and venue:")
        say(render(ds.sql("""
            SELECT 'chance' AS "table", venue, count(*) AS rows FROM chance GROUP BY ALL UNION ALL
            SELECT 'trades', venue, count(*) FROM trades GROUP BY ALL UNION ALL
            SELECT 'book', venue, count(*) FROM book GROUP BY ALL UNION ALL
            SELECT 'prices', venue, count(*) FROM prices GROUP BY ALL UNION ALL
            SELECT 'account', venue, count(*) FROM account GROUP BY ALL UNION ALL
            SELECT 'raw', venue, count(*) FROM raw GROUP BY ALL UNION ALL
            SELECT 'sessions', venue, count(*) FROM sessions GROUP BY ALL UNION ALL
            SELECT 'rejects', venue, count(*) FROM rejects GROUP BY ALL
            ORDER BY 1, 2"""), "table"))
        samples = [
            ("recorder query chance_history --param market=evt-1 --param interval=1m", "chance_history",
             {"market": "evt-1", "interval": "1m"}),
            ("recorder query trades --param market=mkt_001 --param limit=5", "trades", {"market": "mkt_001", "limit": "5"}),
            ("recorder query book_at --param market=123", "book_at", {"market": "123"}),
            ("recorder query coverage --param feed=op-book", "coverage", {"feed": "op-book"}),
        ]
        for command, name, params in samples:
            say(f"\n$ {command} --data {root}")
            say(render(ds.query(name, **params), "table", max_rows=8))
    say(f"\nThe data is in {root}/<table>/venue=<venue>/date=<YYYY-MM-DD>/*.parquet. With plain DuckDB:")
    say(f"  duckdb -c \"SELECT venue, market, outcome, probability FROM read_parquet('{root}/chance/*/*/*.parquet',"
        " hive_partitioning = true) LIMIT 5\"")
    say(f"Or: recorder sql --data {root} \"SELECT feed, count(*) FROM raw GROUP BY ALL\"")
    say(f"A chart, with the disconnect shaded as a gap: recorder chart --market 123 --data {root} -o chart.html")


def run_demo(seconds: float = 20.0, root: Path | None = None, *, serve: bool = False, port: int = 0) -> Path:
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="recorder-demo-")) / "data"
    elif root.exists():
        shutil.rmtree(root)
    trio.run(partial(record_demo, root, seconds, serve=serve, port=port))
    if not serve:
        summarize(root)
    return root
