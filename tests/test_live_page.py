"""The live page's parts that need no HTTP listener: the dataset with unflushed rows, the SSE
encoding, and the page itself in a real Chromium, its /api/* answered from the contract in
recorder/charts/page.py with a real dataset's chart (the daemon's listener is not built yet)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pyarrow as pa
import pytest

from browser import open_browser
from livedaemon import live_daemon
from helpers import frame, open_pipeline, session
from recorder import journal as jr
from recorder.charts import chart_data
from recorder.charts.page import api_chart, render_page, sse_event
from recorder.charts.pending import PendingDataset
from recorder.dataset import Dataset

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z; helpers.frame(i) is at T0 + i ms
MS = 1000


def _pending_chance(first: int, last: int) -> pa.Table:
    """Chance rows as the daemon's buffers hold them, for frames first..last of a second connection."""
    idx = range(first, last + 1)
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({
        "venue": ["synthetic"] * len(idx), "feed": ["f1"] * len(idx),
        "ts_event": pa.array([T0 + i * MS for i in idx], ts), "ts_recv": pa.array([T0 + i * MS + 5 for i in idx], ts),
        "conn_id": ["c2"] * len(idx), "seq": list(idx), "market": ["m1"] * len(idx), "outcome": ["Yes"] * len(idx),
        "probability": [(i % 100) / 100 for i in idx], "origin": ["synthetic"] * len(idx), "source": ["live"] * len(idx),
    })


def _open_session(connected: int, now: int) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({"venue": ["synthetic"], "feed": ["f1"], "ts_event": pa.array([None], ts),
                     "ts_recv": pa.array([connected], ts), "conn_id": ["c2"], "url": ["ws://x"],
                     "connected": pa.array([connected], ts), "subscribed": pa.array([connected], ts),
                     "first_frame": pa.array([None], ts), "last_frame": pa.array([None], ts),
                     "closed": pa.array([now], ts), "close_reason": ["open"], "frames": [0]})


@pytest.fixture
def flushed(tmp_path):
    """Frames 1..100 on connection c1 (closed at 100.5 ms), flushed to Parquet."""
    p = open_pipeline(tmp_path)
    p.ingest(session(jr.Kind.OPEN, "c1", T0, "ws://x"))
    for i in range(1, 101):
        p.ingest(frame(i, ts=T0, conn="c1"))
    p.ingest(session(jr.Kind.CLOSE, "c1", T0 + 100_500, "dropped"))
    p.close()
    return tmp_path / "data"


def test_pending_rows_join_the_history_without_a_hole(flushed):
    """Buffered rows and the open connection join the Parquet history: every point is charted,
    and the gap ends exactly when the open connection connected."""
    reconnect = T0 + 150 * MS
    pending = {"chance": _pending_chance(150, 250), "sessions": _open_session(reconnect, T0 + 300 * MS)}
    with Dataset.open(flushed) as ds:
        only_files = chart_data(ds, "m1", interval="1ms")
    with PendingDataset.open_with(flushed, pending) as ds:
        both = chart_data(ds, "m1", interval="1ms")
        assert ds.sql("SELECT count(*) AS n FROM chance").column("n")[0].as_py() == 100 + 101
        ds.refresh()  # a refresh (after a compaction swap) keeps the pending rows
        assert ds.sql("SELECT count(*) AS n FROM chance").column("n")[0].as_py() == 100 + 101
    assert only_files.points == 100 and both.points == 201
    assert [(g.start, g.end) for g in both.gaps] == [(T0 + 100_500, reconnect)]
    assert both.end == T0 + 250 * MS + 1


def test_pending_without_the_open_session_ends_the_gap_at_the_first_new_row(flushed):
    """With no sessions row for the open connection, the gap ends at the first row it recorded."""
    with PendingDataset.open_with(flushed, {"chance": _pending_chance(150, 160)}) as ds:
        gaps = chart_data(ds, "m1", interval="1ms").gaps
    assert [(g.start, g.end) for g in gaps] == [(T0 + 100_500, T0 + 150 * MS + 5)]


def test_pending_refuses_an_unknown_table(flushed):
    with pytest.raises(ValueError, match="unknown table 'chances'"):
        PendingDataset.open_with(flushed, {"chances": _pending_chance(1, 2)})


