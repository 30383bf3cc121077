"""One benchmark client run, in its own process so its peak RSS is its own. Prints one JSON line.

    python -m bench.client --mode bare|recorder --transport websockets|trio-websocket --mix MIX (bench/sender.py)
                           --url ws://127.0.0.1:PORT --frames M [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as the `recorder` command does (cli.py)

import trio  # noqa: E402

from bench.sender import BOOKS_MARKETS, REALISTIC_MARKETS  # noqa: E402
from recorder import config as cfgmod  # noqa: E402
from recorder.errors import ConnectionClosed  # noqa: E402
from recorder.supervisor import run_recorder, tune_process  # noqa: E402
from recorder.transport import open_connection  # noqa: E402


async def bare(url: str, transport: str, frames: int) -> dict:
    n = 0
    t_first = t_last = None
    async with open_connection(url, transport=transport) as conn:
        if hasattr(conn, "own_reader"):  # the reference is the websockets library reading every frame itself
            conn.own_reader = False
        try:
            await conn.receive()
            t_first = time.perf_counter()
            cpu0 = time.thread_time()
            n = 1
            while True:
                await conn.receive()
                n += 1
                if n == frames:
                    t_last = time.perf_counter()
        except ConnectionClosed:
            pass
    elapsed = t_last - t_first
    return {"frames": n, "seconds": elapsed, "rate": (n - 1) / elapsed,
            "loop_cpu_us_per_frame": round((time.thread_time() - cpu0) / n * 1e6, 2)}


def feed_for(mix: str, url: str, transport: str) -> dict:
    common = {"url": url, "transport": transport, "stale_seconds": 600, "backoff_initial_seconds": 30}
    if mix == "small":
        return {"name": "bench", "venue": "outpoll", "stream": "chance",
                "subscriptions": [{"event": "evt-1", "outcomes": ["evt-1-yes"]}], **common}
    if mix == "trades":
        return {"name": "bench", "venue": "intots", "stream": "trades", **common}
    # predict.fun: the topics the mix sends (a venue sends only what was subscribed; subscribed to
    # one topic, the feed would search every frame for the topic it never gets: stale detection)
    if mix == "books":
        topics = [f"predictOrderbook/{m}" for m in BOOKS_MARKETS]
    elif mix == "realistic":
        topics = [f"{t}/{m}" for m in REALISTIC_MARKETS for t in ("predictOrderbook", "polymarketChance", "kalshiChance")]
    else:
        topics = ["predictOrderbook/123"]
    return {"name": "bench", "venue": "predictfun", "topics": topics, **common}


async def recorder(url: str, transport: str, mix: str, frames: int, root: Path, storage: dict,
                   scrape_every: float | None = None) -> dict:
    """With `scrape_every`, the daemon serves its window ([http]) and another process scrapes
    /metrics that often throughout the run."""
    http = {"http": {"listen": "127.0.0.1:0"}} if scrape_every else {}
    cfg = cfgmod.parse({"storage": {"root": str(root), **storage}, "recorder": {"summary_interval_seconds": 3600},
                        "feeds": [feed_for(mix, url, transport)], **http},
                       environ=os.environ)  # a lake's password_env
    stop = trio.Event()
    out: dict = {}
    durable_lat, visible_lat = [], []
    scraper = None

    def start_scraper(window: str) -> None:
        nonlocal scraper
        scraper = subprocess.Popen([sys.executable, "-m", "bench.scraper", window, str(scrape_every)],
                                   stdout=subprocess.PIPE, text=True)

    async with trio.open_nursery() as nursery:
        pipeline = await nursery.start(lambda task_status: run_recorder(cfg, stop=stop, on_http=start_scraper,
                                                                        task_status=task_status))
        t_first = None
        cpu_first = None
        pending_d, pending_v = [], []  # (time sampled, journal position) awaiting durable / committed
        while True:
            await trio.sleep(0.002)
            now = time.perf_counter()
            stats = pipeline.stats.get("bench")
            n = stats.frames if stats else 0
            if n and t_first is None:
                t_first = now
                cpu_first, n_first = (time.thread_time(), resource.getrusage(resource.RUSAGE_SELF)), n
            if n:
                pos = pipeline.journal.position
                pending_d.append((now, pos))
                pending_v.append((now, pos))
                while pending_d and pending_d[0][1] <= pipeline.journal.durable:
                    durable_lat.append(now - pending_d.pop(0)[0])
                while pending_v and pending_v[0][1] <= pipeline.committed:
                    visible_lat.append(now - pending_v.pop(0)[0])
            if n >= frames:
                out["seconds"] = now - t_first
                out["rate"] = n / (now - t_first)
                out["frames"] = n
                out["gate_waits"] = pipeline.gate.waits if pipeline.gate else None  # feeds held back by the flush
                # CPU per frame: the event loop's thread (what bounds the rate) and the whole process
                # (with the flush and fsync threads); steadier than the rate on a shared machine.
                ru = resource.getrusage(resource.RUSAGE_SELF)
                out["loop_cpu_us_per_frame"] = round((time.thread_time() - cpu_first[0]) / (n - n_first) * 1e6, 2)
                out["process_cpu_us_per_frame"] = round((ru.ru_utime + ru.ru_stime - cpu_first[1].ru_utime
                                                         - cpu_first[1].ru_stime) / (n - n_first) * 1e6, 2)
                break
        t_stop = time.perf_counter()
        if scraper is not None:
            scraper.terminate()
            out.update(json.loads(scraper.communicate(timeout=30)[0] or "{}"))
        stop.set()
    out["close_seconds"] = time.perf_counter() - t_stop
    ru = resource.getrusage(resource.RUSAGE_SELF)  # every frame's work done: the final flush included
    out["process_cpu_us_per_frame_with_close"] = round((ru.ru_utime + ru.ru_stime - cpu_first[1].ru_utime
                                                        - cpu_first[1].ru_stime) / (out["frames"] - n_first) * 1e6, 2)
    out["rate_with_final_flush"] = out["frames"] / (out["seconds"] + out["close_seconds"])

    def pct(xs, q):
        return round(statistics.quantiles(xs, n=100)[q - 1] * 1000, 1) if len(xs) >= 2 else None

    out["durable_ms_p50"], out["durable_ms_p99"] = pct(durable_lat, 50), pct(durable_lat, 99)
    out["visible_ms_p50"], out["visible_ms_p99"] = pct(visible_lat, 50), pct(visible_lat, 99)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["bare", "recorder"], required=True)
    ap.add_argument("--transport", default="websockets")
    ap.add_argument("--mix", default="small")
    ap.add_argument("--url", required=True)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--root")
    ap.add_argument("--storage", default="{}", help="JSON of [storage] overrides")
    ap.add_argument("--scrape-every", type=float, help="serve [http] and scrape /metrics this often (seconds)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if a.mode == "bare":
        result = trio.run(bare, a.url, a.transport, a.frames)
    else:
        root = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix="bench-")) / "data"
        tune_process()  # as `recorder run` does
        result = trio.run(recorder, a.url, a.transport, a.mix, a.frames, root, json.loads(a.storage), a.scrape_every)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
