"""Outpoll: order book, chance history, activity, last trades, and the private order, balance and
order-feed streams. Envelope: `t` type, `e` event id, `o` outcome id(s), `d` payload, `r` error.

Everything PROTOCOLS.md marks ASSUMED for Outpoll is in the block below, in one place, so it is
easy to correct once real traffic is seen.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlsplit

import attrs
import msgspec

from ..config import Opt, Secret
from ..errors import ConfigError
from ..records import Account, Book, Chance, Record, Row, Trade
from ..timeutil import seconds_to_us
from . import base
from .base import NOTHING, Bounded, Control, FrameMeta, PointWindow, UnknownMessage

VENUE = "outpoll"

# --- ASSUMED (no public source; see PROTOCOLS.md) -----------------------------------------
# Order book request bodies: {"t": "UNSUBSCRIBE"|"REQUEST_DATA", "e": event}.
# PRICES_DATA_DELTA items may omit any of c/b/a: merged into the last state by outcome `o`.
# Order book PING needs no reply; no server timestamps on book messages (ts_event null).
# Chart backfill: {"t":"HISTORY","e":..,"o":[..],"d":{"from":s,"to":s}} answered by
#   {"t":"HISTORY","e":..,"o":[..],"d":[{"t":..,"p":..},...]}.
# Activity and last trades: {"t":"TRADE","e":..,"o":..,"d":{"id","p","q","s","ts"}}.
# Order feed payloads are undocumented: every typed message is kept as an account row.
ASSUMED_TRADE_TYPE = "TRADE"
ASSUMED_HISTORY_TYPE = "HISTORY"
# -------------------------------------------------------------------------------------------

DEFAULT_URLS = {
    "order_book": "wss://order-book.outpoll.com/event/ws",
    "chance": "wss://chance-history-service.outpoll.com/ws",
    "orders": "wss://order-service.outpoll.com/order/ws",
    "balances": "wss://wallet-mutator-view.outpoll.com/balance/ws",
    "order_feed": "wss://history-service.outpoll.com/order/ws",
    "activity": "wss://history-service.outpoll.com/history/ws",
    "last_trades": "wss://history-service.outpoll.com/last-trades/ws",
}
PRIVATE = ("orders", "balances", "order_feed")
OPTIONS = {
    "stream": Opt(type=str, required=True),
    "events": Opt(type=list, item=str),
    "subscriptions": Opt(type=list, item=dict),
    "history_seconds": Opt(type=int, default=0),
    "backfill_max_seconds": Opt(type=int, default=86_400),
    "api_key_env": Opt(type=str),
    "api_secret_env": Opt(type=str),
}


@attrs.frozen(kw_only=True)
class FeedSpec:
    stream: str
    events: tuple[str, ...] = ()
    chance_subs: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (event, outcomes)
    activity_subs: tuple[tuple[str, str], ...] = ()  # (event, outcome)
    history_seconds: int = 0
    backfill_max_seconds: int = 86_400  # on a reconnect, ask history from each outcome's last point, this far back at most


def parse_spec(options: dict, path: str, secret) -> tuple[FeedSpec, list[Secret]]:
    stream = options["stream"]
    if stream not in DEFAULT_URLS:
        raise ConfigError(f"{path}.stream must be one of {', '.join(DEFAULT_URLS)} for outpoll, got {stream!r}")
    allowed = {"order_book": {"events"}, "chance": {"subscriptions", "history_seconds", "backfill_max_seconds"},
               "activity": {"subscriptions"}}
    for key in ("events", "subscriptions", "history_seconds", "api_key_env", "api_secret_env"):
        given = options[key] not in (None, 0)
        if given and key not in allowed.get(stream, set()) and not (stream in PRIVATE and key.endswith("_env")):
            raise ConfigError(f"{path}.{key} does not apply to outpoll stream {stream!r}")
    secrets: list[Secret] = []
    if stream in PRIVATE:
        for key in ("api_key_env", "api_secret_env"):
            if options[key] is None:
                raise ConfigError(f"{path}.{key} is required for the private outpoll stream {stream!r}")
        secrets = [secret(k) for k in ("api_key_env", "api_secret_env")]
    if stream == "order_book":
        if not options["events"]:
            raise ConfigError(f"{path}.events must list at least one event id for outpoll order_book")
        return FeedSpec(stream=stream, events=tuple(options["events"])), secrets
    if stream in ("chance", "activity"):
        subs = options["subscriptions"]
        if not subs:
            raise ConfigError(f"{path}.subscriptions must list at least one {{event = ..., ...}} for outpoll {stream}")
        parsed = []
        for i, sub in enumerate(subs):
            p = f"{path}.subscriptions[{i}]"
            key = "outcomes" if stream == "chance" else "outcome"
            if set(sub) != {"event", key}:
                raise ConfigError(f"{p} must have exactly the keys event and {key}, got {sorted(sub)}")
            if not isinstance(sub["event"], str):
                raise ConfigError(f"{p}.event must be a string, got {sub['event']!r}")
            if stream == "chance":
                if not isinstance(sub[key], list) or not sub[key] or not all(isinstance(o, str) for o in sub[key]):
                    raise ConfigError(f"{p}.outcomes must be a non-empty list of strings, got {sub[key]!r}")
                parsed.append((sub["event"], tuple(sub[key])))
            else:
                if not isinstance(sub[key], str):
                    raise ConfigError(f"{p}.outcome must be a string, got {sub[key]!r}")
                parsed.append((sub["event"], sub[key]))
        if stream == "chance":
            for key in ("history_seconds", "backfill_max_seconds"):
                if options[key] < 0:
                    raise ConfigError(f"{path}.{key} must be 0 or more, got {options[key]}")
            return FeedSpec(stream=stream, chance_subs=tuple(parsed), history_seconds=options["history_seconds"],
                            backfill_max_seconds=options["backfill_max_seconds"]), secrets
        return FeedSpec(stream=stream, activity_subs=tuple(parsed)), secrets
    return FeedSpec(stream=stream), secrets


def default_url(spec: FeedSpec) -> str:
    return DEFAULT_URLS[spec.stream]


def handshake_headers(spec: FeedSpec, secrets: tuple[Secret, ...]) -> list[tuple[str, str]]:
    return []


# --- auth -----------------------------------------------------------------------------------


def b64url_decode(text: str) -> bytes:
    """base64url decode, re-padding a secret that arrives without '='."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signature(api_secret: str, timestamp: str, path: str) -> str:
    """base64url, unpadded, of HMAC-SHA256(key=base64url_decode(secret), timestamp + 'GET' + path)."""
    mac = hmac.new(b64url_decode(api_secret), (timestamp + "GET" + path).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def auth_frame(api_key: str, api_secret: str, now: float, path: str) -> str:
    ts = str(int(now))
    return json.dumps({"t": "AUTH", "d": {"apiKey": api_key, "signature": signature(api_secret, ts, path), "timestamp": ts}})


# --- connection control ----------------------------------------------------------------------


class Protocol:
    """Frames to send on connect; reads auth and subscription replies."""

    def __init__(self, spec: FeedSpec, secrets: tuple[Secret, ...], url: str) -> None:
        self.spec = spec
        self._secrets = secrets
        self._path = urlsplit(url).path or "/"
        self.subscribed = False
        self.last_points: dict[tuple[str, str], float] = {}  # (event, outcome) -> time of the last point recorded

    def resume(self, decoder: "Decoder | None") -> None:
        """Before on_open: where the feed's recorded chart ends, per outcome (gap-aware backfill)."""
        if decoder is not None and self.spec.stream == "chance" and self.spec.backfill_max_seconds:
            self.last_points = decoder.last_points()

    def on_open(self, now: float) -> tuple[list[str], bool]:
        """(frames to send, subscribed already). `now` is unix seconds for the AUTH timestamp."""
        s = self.spec
        if s.stream in PRIVATE:
            key, secret = (x.value for x in self._secrets)
            return [auth_frame(key, secret, now, self._path)], False
        if s.stream == "order_book":
            return [json.dumps({"t": "SUBSCRIBE", "e": e}) for e in s.events], False
        if s.stream == "chance":
            frames = [json.dumps({"t": "SUBSCRIBE", "e": e, "o": list(o)}) for e, o in s.chance_subs]
            return frames + self._history_requests(int(now)), False
        if s.stream == "activity":
            return [json.dumps({"t": "SUBSCRIBE", "e": e, "o": o}) for e, o in s.activity_subs], False
        return [], True  # last_trades: connect and read

    def _history_requests(self, to: int) -> list[str]:
        """Per outcome the feed has recorded points for: history from its last point (backfill,
        at most backfill_max_seconds back). For the others: the fixed history_seconds window."""
        s, out = self.spec, []
        for e, outcomes in s.chance_subs:
            fresh = [o for o in outcomes if (e, o) not in self.last_points]
            for o in outcomes:
                if (e, o) in self.last_points:
                    start = max(int(self.last_points[(e, o)]), to - s.backfill_max_seconds)
                    out.append(json.dumps({"t": ASSUMED_HISTORY_TYPE, "e": e, "o": [o], "d": {"from": start, "to": to}}))
            if fresh and s.history_seconds:
                out.append(json.dumps({"t": ASSUMED_HISTORY_TYPE, "e": e, "o": fresh,
                                       "d": {"from": to - s.history_seconds, "to": to}}))
        return out

    def expected_keys(self) -> set[str]:
        """Events whose book or chance stream must keep sending (trades and account events may be rare)."""
        if self.spec.stream == "order_book":
            return set(self.spec.events)
        if self.spec.stream == "chance":
            return {e for e, _ in self.spec.chance_subs}
        return set()

    @staticmethod
    def data_key(text: str) -> str | None:
        """The event id of a message (PING and success replies carry none)."""
        i = text.find('"e":"')
        return None if i < 0 else text[i + 5 : text.find('"', i + 5)]

    def quiet(self, texts: list[str]) -> bool:
        """True if no frame of this run needs on_frame (the feed then skips it for the run): once
        subscribed, only error replies do, and no frame mentions "rror" anywhere."""
        return self.subscribed and "rror" not in "".join(texts)

    def on_frame(self, text: str) -> Control:
        if self.subscribed and text.find("rror", 0, 64) < 0:
            return NOTHING
        msg = base.control_message(text)
        if msg is None:
            return NOTHING
        kind = str(msg.get("t", "")).lower()
        if kind == "error" or msg.get("r"):
            detail = msg.get("d") if isinstance(msg.get("d"), dict) else {}
            err = str(detail.get("error") or msg.get("r") or "error")
            if "credential" in err.lower() or "auth" in err.lower():
                return Control(fatal=f"auth rejected: {err}")
            return Control(error=f"venue error: {err}")
        if self.subscribed or kind == "ping":
            return NOTHING
        # A success or SUBSCRIBED reply, or any data (balance deltas carry no `t`), means we are in.
        self.subscribed = True
        return Control(subscribed=True)


def make_protocol(spec: FeedSpec, secrets: tuple[Secret, ...], url: str) -> Protocol:
    return Protocol(spec, secrets, url)


# --- decoding ---------------------------------------------------------------------------------


class Decoder:
    """Outpoll frames -> book, chance, trades and account rows."""

    def __init__(self, spec: FeedSpec) -> None:
        self.spec = spec
        self.books: dict[str, dict[str, dict[str, float | None]]] = {}  # event -> outcome -> {c,b,a}
        self.points = PointWindow(50_000)  # chance points recorded: (event, outcome, t, p)
        self.trades = Bounded(20_000)  # trade ids recorded
        self.subscribes: dict[str, int] = {}  # chance: event -> subscriptions the venue confirmed
        if spec.stream == "order_book":  # snapshots and deltas: see _book_run
            self.decode_run = self._book_run
        elif spec.stream in ("activity", "last_trades"):
            self.decode_run = self._trade_run
        elif spec.stream != "chance":  # only chance streams are nearly all live points
            self.decode_run = None

    def state(self) -> dict:
        return {"books": self.books, "points": self.points.state(), "trades": self.trades.items(),
                "subscribes": self.subscribes}

    def restore(self, state: dict) -> None:
        self.books = state.get("books", {})
        self.points = PointWindow(50_000, state.get("points"))
        self.trades = Bounded(20_000, state.get("trades"))
        self.subscribes = dict(state.get("subscribes", {}))

    def last_points(self) -> dict[tuple[str, str], float]:
        """(event, outcome) -> time (unix seconds) of the latest point recorded, for backfill."""
        return {(st.market, st.outcome): st.latest for by in self.points.streams.values() for st in by.values()
                if st.latest > float("-inf")}

    def decode(self, text: str, meta: FrameMeta) -> list[Record]:
        msg = base.parse_json(text)
        if type(msg) is dict:  # the common case, dispatched without the checks below
            kind = msg.get("t")
            handler = _HANDLERS.get(kind) if type(kind) is str else None
            if handler is not None:
                return handler(self, msg, meta)
        msg = base.obj(msg, "frame")
        kind = msg.get("t")
        if kind is None:
            if self.spec.stream == "balances" and "a" in msg:
                return [self._account(meta, "balance_delta", msg, order_id=None, status=None)]
            raise UnknownMessage("frame has no type field 't'")
        kind = base.text(kind, "t")
        handler = _HANDLERS.get(kind) or _HANDLERS.get(kind.lower())
        if handler is not None:
            return handler(self, msg, meta)
        if self.spec.stream in PRIVATE:
            return [self._account(meta, kind, msg.get("d"), order_id=None, status=None)]
        raise UnknownMessage(f"unknown message type t={kind!r}")

    # book ----------------------------------------------------------------------------------
    def _prices(self, msg: dict, meta: FrameMeta, *, snapshot: bool) -> list[Record]:
        event = base.text(msg.get("e"), "e")
        items = base.lst(msg.get("d"), "d")
        book = self.books.setdefault(event, {})
        changed: list[str] = []
        fresh: dict[str, dict] = {}
        for i, item in enumerate(items):
            item = base.obj(item, f"d[{i}]")
            outcome = base.text(item.get("o"), f"d[{i}].o")
            new = dict(book.get(outcome, {"c": None, "b": None, "a": None})) if not snapshot else {"c": None, "b": None, "a": None}
            for key in ("c", "b", "a"):
                if key in item:
                    new[key] = base.opt_number(item[key], f"d[{i}].{key}")
            fresh[outcome] = new
        for outcome, new in fresh.items():
            if not snapshot or book.get(outcome) != new:
                changed.append(outcome)
            book[outcome] = new
        row, venue, feed, ts_recv, conn_id, seq = Book.row, meta.venue, meta.feed, meta.ts_recv, meta.conn_id, meta.seq
        return [row(venue=venue, feed=feed, ts_event=None, ts_recv=ts_recv, conn_id=conn_id, seq=seq, market=event,
                    outcome=o, best_bid=book[o]["b"], best_ask=book[o]["a"], last=book[o]["c"]) for o in changed]

    def _book_run(self, texts: list[str], meta: FrameMeta, buffers, slow) -> int:
        """A run of an order-book stream (base.Decoder.decode_run): snapshots and deltas whose
        fields are plain numbers or null are parsed by msgspec and merged exactly as _prices merges
        them, rows appended column by column; anything else goes to slow(i), in order, before any
        state is touched (tests/test_fastpaths.py)."""
        first, ts_recv = meta.seq, meta.ts_recv  # slow() moves meta.seq
        parse, books, unset = _PRICES.decode, self.books, msgspec.UNSET
        appends = None
        n = 0
        for i, text in enumerate(texts):
            try:
                msg = parse(text)
            except (ValueError, RecursionError):  # msgspec's DecodeError and ValidationError
                slow(i)
                continue
            event = msg.e
            if type(event) is int:
                if not base.INT_ID_MIN <= event < base.INT_ID_END:
                    slow(i)
                    continue
                event = str(event)
            if any(type(item.o) is int and not base.INT_ID_MIN <= item.o < base.INT_ID_END for item in msg.d):
                slow(i)
                continue
            snapshot = type(msg) is _Snapshot
            book = books.setdefault(event, {})
            fresh: dict[str, dict] = {}
            for item in msg.d:
                outcome = item.o if type(item.o) is str else str(item.o)
                new = {"c": None, "b": None, "a": None} if snapshot else dict(book.get(outcome, _NO_PRICES))
                if item.c is not unset:
                    new["c"] = item.c
                if item.b is not unset:
                    new["b"] = item.b
                if item.a is not unset:
                    new["a"] = item.a
                fresh[outcome] = new
            changed = []
            for outcome, new in fresh.items():
                if not snapshot or book.get(outcome) != new:
                    changed.append(outcome)
                book[outcome] = new
            if not changed:
                continue
            if appends is None:
                cols = buffers.columns("book", meta.venue, (("feed", meta.feed), ("conn_id", meta.conn_id),
                                                            ("ts_event", None), ("bids", None), ("asks", None),
                                                            ("depth", None)),
                                       "ts_recv", nullable=("best_bid", "best_ask", "last"))
                appends = cols.appenders("ts_recv", "seq", "market", "outcome", "best_bid", "best_ask", "last")
                a_recv, a_seq, a_market, a_outcome, a_bid, a_ask, a_last = appends
            for outcome in changed:
                prices = book[outcome]
                a_recv(ts_recv)
                a_seq(first + i)
                a_market(event)
                a_outcome(outcome)
                a_bid(prices["b"])
                a_ask(prices["a"])
                a_last(prices["c"])
            n += len(changed)
        return n

    def _snapshot(self, msg: dict, meta: FrameMeta) -> list[Record]:
        return self._prices(msg, meta, snapshot=True)

    def _delta(self, msg: dict, meta: FrameMeta) -> list[Record]:
        return self._prices(msg, meta, snapshot=False)

    # chance --------------------------------------------------------------------------------
    def _point(self, msg: dict, meta: FrameMeta) -> list[Record]:
        # The common case, checked inline: one outcome, a numeric time and probability. It gives
        # exactly the rows _chance gives (tests/test_decoders.py compares the two on generated
        # points); anything else, malformed frames included, goes the checked way.
        d, event, outcomes = msg.get("d"), msg.get("e"), msg.get("o")
        if type(d) is dict and type(event) is str and type(outcomes) is list and len(outcomes) == 1:
            t, p, outcome = d.get("t"), d.get("p"), outcomes[0]
            if (type(outcome) is str and type(t) in _NUMBERS and type(p) in _NUMBERS and 0 <= p <= 1
                    and -_MAX_SECONDS < t < _MAX_SECONDS):
                t = float(t)
                key = (event, outcome, t, float(p))
                if not self.points.add_new(key):
                    return []
                return [Chance.row(venue=meta.venue, feed=meta.feed, ts_event=round(t * 1_000_000),
                                   ts_recv=meta.ts_recv, conn_id=meta.conn_id, seq=meta.seq, market=key[0],
                                   outcome=key[1], probability=key[3], origin=VENUE, source="live")]
        return self._chance(msg, meta, [base.obj(d, "d")], source="live")

    def decode_run(self, texts: list[str], meta: FrameMeta, buffers, slow) -> int:
        """A run of frames of a chance stream (base.Decoder.decode_run): live points of one outcome
        (nearly every frame) are parsed by msgspec into a typed struct and appended column by
        column; anything else, malformed frames included, goes to slow(i), in order. Rows, their
        values and the dedupe window are exactly what decode() gives (tests/test_decoders.py)."""
        first = meta.seq
        window = self.points
        streams, size, add_new, parse = window.streams, window.size, window.add_new, _LIVE_POINT.decode
        appends = None
        n = 0
        for i, text in enumerate(texts):
            try:
                msg = parse(text)
            except (ValueError, RecursionError):  # msgspec's DecodeError and ValidationError: not a well-formed live point
                slow(i)
                continue
            d = msg.d
            t, p = d.t, d.p
            if not (0 <= p <= 1 and -_MAX_SECONDS < t < _MAX_SECONDS):
                slow(i)
                continue
            by_outcome = streams.get(msg.e)
            st = None if by_outcome is None else by_outcome.get(msg.o[0])
            if st is None:
                st = window.stream(msg.e, msg.o[0])
            if t > st.latest:  # in order: new for sure; what PointWindow.add_new does
                st.ts.append(t)
                st.ps.append(p)
                st.latest = t
                window.added += 1
                if window.added >= size:
                    window.rotate()
            elif not add_new((st.market, st.outcome, t, p)):
                continue
            market, outcome = st.market, st.outcome  # the window's shared strings
            if appends is None:
                appends = base.live_chance_appenders(buffers, meta, VENUE, seconds=("ts_event",))
                a_ts, a_recv, a_seq, a_market, a_outcome, a_p = appends
                ts_recv = meta.ts_recv
            a_ts(t)  # seconds, as seconds_to_us converts them (Columns)
            a_recv(ts_recv)
            a_seq(first + i)
            a_market(market)
            a_outcome(outcome)
            a_p(p)
            n += 1
        return n

    def _history(self, msg: dict, meta: FrameMeta) -> list[Record]:
        # A reply after the event's first subscription (a reconnect, or a restart with the state
        # restored) answers a backfill request: the recorder asked for its own gap.
        event = msg.get("e")
        source = "backfill" if type(event) is str and self.subscribes.get(event, 0) > 1 else "history"
        return self._chance(msg, meta, [base.obj(p, "d[]") for p in base.lst(msg.get("d"), "d")], source=source)

    def _chance(self, msg: dict, meta: FrameMeta, points: list[dict], *, source: str) -> list[Record]:
        event = base.text(msg.get("e"), "e")  # the dedupe window keeps its own shared copies of ids
        outcomes = [base.text(o, "o[]") for o in base.lst(msg.get("o"), "o")]
        out: list[Row] = []
        add_new, row = self.points.add_new, Chance.row
        for point in points:
            t = base.number(point.get("t"), "d.t")
            p = base.probability(point.get("p"), "d.p")
            ts = seconds_to_us(t)
            for outcome in outcomes:
                if add_new((event, outcome, t, p)):
                    out.append(row(venue=meta.venue, feed=meta.feed, ts_event=ts, ts_recv=meta.ts_recv,
                                   conn_id=meta.conn_id, seq=meta.seq, market=event, outcome=outcome, probability=p,
                                   origin=VENUE, source=source))
        return out

    # trades --------------------------------------------------------------------------------
    def _trade(self, msg: dict, meta: FrameMeta) -> list[Record]:
        d = base.obj(msg.get("d"), "d")
        trade_id = base.opt_text(d.get("id"), "d.id")
        if trade_id is not None:
            if trade_id in self.trades:
                return []
            self.trades.add(trade_id)
        price, size = base.opt_number(d.get("p"), "d.p"), base.opt_number(d.get("q"), "d.q")
        ts = d.get("ts")
        outcome = msg.get("o")
        if isinstance(outcome, list):
            outcome = outcome[0] if outcome else None
        return [Trade(ts_event=None if ts is None else seconds_to_us(base.number(ts, "d.ts")),
                      market=base.text(msg.get("e"), "e"), outcome=base.opt_text(outcome, "o"),
                      side=base.opt_text(d.get("s"), "d.s"), price=price, size=size,
                      notional=None if price is None or size is None else price * size, trade_id=trade_id,
                      **meta.common())]

    def _trade_run(self, texts: list[str], meta: FrameMeta, buffers, slow) -> int:
        """A run of an activity or last-trades stream (base.Decoder.decode_run): well-formed trade
        prints are parsed by msgspec, deduplicated by id as _trade does and appended column by
        column; anything else goes to slow(i), in order, before any state is touched."""
        first, ts_recv = meta.seq, meta.ts_recv  # slow() moves meta.seq
        parse, add_new = _TRADE.decode, self.trades.add_new
        appends = None
        n = 0
        for i, text in enumerate(texts):
            try:
                msg = parse(text)
            except (ValueError, RecursionError):  # msgspec's DecodeError and ValidationError
                slow(i)
                continue
            d, market, outcome = msg.d, msg.e, msg.o
            if type(outcome) is list:
                outcome = outcome[0] if outcome else None
            trade_id, ts = d.id, d.ts
            if ts is not None:
                ts = ts * 1_000_000
                if not -_MAX_US <= ts <= _MAX_US:
                    slow(i)
                    continue
                ts = round(ts)
            if any(type(v) is int and not base.INT_ID_MIN <= v < base.INT_ID_END for v in (market, outcome, trade_id)):
                slow(i)
                continue
            if trade_id is not None:
                trade_id = trade_id if type(trade_id) is str else str(trade_id)
                if not add_new(trade_id):
                    continue
            if appends is None:
                cols = buffers.columns("trades", meta.venue, (("feed", meta.feed), ("conn_id", meta.conn_id),
                                                              ("event", None), ("notional_minor", None),
                                                              ("trader", None), ("source", "live")),
                                       "ts_event", nullable=("ts_event", "price", "size", "notional"))
                a_ts, a_recv, a_seq, a_market, a_outcome, a_side, a_price, a_size, a_notional, a_id = cols.appenders(
                    "ts_event", "ts_recv", "seq", "market", "outcome", "side", "price", "size", "notional", "trade_id")
                appends = True
            price, size = d.p, d.q
            a_ts(ts)
            a_recv(ts_recv)
            a_seq(first + i)
            a_market(market if type(market) is str else str(market))
            a_outcome(outcome if outcome is None or type(outcome) is str else str(outcome))
            a_side(d.s)
            a_price(price)
            a_size(size)
            a_notional(None if price is None or size is None else price * size)
            a_id(trade_id)
            n += 1
        return n

    # private -------------------------------------------------------------------------------
    def _account(self, meta: FrameMeta, kind: str, payload: Any, *, order_id: str | None, status: str | None,
                 market: str | None = None) -> Account:
        return Account(ts_event=None, stream=self.spec.stream, kind=kind, order_id=order_id, market=market,
                       status=status, payload=base.compact(payload), **meta.common())

    def _order(self, msg: dict, meta: FrameMeta) -> list[Record]:
        d = base.obj(msg.get("d"), "d")
        return [self._account(meta, base.text(msg["t"], "t"), d, order_id=base.opt_text(d.get("i"), "d.i"),
                              status=base.opt_text(d.get("s"), "d.s"), market=base.opt_text(msg.get("e"), "e"))]

    def _success(self, msg: dict, meta: FrameMeta) -> list[Record]:
        d = msg.get("d")
        if self.spec.stream == "chance" and type(msg.get("e")) is str:
            self.subscribes[msg["e"]] = self.subscribes.get(msg["e"], 0) + 1
        if self.spec.stream == "balances" and isinstance(d, dict) and "l" in d:
            items = base.lst(d["l"], "d.l")
            return [self._account(meta, "balance_snapshot", base.obj(item, "d.l[]"), order_id=None, status=None)
                    for item in items]
        return []

    def _control(self, msg: dict, meta: FrameMeta) -> list[Record]:
        return []


_NUMBERS = (int, float)  # exact types: bool is not a number here


class _PointData(msgspec.Struct, gc=False):
    t: float
    p: float


class _Update(msgspec.Struct, tag_field="t", tag="UPDATE_HISTORY", gc=False):
    e: str
    o: tuple[str]  # exactly one outcome
    d: _PointData


class _Probability(msgspec.Struct, tag_field="t", tag="probability", gc=False):
    e: str
    o: tuple[str]
    d: _PointData


# A live point of one outcome as a typed struct, or a ValueError: msgspec checks the envelope's
# types in C (a JSON integer becomes a float, as float() makes it on the checked path; a bool
# does not). The structs hold no cycles, so the garbage collector need not track them.
_LIVE_POINT = msgspec.json.Decoder(_Update | _Probability)
_MAX_SECONDS = 9e12  # well inside what timestamp[us] holds; beyond it the checked path rejects the frame

class _PriceItem(msgspec.Struct, gc=False):
    o: str | int
    c: float | None | msgspec.UnsetType = msgspec.UNSET  # missing: keep the last value; null: none
    b: float | None | msgspec.UnsetType = msgspec.UNSET
    a: float | None | msgspec.UnsetType = msgspec.UNSET


class _Snapshot(msgspec.Struct, tag_field="t", tag="PRICES_DATA", gc=False):
    e: str | int
    d: list[_PriceItem]


class _Delta(msgspec.Struct, tag_field="t", tag="PRICES_DATA_DELTA", gc=False):
    e: str | int
    d: list[_PriceItem]


# Book snapshots and deltas of plain numbers (or null) as typed structs, or a ValueError: numeric
# strings, bools and numbers beyond a double go the checked way (which accepts or rejects them).
_PRICES = msgspec.json.Decoder(_Snapshot | _Delta)
_NO_PRICES = {"c": None, "b": None, "a": None}

class _TradeData(msgspec.Struct, gc=False):
    id: str | int | None = None
    p: float | None = None
    q: float | None = None
    s: str | None = None
    ts: float | None = None


class _TradePrint(msgspec.Struct, tag_field="t", tag=ASSUMED_TRADE_TYPE, gc=False):
    e: str | int
    d: _TradeData
    o: str | int | None | list[str | int | None] = None


# A trade print of plain values as a typed struct, or a ValueError (that frame goes the checked way).
_TRADE = msgspec.json.Decoder(_TradePrint)
_MAX_US = 2**63 - 1  # timeutil.MAX_US

_HANDLERS = {
    "PRICES_DATA": Decoder._snapshot,
    "PRICES_DATA_DELTA": Decoder._delta,
    "probability": Decoder._point,
    "UPDATE_HISTORY": Decoder._point,
    ASSUMED_HISTORY_TYPE: Decoder._history,
    ASSUMED_TRADE_TYPE: Decoder._trade,
    "ORDER_UPDATE": Decoder._order,
    "TPSL_UPDATE": Decoder._order,
    "success": Decoder._success,
    "subscribed": Decoder._control,
    "SUBSCRIBED": Decoder._control,
    "ping": Decoder._control,
    "PING": Decoder._control,
    "error": Decoder._control,
    "ERROR": Decoder._control,
    "unsubscribed": Decoder._control,
}


def make_decoder(spec: FeedSpec) -> Decoder:
    return Decoder(spec)


def markets(spec: FeedSpec) -> tuple[str, ...]:
    """The markets (event ids) a feed subscribes to, as the `market` column names them (the live page)."""
    return tuple(dict.fromkeys([*spec.events, *(e for e, _ in spec.chance_subs), *(e for e, _ in spec.activity_subs)]))
