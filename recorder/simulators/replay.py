"""The replay server: a simulator whose data comes from the `raw` table.

Every recorded endpoint (the scheme, host and port of a feed's recorded URL) gets a loopback
listener; the path stays the recorded one, so a client built for the venue connects to
`ws://127.0.0.1:<port>/order/ws` as it would to the venue. A connection follows one recorded
feed (the one on that endpoint and path whose recorded data best matches what the client
subscribes to) and receives its raw frames in recorded order (rebuild.RECEIVED_ORDER: receive time,
each connection's frames in their own order), paced by the recorded receive times divided by `speed` (None: as fast as the
socket takes them). Frames are filtered by the client's subscriptions as the venue filters them:
Outpoll by event id, predict.fun by topic.

The handshake is accepted, never checked: Outpoll AUTH and predict.fun's x-api-key and wallet
JWT are read and forgotten (nothing a client sends is stored). Private feeds (Outpoll orders,
balances and order feed; predict.fun wallet events) are served only when named in `feeds`.

Not replayed: predict.fun's own request replies (the server answers the client's requests with
its own `R`, carrying the client's requestId) and its `system` notices (they concerned the
recording's connections: replaying a reconnect notice would only make the client reconnect).
InTots pings are sent by the server (they are WebSocket pings, never in `raw`); predict.fun
heartbeats and Outpoll PINGs are data frames, replayed as recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import orjson
import trio
import trio_websocket as tw

from ..errors import RecorderError
from ..rebuild import RECEIVED_ORDER
from .base import _is_disconnect

log = logging.getLogger("recorder.replay")

OUTPOLL_PRIVATE_PATHS = ("/order/ws", "/balance/ws")
WALLET = "predictWalletEvents/"
SUBSCRIBE_SETTLE = 0.2  # seconds after a client's first subscription before frames flow (it may send several)
FETCH_ROWS = 4096


@attrs.frozen(kw_only=True)
class RecordedFeed:
    """A feed as the dataset shows it: where it connected and which keys its frames carry."""

    name: str
    venue: str
    url: str  # the recorded URL (secrets already removed by the recorder)
    keys: frozenset[str] = frozenset()  # Outpoll event ids or predict.fun topics seen in its frames

    @property
    def endpoint(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def path(self) -> str:
        parts = urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    @property
    def private(self) -> bool:
        if self.venue == "outpoll":
            return urlsplit(self.url).path in OUTPOLL_PRIVATE_PATHS
        return self.venue == "predictfun" and WALLET in self.keys


@attrs.frozen(kw_only=True)
class Recording:
    """What to replay: the dataset, the time range, the feeds."""

    root: Path
    feeds: tuple[RecordedFeed, ...]
    start_us: int | None = None
    end_us: int | None = None
    first_us: int = 0  # the first frame's receive time in the range: time zero of the replay


def parse_time(value: str | None, what: str) -> int | None:
    """An ISO 8601 time given on the command line (UTC if it has no zone) in microseconds, or None."""
    if value is None:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RecorderError(f"{what} {value!r} is not a time like 2026-11-01T12:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1_000_000)


def _range_sql(rec_start: int | None, rec_end: int | None) -> tuple[str, dict]:
    cond, params = [], {}
    if rec_start is not None:
        cond.append("epoch_us(ts_recv) >= $start")
        params["start"] = rec_start
    if rec_end is not None:
        cond.append("epoch_us(ts_recv) < $end")
        params["end"] = rec_end
    return (" AND " + " AND ".join(cond)) if cond else "", params


def load_recording(root: str | Path, *, start: str | None = None, end: str | None = None,
                   feeds: tuple[str, ...] = ()) -> Recording:
    """Read which feeds the dataset holds (sessions and raw) within [start, end)."""
    from ..dataset import Dataset

    start_us, end_us = parse_time(start, "--start"), parse_time(end, "--end")
    where, params = _range_sql(start_us, end_us)
    with Dataset.open(root) as ds:
        rows = ds.sql(f"""
            SELECT r.feed, r.venue, any_value(s.url) AS url, min(epoch_us(r.ts_recv)) AS first,
                   list(DISTINCT regexp_extract(r.payload, '"(?:e|topic)":"([^"]*)"', 1)) AS keys
            FROM raw r JOIN (SELECT feed, arg_max(url, connected) AS url FROM sessions GROUP BY feed) s USING (feed)
            WHERE true {where.replace('ts_recv', 'r.ts_recv')}
            GROUP BY r.feed, r.venue ORDER BY r.feed""", params).to_pylist()
    known = {r["feed"] for r in rows}
    unknown = [f for f in feeds if f not in known]
    if unknown:
        raise RecorderError(f"--feeds {', '.join(unknown)}: no such feed recorded in this range; recorded: "
                            f"{', '.join(sorted(known)) or 'none'}")
    out = []
    for r in rows:
        keys = frozenset(WALLET if k.startswith(WALLET) else k for k in r["keys"] if k)
        feed = RecordedFeed(name=r["feed"], venue=r["venue"], url=r["url"], keys=keys)
        if (feeds and feed.name not in feeds) or (not feeds and feed.private):
            continue  # private streams replay only when asked for by name
        out.append(feed)
    if not out:
        raise RecorderError(f"nothing to replay from {str(root)!r} in this range (private feeds need --feeds NAME)")
    first = min(r["first"] for r in rows if r["feed"] in {f.name for f in out})
    return Recording(root=Path(root), feeds=tuple(out), start_us=start_us, end_us=end_us, first_us=first)


# --- subscriptions: what a client asked for, and whether a recorded frame matches it --------


@attrs.define
class Subscription:
    venue: str
    path: str
    events: set = attrs.field(factory=set)  # Outpoll event ids
    topics: set = attrs.field(factory=set)  # predict.fun topics (wallet topics as WALLET)
    asked: trio.Event = attrs.field(factory=trio.Event)  # the first subscription arrived
    replies: int = 0  # replies the server sent (its own, not recorded frames)

    @property
    def needs_request(self) -> bool:
        """Does data flow only after the client asks (subscribe, or auth on a private stream)?"""
        if self.venue == "predictfun":
            return True
        return self.venue == "outpoll" and not self.path.startswith("/last-trades/")

    def keys(self) -> set[str]:
        return {e for e in self.events if isinstance(e, str)} | self.topics

    def wants(self, msg) -> bool:
        if not isinstance(msg, dict):
            return True  # not an object: the venue sent it to this connection as it is
        if self.venue == "outpoll":
            return self._wants_outpoll(msg)
        if self.venue == "predictfun":
            return self._wants_predictfun(msg)
        return True

    def _wants_outpoll(self, msg: dict) -> bool:
        """By event id, the unit every Outpoll subscription names (outcomes are not filtered: a
        frame about an event the client follows reaches it as it reached the recorder)."""
        event = msg.get("e")
        if event is None or self.path.split("?")[0] in OUTPOLL_PRIVATE_PATHS or not self.needs_request:
            return True  # PING, replies, account events, last trades (no subscription)
        return event in self.events

    def _wants_predictfun(self, msg: dict) -> bool:
        if msg.get("type") == "R":
            return False  # the server answers the client's own requests
        topic = msg.get("topic")
        if topic == "system":
            return False
        if topic == "heartbeat" or not isinstance(topic, str):
            return True
        return (WALLET if topic.startswith(WALLET) else topic) in self.topics

    def on_client_message(self, text: str) -> list[dict]:
        """Take a client message into the subscription; the replies the server owes it."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return [{"type": "R", "requestId": -1, "success": False,
                     "error": {"code": "invalid_json", "message": "invalid JSON"}}] if self.venue == "predictfun" else []
        if not isinstance(msg, dict):
            return []
        if self.venue == "predictfun":
            return self._predictfun_request(msg)
        kind, event = msg.get("t"), msg.get("e")
        if kind == "AUTH":  # accepted as it is, never checked or kept
            self.asked.set()
        elif kind == "SUBSCRIBE":
            self.events.add(event)
            self.asked.set()
        elif kind == "UNSUBSCRIBE":
            self.events.discard(event)
        return []

    def _predictfun_request(self, msg: dict) -> list[dict]:
        method, params = msg.get("method"), msg.get("params")
        if method not in ("subscribe", "unsubscribe") or not isinstance(params, list):
            return []
        for topic in params:
            if not isinstance(topic, str):
                continue
            key = WALLET if topic.startswith(WALLET) else topic  # the JWT is read and forgotten
            (self.topics.add if method == "subscribe" else self.topics.discard)(key)
        self.asked.set()
        return [{"type": "R", "requestId": msg.get("requestId"), "success": True, "data": None}]


