"""The live page's daemon side: the tap on the buffers, the hub's bounded client queues, and
/api/feeds, /api/chart, /api/stream served by the real daemon recording the simulators."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import trio

from conftest import trio_test
from e2e import FAST, raw_counter, sent_counter
from helpers import open_pipeline
from httpclient import address, get
from recorder import config as cfgmod
from recorder.charts import chart_data
from recorder.dataset import Dataset
from recorder.feedstate import STATES
from recorder.http.live import LiveHub
from recorder.http.status import Sources
from recorder.http.tap import Tap
from recorder.simulators.fleet import SIM_ENV, start_fleet
from recorder.supervisor import run_recorder
from recorder.timeutil import us_to_datetime
from recorder.writer import Buffers

T0 = 1_767_225_600_000_000
CONSTS = (("feed", "f1"), ("conn_id", "c1"), ("origin", "synthetic"), ("source", "live"))


def _row(i: int, market: str = "m1") -> tuple:
    return ("f1", T0 + i, T0 + i + 5, "c1", i, market, "Yes", 0.5, "synthetic", "live")


def _append_columns(buffers: Buffers, first: int, last: int) -> None:
    cols = buffers.columns("chance", "synthetic", CONSTS, "ts_event", seconds=("ts_event",))
    ts, recv, seq, market, outcome, p = cols.appenders("ts_event", "ts_recv", "seq", "market", "outcome", "probability")
    for i in range(first, last + 1):
        ts((T0 + i) / 1e6), recv(T0 + i + 5), seq(i), market("m2"), outcome("Yes"), p(0.25)
    buffers.rows += last - first + 1


def test_tap_sees_every_row_once_across_batches_and_cuts():
    """Rows added as tuples and as columns reach the tap exactly once, though containers fill into
    batches and the buffers are cut between two looks; `want` filters by market."""
    buffers = Buffers(batch_rows=4)
    tap = Tap(buffers, "chance")
    seen: list[int] = []
    for i in range(1, 4):
        buffers.add_row("chance", "synthetic", 0, _row(i))
    seen += [r["seq"] for r in tap.take()]
    for i in range(4, 11):  # two batches sealed between the looks
        buffers.add_row("chance", "synthetic", 0, _row(i))
    buffers.cut()
    buffers.add_row("chance", "synthetic", 0, _row(11))
    buffers.cut()  # a container that came and went between two looks
    buffers.add_row("chance", "synthetic", 0, _row(12))
    seen += [r["seq"] for r in tap.take()]
    assert seen == list(range(1, 13)) and tap.take() == []
    _append_columns(buffers, 100, 102)
    first = tap.take()
    _append_columns(buffers, 103, 106)  # seals the first Columns (4 rows), then a fresh one
    _append_columns(buffers, 107, 107)
    buffers.add_row("chance", "synthetic", 0, _row(13, market="m3"))
    rest = tap.take(lambda venue, market: market == "m2")
    assert [r["seq"] for r in first + rest] == list(range(100, 108))
    assert first[0] == {"venue": "synthetic", "feed": "f1", "conn_id": "c1", "origin": "synthetic", "source": "live",
                        "ts_event": T0 + 100, "ts_recv": T0 + 105, "seq": 100, "market": "m2", "outcome": "Yes",
                        "probability": 0.25}
    assert tap.take() == [] and tap.rows_seen == 12 + 8 + 1
    buffers.add_row("chance", "synthetic", 0, _row(14, market="m4"))
    _append_columns(buffers, 108, 109)
    assert tap.take_keys({"m2", "m4"}) == {("f1", "m2"), ("f1", "m4")} and tap.take_keys({"m2"}) == set()


def test_peek_copies_the_buffered_rows_without_taking_them():
    """Buffers.peek: every buffered row (batches, tuples, columns) as Arrow with its venue; the
    buffers keep their rows and can still be appended to (no array is left exported)."""
    buffers = Buffers(batch_rows=4)
    for i in range(1, 7):
        buffers.add_row("chance", "synthetic", 0, _row(i))
    _append_columns(buffers, 100, 102)
    table = buffers.peek("chance").to_table()
    _append_columns(buffers, 103, 103)  # appending after the peek still works
    assert sorted(table.column("seq").to_pylist()) == [1, 2, 3, 4, 5, 6, 100, 101, 102]
    assert set(table.column("venue").to_pylist()) == {"synthetic"} and buffers.rows == 10
    assert buffers.peek("trades").to_table().num_rows == 0


@trio_test(timeout=20)
async def test_hub_drops_a_client_whose_queue_is_full(tmp_path):
    """publish never waits: a client that does not take its events is dropped when its queue is
    full (its stream ends), while another client of the market gets every event."""
    pipeline = open_pipeline(tmp_path)
    try:
        cfg = cfgmod.parse({"storage": {"root": str(tmp_path / "data")}})
        hub = LiveHub(Sources(config=cfg, pipeline=pipeline, feeds=(), started=time.time()), queue=5)
        stalled, stalled_rx = hub.subscribe("m1", None)
        reader, reader_rx = hub.subscribe("m1", "synthetic")
        other, other_rx = hub.subscribe("m2", None)
        got = []
        for i in range(12):
            hub.publish("m1", "synthetic", b"event %d" % i)
            got.append(reader_rx.receive_nowait())
        assert got == [b"event %d" % i for i in range(12)]
        assert hub.stats.dropped == 1 and stalled not in hub.clients and reader in hub.clients
        assert [e async for e in stalled_rx] == [b"event %d" % i for i in range(5)]  # then its end
        hub.publish(None, None, b"feeds")  # every client: the feeds
        assert other_rx.receive_nowait() == b"feeds"
    finally:
        pipeline.close()


async def _stalled_stream(url: str, path: str) -> trio.SocketStream:
    """A client that asks for the stream and never reads (a tiny receive buffer)."""
    host, port = address(url)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    await sock.connect((host, port))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return stream


async def _read_stream(url: str, path: str, events: list[bytes], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    host, port = address(url)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        task_status.started()
        buf = b""
        while data := await stream.receive_some(65536):
            buf += data
            *done, buf = buf.split(b"\n\n")
            events += done


def _json(body: bytes):
    return json.loads(body)


@trio_test(timeout=40)
async def test_live_api_against_the_daemon(tmp_path):
    """The daemon recording the simulators, nothing flushed yet: /api/feeds lists the feeds with
    their state and markets; /api/chart draws the buffered rows (exactly what is in Parquet once
    flushed); /api/stream sends points; bad parameters are 400 with one line; three clients that
    never read slow nothing: every frame sent is recorded, with no pause in the read loop."""
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, FAST)
        feeds = [f for f in fleet.feeds() if f["name"] in ("op-chance", "pf-main", "it-chart", "op-book")]
        cfg = cfgmod.parse({"storage": {"root": str(tmp_path / "data"), "max_age_seconds": 600},
                            "http": {"listen": "127.0.0.1:0"}, "feeds": feeds}, environ=SIM_ENV)
        stop, urls = trio.Event(), []
        async with trio.open_nursery() as rec:
            pipeline = await rec.start(lambda task_status: run_recorder(cfg, stop=stop, on_http=urls.append,
                                                                        task_status=task_status))
            url = urls[0]
            stalled = [await _stalled_stream(url, "/api/stream?market=evt-1") for _ in range(3)]
            events: list[bytes] = []
            await rec.start(_read_stream, url, "/api/stream?market=123&venue=predictfun", events)
            await trio.sleep(2.0)

            status, _, body = await get(url, "/api/feeds")
            doc = _json(body)
            assert status == 200 and [f["name"] for f in doc["feeds"]] == [f["name"] for f in feeds]
            assert all(f["state"] in STATES and f["frames"] > 0 for f in doc["feeds"])
            assert {f["name"]: f["markets"] for f in doc["feeds"]} == {
                "op-book": ["evt-1", "evt-2"], "op-chance": ["evt-1"], "it-chart": ["42"], "pf-main": ["123"]}

            for path, error in [
                ("/api/chart", "/api/chart needs market=<market or event id>"),
                ("/api/chart?market=123&venue=kalshi", "unknown venue 'kalshi'; the feeds' venues are intots, "
                                                       "outpoll, predictfun"),
                ("/api/chart?market=123&colour=red", "unknown parameter 'colour'; /api/chart takes market, venue, "
                                                     "start, end, interval"),
                ("/api/chart?market=123&market=42", "parameter 'market' is given 2 times; give it once"),
                ("/api/chart?market=123&start=yesterday-ish", "start='yesterday-ish' is not a valid timestamp"),
                ("/api/stream?venue=outpoll", "/api/stream needs market=<market or event id>"),
                ("/api/stream?market=123&venue=outpoll", "market '123' is not subscribed by any feed on venue "
                                                         "'outpoll'; subscribed: evt-1, evt-2"),
            ]:
                status, headers, body = await get(url, path)
                assert status == 400 and headers["content-type"] == "application/json", (path, body)
                assert _json(body)["error"].startswith(error) and body.count(b"\n") == 1, (path, body)

            assert pipeline.storage_stats.flushes == 0  # everything charted below is still buffered
            status, _, body = await get(url, "/api/chart?market=123&venue=predictfun&interval=100ms")
            live = _json(body)
            assert status == 200 and live["end"] - max(live["series"][0]["times"]) < 1_000_000
            for sim in fleet.all:
                sim.quiesce()
            # Every frame sent decoded (none in flight: a point sent before the chart's end but not yet
            # read would be in the flushed chart and not in this one), then the buffered chart again.
            with trio.fail_after(10):
                while sum(st.frames for st in pipeline.stats.values()) < sum(len(sim.sent) for sim in fleet.all):
                    await trio.sleep(0.02)
            assert pipeline.storage_stats.flushes == 0
            status, _, body = await get(url, "/api/chart?market=123&venue=predictfun&interval=100ms")
            live = _json(body)
            assert status == 200
            stop.set()
        sims.cancel_scope.cancel()
    for s in stalled:  # they were streams, answered and fed (into their socket buffers)
        head = await s.receive_some(4096)
        await s.aclose()
        assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream")

    assert raw_counter(tmp_path) == sent_counter(fleet)  # the stalled clients cost no frame
    with Dataset.open(tmp_path / "data") as ds:
        flushed = chart_data(ds, "123", venue="predictfun", start=us_to_datetime(live["start"]),
                             end=us_to_datetime(live["end"]), interval="100ms")
        recv = ds.sql("SELECT epoch_us(ts_recv) AS t FROM raw WHERE feed = 'pf-main' ORDER BY t").column("t").to_pylist()
    assert [s["values"] for s in live["series"]] == [list(s.values) for s in flushed.series]  # no hole, no extra
    assert max(b - a for a, b in zip(recv, recv[1:])) < 400_000  # frames every 20 ms: the read loop never paused
    points = [e for e in events if e.startswith(b"event: point")]
    assert len(points) > 20 and all(b'"venue":"predictfun"' in e for e in points)


def test_demo_serve_prints_the_page_url_serves_it_and_stops_on_sigint(tmp_path):
    """`recorder demo --serve`: after the summary it prints the live page's URL, serves the page and
    the feeds while recording goes on, and on SIGINT flushes and exits 0."""
    import signal
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "recorder.cli", "demo", "--serve", "--seconds", "2", "--data",
                             str(tmp_path / "demo")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "live page" in line:
                break
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), lines[-3:]
        assert any(line.startswith("Rows recorded per table and venue") for line in lines)  # the summary came first
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b"window.recorderLive" in r.read()
        with urllib.request.urlopen(url + "api/feeds", timeout=10) as r:
            assert len(json.loads(r.read())["feeds"]) == 12
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "Stopping: flushing what is buffered" in out
