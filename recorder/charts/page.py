"""The live page: what the daemon's HTTP listener serves at `/`, and the JSON it needs.

`render_page()` returns the page as one HTML document (the vendored chart library, the shared
drawing code `assets/chart.js` and the page's own `assets/live.js` inlined), so serving it is
one response with no further asset requests, and it works with no internet.

The contract between the page and the daemon (all JSON is UTF-8; times are integer
microseconds since the epoch, UTC; nothing secret in any field):

`GET /` -> text/html: `render_page()`.

`GET /api/feeds` -> application/json: the feeds and the markets they carry.

    {"now": 1796163540066519,
     "feeds": [{"name": "op-chance", "venue": "outpoll",
                "state": "subscribed",          # connecting | subscribed | backing off | stale
                "since": 1796163540066519,      # when it entered that state
                "last_frame_age": 0.08,         # seconds, null before the first frame
                "frames": 1234,
                "markets": ["evt-1"]}]}          # what the page offers to chart (from the config)

    (`/status` of the operate issue has every one of these fields but `markets`; the page reads
    only these, so `/api/feeds` may be `/status` plus `markets`.)

`GET /api/chart?market=M[&venue=V][&start=T][&interval=I]` -> application/json:
    `ChartData.to_json()` (recorder/charts/data.py) of `chart_data()` over a `PendingDataset`
    (recorder/charts/pending.py): the Parquet files plus the rows still buffered, and the open
    connections as sessions closed now, so there is no hole between history and live points.
    `start` defaults to 10 minutes before now, or the market's first row in those 10 minutes
    when later (a short history fills the chart); `end` is now. Errors: 400 with
    {"error": "<the RecorderError's one line>"}. `api_chart(ds, params, now=...)` does all of
    this given the PendingDataset and the query parameters.

`GET /api/stream?market=M[&venue=V]` -> text/event-stream (Server-Sent Events), one event per
    line group, `sse_event(kind, data)` encodes them:

    event: point   data: {"venue": "outpoll", "origin": "outpoll", "outcome": "evt-1-yes",
                          "t": 1796163540066519, "p": 0.42}
        a chance row of the market as it is decoded (t = coalesce(ts_event, ts_recv)).
        The page puts it in its bucket (the last value in a bucket is its close).
    event: gap     data: {"feed": "op-chance", "start": 1796163540066519, "end": null}
        a feed carrying the market disconnected (end null: still down) or reconnected (end set).
    event: feeds   data: the /api/feeds document, at most once a second.

    The stream is bounded per client: the daemon keeps a queue of 1,000 events per connection
    and, when it is full, closes that client's stream instead of waiting: a slow or stalled tab
    never slows the read loop. A new stream starts with the last 3 s of the market's events and
    the gaps still open, so nothing falls between the /api/chart the page fetched and the
    stream. EventSource reconnects by itself (`retry: 2000`); on every reopen the page fetches
    /api/chart again, so nothing is missed across a drop. Errors: 400 with {"error": one line}
    for a missing or unsubscribed market, an unknown venue or parameter.

    The daemon's side (the tap on the pipeline's buffers, the hub, the routes) is
    recorder/http/live.py.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Mapping
from typing import Any

from ..dataset import Dataset
from ..errors import RecorderError
from .data import chart_data
from .html import LIBRARY, _script_safe, asset

API_FEEDS = "/api/feeds"
API_CHART = "/api/chart"
API_STREAM = "/api/stream"
CHART_PARAMS = ("market", "venue", "start", "end", "interval")
LIVE_WINDOW = dt.timedelta(minutes=10)


def render_page(*, title: str = "recorder") -> str:
    """The live page, self-contained."""
    parts = {
        "TITLE": html.escape(title),
        "LIBRARY": _script_safe(asset(LIBRARY)),
        "CHART_JS": _script_safe(asset("chart.js")),
        "LIVE_JS": _script_safe(asset("live.js")),
    }
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: parts[m.group(1)], asset("live.html"))


def sse_event(kind: str, data: Any) -> bytes:
    """One Server-Sent Event: `event: kind`, the JSON on one `data:` line, a blank line."""
    if not re.fullmatch(r"[a-z]+", kind):
        raise ValueError(f"event kind {kind!r}: lowercase letters only")
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), allow_nan=False)}\n\n".encode()


def api_chart(ds: Dataset, params: Mapping[str, str], *, now: dt.datetime) -> tuple[int, dict[str, Any]]:
    """The answer to GET /api/chart: (200, ChartData JSON) or (400, {"error": one line})."""
    unknown = sorted(set(params) - set(CHART_PARAMS))
    if unknown:
        return 400, {"error": f"unknown parameter {unknown[0]!r}; /api/chart takes {', '.join(CHART_PARAMS)}"}
    if not params.get("market"):
        return 400, {"error": "/api/chart needs market=<market or event id>"}
    try:
        data = chart_data(ds, params["market"], venue=params.get("venue") or None,
                          start=params.get("start") or live_start(ds, params["market"], params.get("venue"), now),
                          end=params.get("end") or now,
                          interval=params.get("interval") or None, now=now)
    except RecorderError as exc:
        return 400, {"error": str(exc)}
    return 200, data.to_json()


def live_start(ds: Dataset, market: str, venue: str | None, now: dt.datetime) -> dt.datetime:
    """The live chart's default start: LIVE_WINDOW before `now`, or the market's first row after that."""
    floor = now - LIVE_WINDOW
    row = ds.sql("""
        SELECT min(t) AS t FROM (
            SELECT min(coalesce(ts_event, ts_recv)) AS t FROM chance WHERE market = $market AND ($venue IS NULL OR venue = $venue)
                AND coalesce(ts_event, ts_recv) >= $floor
            UNION ALL
            SELECT min(coalesce(ts_event, ts_recv)) FROM trades WHERE market = $market AND ($venue IS NULL OR venue = $venue)
                AND coalesce(ts_event, ts_recv) >= $floor)""",
                 {"market": market, "venue": venue or None, "floor": floor}).column("t")[0].as_py()
    return floor if row is None or row <= floor else min(row, now - dt.timedelta(seconds=1))