def test_api_chart_answers_the_contract(flushed):
    """/api/chart: from the market's first row in the last 10 minutes (else 10 minutes back) to now,
    ChartData's JSON; a bad request is 400 with one line."""
    now = dt.datetime.fromtimestamp((T0 + 5 * 10**6) / 1e6, dt.timezone.utc)
    with Dataset.open(flushed) as ds:
        status, body = api_chart(ds, {"market": "m1"}, now=now)
        assert status == 200 and body["start"] == T0 + 1 * MS and body["end"] == T0 + 5 * 10**6
        assert body["interval"] == 100_000 and body["series"][0]["values"] == [0.99, 0.0]  # frames ..99, then 100
        later = now + dt.timedelta(minutes=10, seconds=1)  # the rows are out of the window
        assert api_chart(ds, {"market": "m1"}, now=later)[0] == 400
        status, body = api_chart(ds, {"market": "m1", "start": "2026-01-01T00:00:00Z"}, now=later)
        assert status == 200 and body["start"] == T0
        now = dt.datetime.fromtimestamp((T0 + 300 * MS) / 1e6, dt.timezone.utc)
        status, body = api_chart(ds, {"market": "m1", "start": "2026-01-01T00:00:00Z", "interval": "1ms"}, now=now)
        assert sum(v is not None for v in body["series"][0]["values"]) == 100
        assert api_chart(ds, {"market": "m1", "colour": "red"}, now=now) == (
            400, {"error": "unknown parameter 'colour'; /api/chart takes market, venue, start, end, interval"})
        assert api_chart(ds, {}, now=now)[0] == 400
        status, body = api_chart(ds, {"market": "nope"}, now=now)
        assert status == 400 and "market 'nope' has no chance, book or trade rows" in body["error"]


def test_sse_event_encoding():
    """One event: its kind, the JSON on one data line, a blank line; kinds are plain words."""
    assert sse_event("point", {"t": 1, "p": 0.5}) == b'event: point\ndata: {"t":1,"p":0.5}\n\n'
    with pytest.raises(ValueError):
        sse_event("po\nint", {})


def test_page_is_self_contained():
    """The page inlines the library, the shared drawing code and live.js; it loads nothing else."""
    text = render_page(title="recorder on host")
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "TradingView Lightweight Charts™ v5.2.1" in text and "window.RecorderChart" in text
    assert "window.recorderLive" in text and "<title>recorder on host</title>" in text


def _us_now() -> int:
    return time.time_ns() // 1000


def _wait_chart(url: str, market: str, venue: str, *, points: int, timeout: float = 30.0) -> None:
    """Block until the daemon's /api/chart for the market has `points` drawn points in every series
    (rows decoded are not enough: they spread over markets and outcomes, and share buckets)."""
    deadline = time.monotonic() + timeout
    query = urllib.parse.urlencode({"market": market, "venue": venue})
    counts: list[int] = []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/chart?{query}", timeout=5) as r:
                doc = json.load(r)
            counts = [sum(v is not None for v in s["values"]) for s in doc["series"]]
            if counts and min(counts) >= points:
                return
        except urllib.error.HTTPError:  # 400 until the market has rows
            pass
        time.sleep(0.1)
    raise AssertionError(f"/api/chart for {market} had {counts} points per series after {timeout:g} s, not {points}")


