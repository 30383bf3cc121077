"""The live page's parts that need no HTTP listener: the dataset with unflushed rows, the SSE
encoding, and the page itself in a real Chromium, its /api/* answered from the contract in
recorder/charts/page.py with a real dataset's chart (the daemon's listener is not built yet)."""

from __future__ import annotations

import datetime as dt
import json
import re

import pyarrow as pa
import pytest

from browser import open_browser
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
    """/api/chart: the last hour by default, ChartData's JSON; a bad request is 400 with one line."""
    now = dt.datetime.fromtimestamp((T0 + 300 * MS) / 1e6, dt.timezone.utc)
    with Dataset.open(flushed) as ds:
        status, body = api_chart(ds, {"market": "m1"}, now=now)
        assert status == 200 and body["start"] == T0 + 300 * MS - 3600 * 10**6 and body["end"] == T0 + 300 * MS
        assert body["interval"] == 10 * 10**6 and body["series"][0]["values"] == [0.0]  # frame 100's 100 % 100
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


BASE = "http://recorder.invalid"


def test_live_page_draws_history_then_live_points_and_gaps(flushed):
    """In Chromium, against the documented API: the feeds table fills, the history is drawn,
    streamed points extend the lines (a new bucket each), and a gap event shades a gap."""
    with Dataset.open(flushed) as ds:
        data = chart_data(ds, "m1", interval="1ms")
    feeds = {"now": T0 + 200 * MS, "feeds": [{"name": "f1", "venue": "synthetic", "state": "subscribed", "since": T0,
                                               "last_frame_age": 0.2, "frames": 100, "markets": ["m1"]}]}
    points = [{"venue": "synthetic", "origin": "synthetic", "outcome": "Yes", "t": T0 + i * MS, "p": 0.5}
              for i in range(101, 111)]
    open_gap = {"feed": "f1", "start": T0 + 111 * MS, "end": None}
    stream = b"retry: 600000\n\n" + b"".join(sse_event("point", p) for p in points) + sse_event("gap", open_gap)
    requests: list[str] = []

    def api(route):
        url = route.request.url
        requests.append(url.removeprefix(BASE))
        if url == BASE + "/":
            route.fulfill(status=200, content_type="text/html", body=render_page())
        elif url.startswith(BASE + "/api/feeds"):
            route.fulfill(status=200, content_type="application/json", body=json.dumps(feeds))
        elif url.startswith(BASE + "/api/chart?market=m1&venue=synthetic"):
            route.fulfill(status=200, content_type="application/json", body=json.dumps(data.to_json()))
        elif url.startswith(BASE + "/api/stream?market=m1&venue=synthetic"):
            route.fulfill(status=200, content_type="text/event-stream", body=stream)
        else:
            route.fulfill(status=404, body="not in the contract")

    with open_browser() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(re.compile(".*"), api)
        page.goto(BASE + "/")
        page.wait_for_function("window.recorderChart && window.recorderChart.stats().received === 10", timeout=10_000)
        page.wait_for_function("window.recorderChart.stats().gaps.length === 1", timeout=10_000)
        stats = page.evaluate("window.recorderChart.stats()")
        table = page.locator("#feeds").inner_text()
    assert errors == []
    assert "f1" in table and "subscribed" in table and "m1" in table
    assert requests[:1] == ["/"] and sum(r.startswith("/api/chart") for r in requests) == 1
    assert stats["series"] == [{"label": "Yes", "points": data.points + 10, "breaks": 0}]
    assert stats["grid"] > -(-(data.end - data.to_json()["grid_start"]) // data.interval)
    live_gap = stats["gaps"][-1]
    assert live_gap["start"] == open_gap["start"] and live_gap["end"] is None and "still down" in live_gap["label"]
    assert live_gap["x0"] is not None and live_gap["x0"] < live_gap["x1"]
