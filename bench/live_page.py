"""What the live page costs the recorder: frames recorded per second with no page open, and with
three tabs streaming plus three stalled ones; the hub's longest tick; /api/chart's answer time.

    .venv/bin/python -m bench.live_page [--seconds 6] [--interval 0.002]
"""

from __future__ import annotations

import argparse
import gc
import socket
import sys
import tempfile
import time
from pathlib import Path

import trio

from recorder import config as cfgmod
from recorder.http.live import LiveHub
from recorder.simulators.base import SimSettings
from recorder.simulators.fleet import SIM_ENV, start_fleet
from recorder.supervisor import run_recorder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from httpclient import address, get  # noqa: E402 - the tests' raw HTTP client


async def _reader(url: str, path: str, counts: list[int]) -> None:
    host, port = address(url)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
        while data := await stream.receive_some(65536):
            counts[0] += data.count(b"event: point")


async def _stalled(url: str, path: str) -> trio.SocketStream:
    host, port = address(url)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    await sock.connect((host, port))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
    return stream


async def run(seconds: float, interval: float, clients: bool) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-live-"))
    settings = SimSettings(interval=interval, heartbeat_interval=2.0, ping_interval=3.0, read_deadline=5.0)
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, settings)
        cfg = cfgmod.parse({"storage": {"root": str(root / "data"), "max_age_seconds": 2.0},
                            "http": {"listen": "127.0.0.1:0"}, "feeds": fleet.feeds()}, environ=SIM_ENV)
        stop, urls, out = trio.Event(), [], {}
        async with trio.open_nursery() as rec:
            pipeline = await rec.start(lambda task_status: run_recorder(cfg, stop=stop, on_http=urls.append,
                                                                        task_status=task_status))
            hub = next(o for o in gc.get_objects() if isinstance(o, LiveHub))
            counts = [0]
            stalled = []
            await trio.sleep(1.0)
            if clients:
                for path in ("/api/stream?market=evt-1", "/api/stream?market=123", "/api/stream?market=42"):
                    rec.start_soon(_reader, urls[0], path, counts)
                    stalled.append(await _stalled(urls[0], path))
            frames0 = sum(s.frames for s in pipeline.stats.values())
            t0 = time.perf_counter()
            await trio.sleep(seconds)
            frames = sum(s.frames for s in pipeline.stats.values()) - frames0
            elapsed = time.perf_counter() - t0
            t = time.perf_counter()
            status, _, body = await get(urls[0], "/api/chart?market=123&venue=predictfun")
            out = {"frames_per_s": frames / elapsed, "hub_busy_max_ms": hub.stats.busy_max * 1000,
                   "points_streamed": counts[0], "dropped": hub.stats.dropped, "chart_status": status,
                   "chart_ms": (time.perf_counter() - t) * 1000, "chart_bytes": len(body),
                   "buffered_rows": pipeline.buffers.rows}
            for s in stalled:
                await s.aclose()
            stop.set()
        sims.cancel_scope.cancel()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--interval", type=float, default=0.002)
    args = p.parse_args()
    for clients in (False, True):
        r = trio.run(run, args.seconds, args.interval, clients)
        print(("3 streaming + 3 stalled tabs" if clients else "no page open          ") + ": " +
              ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