def test_live_page_in_chromium_against_the_daemon(tmp_path):
    """In Chromium, the page served by the daemon recording the simulators: the feeds table fills,
    the history from /api/chart is drawn, new points arrive while we watch, and a disconnect of
    the outpoll simulator (3 s backoff) shows as a gap, live, that the reloaded history agrees with."""
    with open_browser() as browser, live_daemon(tmp_path, backoff=3.0) as daemon:
        daemon.wait_rows("op-chance", 20)
        _wait_chart(daemon.url, "evt-1", "outpoll", points=5)  # history to draw: the page opens on evt-1
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        with page.expect_response(lambda r: "/api/chart?" in r.url, timeout=15_000) as first:
            page.goto(daemon.url + "/")
        history = first.value.json()
        page.wait_for_function("window.recorderChart && window.recorderLive.state.source", timeout=10_000)
        assert page.evaluate("[window.recorderLive.state.market, window.recorderLive.state.venue]") == ["evt-1", "outpoll"]
        # What is drawn, and the document it was drawn from: the first /api/chart answer, or a later
        # one when a streamed point of a series the chart lacked made the page reload its history.
        shown = page.evaluate("({stats: window.recorderChart.stats(), reloads: window.recorderLive.state.reloads,"
                              " series: window.recorderChart.data.series.map((s) => ({label: s.label, values: s.values}))})")
        if shown["reloads"] == 0:
            assert shown["series"] == [{"label": s["label"], "values": s["values"]} for s in history["series"]]
        drawn = {s["label"]: s["points"] for s in shown["stats"]["series"]}
        wanted = {s["label"]: sum(v is not None for v in s["values"]) for s in shown["series"]}
        assert set(drawn) == set(wanted) == {"evt-1-yes", "evt-1-no"}, (drawn, wanted)
        assert all(drawn[k] >= wanted[k] >= 5 for k in wanted), (drawn, wanted)  # history drawn (plus live points)
        page.wait_for_function("document.querySelector('#feeds').innerText.includes('subscribed')", timeout=5_000)

        # new points arrive while we watch
        seen = page.evaluate("window.recorderChart.stats().received")
        page.wait_for_function(f"window.recorderChart.stats().received >= {seen + 10}", timeout=10_000)
        # the view follows the new points (the chart applies a scroll when it next draws, which a loaded
        # machine delays: read it from an animation frame, as the page's user would see it)
        page.wait_for_function("window.recorderChart.chart.timeScale().getVisibleLogicalRange().to"
                               " >= window.recorderChart.stats().grid - 2", polling="raf", timeout=5_000)
        assert page.evaluate("window.recorderChart.stats().follow") == "all"

        # a disconnect appears as a gap: open while the feeds back off, then closed
        dropped_at = _us_now()
        daemon.call(daemon.fleet.outpoll.drop)
        page.wait_for_function("document.querySelector('#feeds').innerText.includes('backing off')", timeout=5_000)
        page.wait_for_function(f"window.recorderChart.stats().gaps.some((g) => g.start >= {dropped_at} && g.end === null"
                               " && g.label.includes('still down'))", timeout=5_000)
        page.wait_for_function(f"window.recorderChart.stats().gaps.filter((g) => g.start >= {dropped_at})"
                               ".every((g) => g.end !== null)", timeout=10_000)
        after = page.evaluate("window.recorderChart.stats().received")
        page.wait_for_function(f"window.recorderChart.stats().received >= {after + 5}", timeout=10_000)  # and resume
        live = [g for g in page.evaluate("window.recorderChart.stats().gaps") if g["start"] >= dropped_at]

        # the user zooms in (wheel over the middle of the chart): the view stops following and
        # stays where they put it while points keep arriving
        box = page.locator("#chart").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -600)
        page.wait_for_function("window.recorderChart.stats().follow === null", polling="raf", timeout=5_000)
        view = "(() => { const r = window.recorderChart.chart.timeScale().getVisibleLogicalRange(); return [r.from, r.to]; })()"
        zoomed = page.evaluate(view)
        grid = page.evaluate("window.recorderChart.stats().grid")
        page.wait_for_function(f"window.recorderChart.stats().grid >= {grid + 5}", polling="raf", timeout=10_000)
        assert page.evaluate(view) == zoomed and page.evaluate("window.recorderChart.stats().follow") is None

        # the history now holds the same gap (flushed or still buffered: no hole either way)
        with page.expect_response(lambda r: "/api/chart?" in r.url, timeout=15_000) as again:
            page.reload()
        reloaded = [g for g in again.value.json()["gaps"] if g["start"] >= dropped_at]
    assert errors == []
    assert len(live) == 1 and len(reloaded) == 1  # the feeds' overlapping gaps drawn as one, as the history has it
    gap = live[0]
    assert gap["end"] - gap["start"] >= 1_500_000  # the backoff: at least half of 3 s
    assert gap["x0"] is not None and gap["x1"] - gap["x0"] >= 3 and gap["label"].startswith("gap ")
    assert (reloaded[0]["start"], reloaded[0]["end"]) == (gap["start"], gap["end"])
    assert "op-chance" in reloaded[0]["feeds"]
