"""The live page in the daemon's window: `/`, `/api/feeds`, `/api/chart`, `/api/stream`.

The contract (fields, events) is documented in recorder/charts/page.py. Here is how the daemon
keeps it without slowing what it records:

- `LiveHub.run` is one task that wakes every `tick` seconds (0.5 s). It takes the chance rows the
  pipeline buffered since its last look (`Tap`: an index into the buffers, no work per frame on
  the read loop) and the sessions that closed, turns them into `point` and `gap` events for the
  markets some client watches, and every second a `feeds` event. A feed's gap goes to the
  charts of the markets it carries: those it subscribes to, and those it recorded chance, trade
  or book rows of (as the `gaps` query decides). Rows of markets nobody watches are skipped
  without being read.
- Each client (one `/api/stream` connection) has a bounded queue (`queue` events). The hub puts
  events with `send_nowait`; a client whose queue is full (a slow or stalled tab) is dropped: its
  queue is closed, its stream ends, EventSource reconnects and reloads the chart. Nothing ever
  waits on a client. A reader that stops reading altogether is also cut off by the listener's
  per-chunk deadline.
- `/api/chart` copies the buffered rows of chance, sessions, book and trades on the event loop
  (list and array slices: Buffers.peek), plus the rows of a flush being committed and the open
  connections as sessions closed "now", then builds Arrow and runs the query in a worker thread
  over a `PendingDataset` (Parquet UNION ALL the pending rows), at most `chart_queries` at once.
  So the history reaches the present with no hole; a row being committed at that very moment
  may be counted twice (the same point twice: the chart is unchanged).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import time
from functools import partial
from typing import Any, Callable, Iterable

import attrs
import pyarrow as pa
import trio

from .. import schema
from ..charts.page import API_CHART, API_FEEDS, API_STREAM, CHART_PARAMS, api_chart, render_page, sse_event
from ..venues import registry
from .listener import Handler, Request, Response
from .status import Sources
from .tap import Tap, skip
from .window import snapshot_of

log = logging.getLogger("recorder.http")

PENDING_TABLES = ("chance", "sessions", "book", "trades")
STREAM_PARAMS = ("market", "venue")


def feed_markets(feed_cfg) -> list[str]:
    """The markets a configured feed subscribes to, as the `market` column names them."""
    markets = getattr(registry.module(feed_cfg.venue), "markets", None)
    return list(markets(feed_cfg.spec)) if markets is not None else []


@attrs.define(eq=False)
class Client:
    market: str
    venue: str | None
    send: trio.MemorySendChannel

    def wants(self, market: str | None, venue: str | None) -> bool:
        return market is None or (market == self.market and (self.venue is None or venue == self.venue))


@attrs.define
class HubStats:
    ticks: int = 0
    points: int = 0  # point events queued (all clients)
    gaps: int = 0  # gap events made
    dropped: int = 0  # clients dropped because their queue was full
    clients: int = 0  # connected now
    busy_max: float = 0.0  # longest tick, seconds of event loop time


class LiveHub:
    """The live page's side of the daemon: subscribers, the taps, and the events for them."""

    def __init__(self, sources: Sources, *, tick: float = 0.5, queue: int = 1000, replay: float = 3.0,
                 chart_queries: int = 2) -> None:
        self.sources = sources
        self.tick = tick
        self.queue = queue
        self.replay = replay
        self.charts = trio.CapacityLimiter(chart_queries)
        self.clients: set[Client] = set()
        self.stats = HubStats()
        cfgs = sources.config.feeds
        self.venues = {f.name: f.venue for f in cfgs}
        self.carried: dict[str, dict[str, None]] = {f.name: dict.fromkeys(feed_markets(f)) for f in cfgs}
        self.carriers: dict[str, set[str]] = {}  # market -> feeds found carrying it (learn_carriers)
        self.open_gaps: dict[str, int] = {}  # feed -> start (µs) while it is down
        self.recent: collections.deque = collections.deque(maxlen=20_000)  # (mono, market, venue, event)
        self.chance = Tap(sources.pipeline.buffers, "chance")
        self.sessions = Tap(sources.pipeline.buffers, "sessions")
        self.carrier_taps = (Tap(sources.pipeline.buffers, "trades"), Tap(sources.pipeline.buffers, "book"))
        self._feeds_at = 0.0

    # --- what is known -------------------------------------------------------------------------

    def learn_carriers(self, market: str, feeds: Iterable[str]) -> None:
        """Feeds found carrying `market` in its recorded rows (a trades stream of every market, say)."""
        for feed in feeds:
            if feed in self.venues:
                self.carriers.setdefault(market, set()).add(feed)

    def markets_of(self, feed: str) -> list[str]:
        """The markets whose charts a gap of `feed` belongs on."""
        return [*self.carried.get(feed, {}), *(m for m, fs in self.carriers.items()
                                               if feed in fs and m not in self.carried.get(feed, {}))]

    def markets(self, venue: str | None = None) -> set[str]:
        return {m for f, ms in self.carried.items() if venue is None or self.venues[f] == venue for m in ms}

    def feeds_doc(self) -> dict[str, Any]:
        """The /api/feeds document."""
        snap = snapshot_of(self.sources)
        feeds = []
        for f in snap.feeds:
            v = f.view
            feeds.append({"name": v.name, "venue": v.venue, "state": v.state, "since": int(v.since * 1e6),
                          "last_frame_age": round(f.last_frame_age, 3) if f.frames else None, "frames": f.frames,
                          "markets": list(self.carried.get(v.name, {}))})
        return {"now": int(snap.time * 1e6), "feeds": feeds}

    # --- subscribers ---------------------------------------------------------------------------

    def subscribe(self, market: str, venue: str | None) -> tuple[Client, trio.MemoryReceiveChannel]:
        """A new client, its queue primed with the last `replay` seconds of its events (so nothing
        is lost between its /api/chart and its stream) and the gaps still open."""
        send, receive = trio.open_memory_channel(self.queue)
        client = Client(market=market, venue=venue, send=send)
        self.clients.add(client)
        self.stats.clients = len(self.clients)
        horizon = trio.current_time() - self.replay
        backlog = [e for t, m, v, e in self.recent if t >= horizon and client.wants(m, v)]
        backlog += [sse_event("gap", {"feed": f, "start": s, "end": None}) for f, s in self.open_gaps.items()
                    if market in self.markets_of(f) and client.wants(market, self.venues[f])]
        for event in backlog[-self.queue // 2:]:
            send.send_nowait(event)
        return client, receive

    def unsubscribe(self, client: Client) -> None:
        self.clients.discard(client)
        self.stats.clients = len(self.clients)
        client.send.close()

    def publish(self, market: str | None, venue: str | None, event: bytes) -> None:
        """Queue an event for every client that wants it; drop a client whose queue is full."""
        if market is not None:
            self.recent.append((trio.current_time(), market, venue, event))
        for client in list(self.clients):
            if not client.wants(market, venue):
                continue
            try:
                client.send.send_nowait(event)
            except trio.WouldBlock:
                self.stats.dropped += 1
                log.info("live page: dropped a stream client of %s (its queue of %d events is full: a slow reader)",
                         client.market, self.queue)
                self.unsubscribe(client)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.unsubscribe(client)

    # --- the task ------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Look every `tick` seconds until cancelled; `task_status.started(self)`."""
        task_status.started(self)
        while True:
            await trio.sleep(self.tick)
            started = time.perf_counter()
            self.step()
            self.stats.busy_max = max(self.stats.busy_max, time.perf_counter() - started)

    def step(self) -> None:
        """One look at the pipeline: points, gaps, and (every second) the feeds."""
        self.stats.ticks += 1
        self._gaps(self.sessions.take())
        watched = {(c.market, c.venue) for c in self.clients}
        if watched:
            markets = {m for m, _ in watched}
            self._points(self.chance.take(lambda venue, market: market in markets))
            for tap in self.carrier_taps:
                for feed, market in tap.take_keys(markets):
                    self.learn_carriers(market, (feed,))
        else:
            for tap in (self.chance, *self.carrier_taps):
                tap.take(skip)
            self.recent.clear()
        now = trio.current_time()
        if self.clients and now - self._feeds_at >= 1.0:
            self._feeds_at = now
            self.publish(None, None, sse_event("feeds", self.feeds_doc()))

    def _points(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            feed, market = r["feed"], r["market"]
            carried = self.carried.setdefault(feed, {})
            if market not in carried:
                carried[market] = None
            t = r["ts_event"] if r["ts_event"] is not None else r["ts_recv"]
            event = sse_event("point", {"venue": r["venue"], "origin": r["origin"], "outcome": r["outcome"],
                                        "t": t, "p": r["probability"]})
            self.stats.points += 1
            self.publish(market, r["venue"], event)

    def _gaps(self, closed: list[dict[str, Any]]) -> None:
        """A feed whose last connection closed is down from that close until its next connection
        (as the `gaps` query has it): a gap event at each end."""
        opened: dict[str, int] = {}
        for s in self.sources.pipeline.sessions.values():
            opened[s.feed] = min(opened.get(s.feed, s.connected), s.connected)
        for row in sorted(closed, key=lambda r: r["closed"]):
            feed, end = row["feed"], row["closed"]
            if feed in self.open_gaps or (feed in opened and opened[feed] <= end):
                continue  # already down, or another connection is still up
            self.open_gaps[feed] = end
            self._gap_event(feed, end, None)
        for feed, start in list(self.open_gaps.items()):
            if feed in opened and opened[feed] >= start:
                del self.open_gaps[feed]
                self._gap_event(feed, start, opened[feed])

    def _gap_event(self, feed: str, start: int, end: int | None) -> None:
        self.stats.gaps += 1
        event = sse_event("gap", {"feed": feed, "start": start, "end": end})
        venue = self.venues.get(feed)
        for market in self.markets_of(feed):
            self.publish(market, venue, event)

    # --- /api/chart ----------------------------------------------------------------------------

    def peek_pending(self, now_us: int) -> Callable[[], dict[str, pa.Table]]:
        """On the event loop: copy what is buffered (cheap); the returned function builds the Arrow
        tables (call it in a worker thread)."""
        p = self.sources.pipeline
        peeks = {t: p.buffers.peek(t) for t in PENDING_TABLES}
        jobs = p.unpublished_jobs()
        # cut, not yet visible (committing, or held back from publishing): not in the buffers, maybe not in Parquet
        extra = {t: [(k[1], b) for job in jobs for k, bs in job.flush.partitions.items() if k[0] == t for b in bs]
                 for t in PENDING_TABLES}
        opened = [(cid, attrs.asdict(s)) for cid, s in p.sessions.items()]

        def build() -> dict[str, pa.Table]:
            out = {t: peeks[t].to_table(extra.get(t, [])) for t in PENDING_TABLES}
            if opened:
                out["sessions"] = pa.concat_tables([out["sessions"], open_sessions(opened, now_us)])
            return out

        return build


def open_sessions(opened: list[tuple[str, dict]], now_us: int) -> pa.Table:
    """Open connections as `sessions` rows closed now (so the chart counts them as recording)."""
    sch = schema.load("sessions").file_schema
    rows = [{"feed": s["feed"], "ts_event": None, "ts_recv": s["connected"], "conn_id": cid, "url": s["url"],
             "connected": s["connected"], "subscribed": s["subscribed"], "first_frame": s["first_frame"],
             "last_frame": s["last_frame"], "closed": now_us, "close_reason": "open", "frames": s["frames"]}
            for cid, s in opened]
    table = pa.Table.from_pylist(rows, schema=sch)
    return table.add_column(0, pa.field("venue", pa.string(), nullable=False),
                            pa.array([s["venue"] for _, s in opened], pa.string()))


# --- the routes -------------------------------------------------------------------------------


def _json(status: int, doc: Any) -> Response:
    return Response(status=status, body=json.dumps(doc, allow_nan=False).encode() + b"\n",
                    content_type="application/json")


def _bad(message: str) -> Response:
    return _json(400, {"error": message})


def query_params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """One value per parameter, only the allowed ones; ValueError with a one-line reason."""
    for name, values in request.query.items():
        if name not in allowed:
            raise ValueError(f"unknown parameter {name!r}; {request.path} takes {', '.join(allowed)}")
        if len(values) > 1:
            raise ValueError(f"parameter {name!r} is given {len(values)} times; give it once")
    return {name: values[0] for name, values in request.query.items()}


def check_market(hub: LiveHub, params: dict[str, str], *, subscribed: bool) -> None:
    """ValueError unless market is given and venue (if given) is a configured venue; with
    `subscribed`, the market must be one a feed (of that venue) subscribes to."""
    market, venue = params.get("market", ""), params.get("venue")
    if not market:
        raise ValueError(f"{API_STREAM if subscribed else API_CHART} needs market=<market or event id>")
    venues = sorted(set(hub.venues.values()))
    if venue is not None and venue not in venues:
        raise ValueError(f"unknown venue {venue[:60]!r}; the feeds' venues are {', '.join(venues)}")
    if subscribed and market not in hub.markets(venue):
        known = ", ".join(sorted(hub.markets(venue))[:20]) or "none"
        where = f" on venue {venue!r}" if venue else ""
        raise ValueError(f"market {market[:60]!r} is not subscribed by any feed{where}; subscribed: {known}")


def live_routes(hub: LiveHub) -> dict[str, Handler]:
    page = render_page(title="recorder").encode()
    root = hub.sources.pipeline.root

    async def get_page(request: Request) -> Response:
        return Response(body=page, content_type="text/html; charset=utf-8")

    async def get_feeds(request: Request) -> Response:
        return _json(200, hub.feeds_doc())

    async def get_chart(request: Request) -> Response:
        try:
            params = query_params(request, CHART_PARAMS)
            check_market(hub, params, subscribed=False)
        except ValueError as exc:
            return _bad(str(exc))
        now_us = time.time_ns() // 1000
        build = hub.peek_pending(now_us)
        now = dt.datetime.fromtimestamp(now_us / 1e6, dt.timezone.utc)
        status, body, carriers = await trio.to_thread.run_sync(partial(chart_answer, root, build, params, now),
                                                               limiter=hub.charts)
        hub.learn_carriers(params["market"], carriers)
        return _json(status, body)

    async def get_stream(request: Request) -> Response:
        try:
            params = query_params(request, STREAM_PARAMS)
            check_market(hub, params, subscribed=True)
        except ValueError as exc:
            return _bad(str(exc))
        return Response(content_type="text/event-stream", headers=(("X-Accel-Buffering", "no"),),
                        stream=event_stream(hub, params["market"], params.get("venue")))

    async def get_favicon(request: Request) -> Response:
        return Response(status=204)  # none, and no 404 in the browser's console

    return {"/": get_page, "/favicon.ico": get_favicon, API_FEEDS: get_feeds, API_CHART: get_chart,
            API_STREAM: get_stream}


_CARRIERS = """
SELECT DISTINCT feed FROM (
    SELECT feed, venue, ts_recv FROM chance WHERE market = $market UNION ALL
    SELECT feed, venue, ts_recv FROM trades WHERE market = $market UNION ALL
    SELECT feed, venue, ts_recv FROM book WHERE market = $market)
WHERE ($venue IS NULL OR venue = $venue) AND ts_recv >= make_timestamp($start)
"""


def chart_answer(root, build: Callable[[], dict[str, pa.Table]], params: dict[str, str],
                 now: dt.datetime) -> tuple[int, dict[str, Any], list[str]]:
    """Worker thread: the chart over Parquet plus the pending rows, and the feeds that carried
    the market in its range (their gaps are the market's gaps, as the `gaps` query has it)."""
    from ..charts.pending import PendingDataset

    with PendingDataset.open_with(root, build()) as ds:
        status, body = api_chart(ds, params, now=now)
        if status != 200:
            return status, body, []
        feeds = ds.sql(_CARRIERS, {"market": params["market"], "venue": params.get("venue") or None,
                                   "start": body["start"]}).column("feed").to_pylist()
        return status, body, feeds


async def event_stream(hub: LiveHub, market: str, venue: str | None):
    """The body of one /api/stream response: what the hub queues, several events per chunk. The
    client subscribes when the body starts (a HEAD request never does)."""
    client, receive = hub.subscribe(market, venue)
    try:
        yield b"retry: 2000\n\n"  # EventSource: reconnect after 2 s
        async for event in receive:
            chunk = [event]
            while len(chunk) < 200:
                try:
                    chunk.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            yield b"".join(chunk)
    finally:
        hub.unsubscribe(client)


async def run_live_page(sources: Sources, table: dict[str, Handler], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Add the live page's routes to the window's `table` and run its hub until cancelled;
    `task_status.started(hub)`."""
    hub = LiveHub(sources)
    table.update(live_routes(hub))
    await hub.run(task_status=task_status)