def choose_feed(candidates: list[RecordedFeed], sub: Subscription) -> RecordedFeed:
    """The recorded feed a connection follows: most keys in common with the client's subscriptions."""
    wanted = sub.keys()
    return max(candidates, key=lambda f: (len(f.keys & wanted), -candidates.index(f)))


# --- the server ----------------------------------------------------------------------------


@attrs.define(eq=False)
class ReplayStats:
    connections: int = 0
    sent: dict = attrs.field(factory=dict)  # recorded feed -> frames sent
    replies: dict = attrs.field(factory=dict)  # recorded feed -> the server's own replies (predict.fun R)
    finished: dict = attrs.field(factory=dict)  # recorded feed -> connections that reached the end


class ReplayServer:
    def __init__(self, recording: Recording, *, speed: float | None = 1.0, listen: str = "127.0.0.1:0",
                 ping_interval: float = 50.0) -> None:
        import duckdb

        if speed is not None and speed <= 0:
            raise RecorderError(f"--speed must be positive or 'max', got {speed!r}")
        self.recording, self.speed, self.ping_interval = recording, speed, ping_interval
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise RecorderError(f"--listen {listen!r} must be HOST:PORT, e.g. 127.0.0.1:0")
        self.host, self.port = host, int(port)
        self.ports: dict[str, int] = {}  # recorded endpoint -> local port
        self.stats = ReplayStats()
        self._db = duckdb.connect(":memory:")
        from ..dataset import Dataset

        self._ds = Dataset(recording.root, self._db)
        self._db.execute("SET TimeZone = 'UTC'")
        self._ds.refresh()

    def url(self, feed: RecordedFeed) -> str:
        return f"ws://{self.host}:{self.ports[feed.endpoint]}{feed.path}"

    def urls(self) -> dict[str, str]:
        """Feed name -> the URL that serves it."""
        return {f.name: self.url(f) for f in self.recording.feeds}

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve every recorded endpoint until cancelled."""
        async with trio.open_nursery() as nursery:
            endpoints = sorted({f.endpoint for f in self.recording.feeds})
            for i, endpoint in enumerate(endpoints):
                port = self.port + i if self.port else 0
                server = await nursery.start(self._serve, endpoint, port)
                self.ports[endpoint] = server.port
            task_status.started(self)

    async def _serve(self, endpoint: str, port: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async def handler(request: tw.WebSocketRequest) -> None:
            feeds = [f for f in self.recording.feeds if f.endpoint == endpoint and f.path == request.path]
            if not feeds:
                await request.reject(404, body=b"no recorded feed at this path")
                return
            ws = await request.accept()  # every handshake accepted: credentials are never checked
            try:
                await self._connection(ws, feeds, request.path)
            except BaseException as exc:
                if not _is_disconnect(exc):
                    raise
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await ws.aclose()

        await tw.serve_websocket(handler, self.host, port, ssl_context=None, max_message_size=1 << 22,
                                 task_status=task_status)

    async def _connection(self, ws: tw.WebSocketConnection, feeds: list[RecordedFeed], path: str) -> None:
        self.stats.connections += 1
        sub = Subscription(venue=feeds[0].venue, path=path)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_client, ws, sub)
            if feeds[0].venue == "intots":
                nursery.start_soon(self._pinger, ws)
            if sub.needs_request:
                await sub.asked.wait()
                await trio.sleep(SUBSCRIBE_SETTLE)
            feed = choose_feed(feeds, sub)
            await self._stream(ws, feed, sub)
            self.stats.replies[feed.name] = self.stats.replies.get(feed.name, 0) + sub.replies
            self.stats.finished[feed.name] = self.stats.finished.get(feed.name, 0) + 1
            await trio.sleep_forever()  # the recording is over; the connection stays open until the client goes

    async def _read_client(self, ws: tw.WebSocketConnection, sub: Subscription) -> None:
        while True:
            text = await ws.get_message()
            for reply in sub.on_client_message(text if isinstance(text, str) else text.decode(errors="replace")):
                await ws.send_message(orjson.dumps(reply).decode())
                sub.replies += 1

    async def _pinger(self, ws: tw.WebSocketConnection) -> None:
        while True:
            await trio.sleep(self.ping_interval)
            await ws.ping()

    async def _stream(self, ws: tw.WebSocketConnection, feed: RecordedFeed, sub: Subscription) -> None:
        rec = self.recording
        where, params = _range_sql(rec.start_us, rec.end_us)
        cursor = self._db.cursor()
        try:
            await trio.to_thread.run_sync(lambda: cursor.execute(
                f"SELECT epoch_us(ts_recv), payload FROM raw WHERE feed = $feed {where} ORDER BY {RECEIVED_ORDER}",
                {"feed": feed.name, **params}))
            started = trio.current_time()
            sent = 0
            while True:
                rows = await trio.to_thread.run_sync(cursor.fetchmany, FETCH_ROWS)
                if not rows:
                    break
                for ts, text in rows:
                    if not sub.wants(_parse(text)):
                        continue
                    if self.speed is not None:
                        await trio.sleep_until(started + (ts - rec.first_us) / 1e6 / self.speed)
                    await ws.send_message(text)
                    sent += 1
                self.stats.sent[feed.name] = self.stats.sent.get(feed.name, 0) + sent
                sent = 0
        finally:
            cursor.close()


def _parse(text: str):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def parse_speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise RecorderError(f"--speed {value!r} must be a number (1, 10 ...) or 'max'") from None
    if speed <= 0:
        raise RecorderError(f"--speed {value!r} must be positive")
    return speed
