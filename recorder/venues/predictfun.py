"""predict.fun: order books (with settled orders as trades), Polymarket and Kalshi chances relayed
by predict.fun, asset prices, and private wallet events.

The API key goes in the `x-api-key` handshake header. The wallet-events JWT is part of the topic
name: it is appended at connect time only, and every received frame has it replaced by `***`
before it is journaled, so the stored topic is `predictWalletEvents/***`.

A reconnect notice (or any 1001 close) means: open a new connection, subscribe again, keep reading
the old one until it closes. Both connections feed one decoder, which drops the overlap by content
(order books by time and levels, chances and prices by time and value, settlements by id).
"""

from __future__ import annotations

import json
import math
import sys
from itertools import compress, repeat
from typing import Literal

import attrs
import msgspec

from ..config import Opt, Secret
from ..errors import ConfigError
from ..records import Account, Book, Chance, Price, Record, Trade
from ..timeutil import ms_to_us
from . import base, levels

try:  # the compiled book reader (setup.py); built wherever a C compiler is found
    from .. import _speedups
except ImportError:
    _speedups = None
from .base import NOTHING, Bounded, Control, FrameMeta, UnknownMessage

VENUE = "predictfun"
DEFAULT_URL = "wss://ws.predict.fun/ws"
WALLET = "predictWalletEvents"
TOPICS = ("predictOrderbook", "polymarketChance", "kalshiChance", "assetPriceUpdate", WALLET)
CHANCE_SCALE = 100  # ASSUMED: percentage on a 0..100 scale
REDACTED = "***"
_NUMBERS = (int, float)  # exact types: bool is not a number here
OPTIONS = {
    "topics": Opt(type=list, item=str, required=True),
    "api_key_env": Opt(type=str),
    "jwt_env": Opt(type=str),
}


@attrs.frozen(kw_only=True)
class FeedSpec:
    topics: tuple[str, ...]
    api_key_env: str | None = None
    jwt_env: str | None = None


def parse_spec(options: dict, path: str, secret) -> tuple[FeedSpec, list[Secret]]:
    topics = options["topics"]
    if not topics:
        raise ConfigError(f"{path}.topics must list at least one topic")
    wallet = False
    for i, topic in enumerate(topics):
        name, _, param = topic.partition("/")
        param = sys.intern(param)  # kept in dedupe keys
        if name not in TOPICS:
            raise ConfigError(f"{path}.topics[{i}]: unknown topic {name!r}; topics: {', '.join(TOPICS)}")
        if name == WALLET:
            if param:
                raise ConfigError(f"{path}.topics[{i}]: write the wallet topic as {WALLET!r}; the JWT is appended"
                                  " from the environment variable named by jwt_env, never written in the config")
            wallet = True
        elif not param:
            raise ConfigError(f"{path}.topics[{i}] must be {name}/<id>, got {topic!r}")
    secrets = []
    if options["api_key_env"] is not None:
        secrets.append(secret("api_key_env"))
    if wallet:
        if options["jwt_env"] is None:
            raise ConfigError(f"{path}.jwt_env is required for the {WALLET} topic")
        secrets.append(secret("jwt_env"))
    elif options["jwt_env"] is not None:
        raise ConfigError(f"{path}.jwt_env applies only with the {WALLET} topic")
    return FeedSpec(topics=tuple(topics), api_key_env=options["api_key_env"], jwt_env=options["jwt_env"]), secrets


def default_url(spec: FeedSpec) -> str:
    return DEFAULT_URL


def _secret(secrets: tuple[Secret, ...], env: str | None) -> str | None:
    return next((s.value for s in secrets if env is not None and s.env == env), None)


def handshake_headers(spec: FeedSpec, secrets: tuple[Secret, ...]) -> list[tuple[str, str]]:
    key = _secret(secrets, spec.api_key_env)
    return [("x-api-key", key)] if key else []


class Protocol:
    """Subscribes, echoes heartbeats, reads request responses and the reconnect notice."""

    def __init__(self, spec: FeedSpec, secrets: tuple[Secret, ...]) -> None:
        self.spec = spec
        self._jwt = _secret(secrets, spec.jwt_env)
        self.pending: dict[int, str] = {}  # requestId -> topic (secrets removed)
        self.subscribed = False

    def on_open(self, now: float) -> tuple[list[str], bool]:
        frames = []
        for i, topic in enumerate(self.spec.topics, start=1):
            wire = f"{WALLET}/{self._jwt}" if topic == WALLET else topic
            self.pending[i] = f"{WALLET}/{REDACTED}" if topic == WALLET else topic
            frames.append(json.dumps({"method": "subscribe", "requestId": i, "params": [wire]}))
        return frames, False

    def expected_keys(self) -> set[str]:
        """Topics that must keep pushing data (wallet events may be rare: not watched)."""
        return {t for t in self.spec.topics if t != WALLET}

    @staticmethod
    def data_key(text: str) -> str | None:
        """The topic of a data push (None for heartbeats, system notices and responses)."""
        i = text.find('"topic":"')
        if i < 0:
            return None
        topic = text[i + 9 : text.find('"', i + 9)]
        return None if topic in ("heartbeat", "system") else topic

    @staticmethod
    def quiet(texts: list[str]) -> bool:
        """True if no frame of this run needs on_frame (the feed then skips it for the run): only
        heartbeats, system notices and request responses ("R") do, and no frame mentions one (nor
        a \\u escape, which could spell one)."""
        run = "".join(texts)
        return "heartbeat" not in run and "system" not in run and '"R"' not in run and "\\u" not in run

    def on_frame(self, text: str) -> Control:
        if (text.find('"M"', 0, 48) >= 0 and text.find('"heartbeat"', 0, 80) < 0
                and text.find('"system"', 0, 80) < 0):
            return NOTHING  # a data push: the fast path
        msg = base.control_message(text)
        if msg is None:
            return NOTHING
        if msg.get("type") == "M":
            topic = msg.get("topic")
            if topic == "heartbeat":
                return Control(send=(json.dumps({"method": "heartbeat", "data": msg.get("data")}),))
            if topic == "system" and isinstance(msg.get("data"), dict) and msg["data"].get("event") == "reconnect":
                return Control(reconnect=f"venue reconnect notice ({msg['data'].get('reason', 'no reason')})")
            return NOTHING
        if msg.get("type") == "R":
            topic = self.pending.pop(msg.get("requestId"), "?") if isinstance(msg.get("requestId"), int) else "?"
            if msg.get("success") is True:
                if not self.subscribed:
                    self.subscribed = True
                    return Control(subscribed=True)
                return NOTHING
            err = msg.get("error") if isinstance(msg.get("error"), dict) else {}
            code = err.get("code", "unknown")
            if code == "invalid_credentials":
                return Control(fatal=f"wallet JWT rejected (invalid_credentials) for {topic}")
            return Control(error=f"subscribe {topic} failed: {code}: {err.get('message', '')}")
        return NOTHING


def make_protocol(spec: FeedSpec, secrets: tuple[Secret, ...], url: str) -> Protocol:
    return Protocol(spec, secrets)


class Decoder:
    """predict.fun pushes -> book, trades (settled orders), chance, prices and account rows."""

    def __init__(self, spec: FeedSpec) -> None:
        self.spec = spec
        self.seen = Bounded(20_000)  # content keys of recorded pushes (overlap dedupe)
        self.settled = Bounded(20_000)  # lastOrderSettled ids recorded
        # Reading a run's levels at once costs ~0.1-0.2 ms whatever the run's size: a shorter run (a
        # feed at a venue's everyday pace delivers one frame at a time) is cheaper frame by frame.
        self.small_run = SMALL_RUN
        # The compiled reader takes runs of any length (its fixed cost is a few microseconds).
        self.compiled = _speedups is not None and compiled_reader_ok()
        self.data_only = False  # decode_run: was every frame of the last run a book push (base.Decoder)

    def state(self) -> dict:
        return {"seen": self.seen.items(), "settled": self.settled.items()}

    def decode_run(self, texts: list[str], meta: FrameMeta, buffers, slow) -> int:
        """A run of pushes (base.Decoder.decode_run): order books and relayed chances, well formed
        and of plain numbers, are parsed by msgspec into typed structs and appended column by
        column, the books' levels read for the whole run at once into flat arrays (levels.py);
        anything else, malformed frames included, goes to slow(i), in order, before any state is
        touched. Rows, values and dedupe windows are exactly what decode() gives
        (tests/test_fastpaths.py). With the compiled reader (recorder/_speedups.c), the books are
        read by it instead of msgspec and levels.RunLevels."""
        self.data_only = False
        if self.compiled:
            run = self._compiled_first_pass(texts)
            if run is not None:
                items, books, lv, declined = run
                # A book push the reader took whole (type "M", a predictOrderbook topic, no escape in
                # either) is one Protocol.on_frame answers NOTHING to; the others, searched as
                # Protocol.quiet searches a run (a relayed chance passes).
                self.data_only = not declined or Protocol.quiet([texts[i] for i in declined])
                second = _Run(self, meta, buffers)
                if not declined:
                    rows = second.apply_books(books, lv)
                    if rows is not None:
                        return rows
                return second.apply(items, books, lv, slow)
        if len(texts) < self.small_run:
            for i in range(len(texts)):
                slow(i)
            return 0
        parse, parse_book = _PUSH.decode, _BOOK_PUSH.decode
        items: list = []  # per frame: None (the checked path), a book's index in `books`, or a chance
        books = _Books()
        add_book = books.add
        for text in texts:
            try:
                # Books are most of the traffic: when the topic near the start says so, the whole push
                # is parsed in one go (the topic is checked again below, whatever the hint said).
                msg = parse_book(text) if text.find(_BOOK_HINT, 0, 64) >= 0 else parse(text)
            except (ValueError, RecursionError):  # msgspec's DecodeError and ValidationError
                items.append(None)
                continue
            name, _, param = msg.topic.partition("/")
            if name == "predictOrderbook":
                items.append(add_book(param, msg.data))
            elif name in _ORIGINS and type(msg) is _Push:
                items.append((param, msg.data, _ORIGINS[name]))
            else:
                items.append(None)
        lv = None
        if books.sides:
            lv = levels.RunLevels(books.sides)
            lv.keys = [("book", m, t, k, h) for m, t, k, h in zip(books.markets, books.stamps, lv.bids, lv.hash)]
        return _Run(self, meta, buffers).apply(items, books, lv, slow)

    def _compiled_first_pass(self, texts: list[str]) -> tuple | None:
        """decode_run's first pass by the compiled reader: (items, books, levels) as the Python
        first pass gives them, and the indices of the frames it did not take; or None when the reader
        declined a book (one it does not take whole, such as levels sent as strings): then the
        whole run goes the Python way."""
        (items, declined, keys, markets, stamps, settles, sids, trade_markets, bid_counts, ask_counts, best_bids,
         best_asks, depths, bid_values, ask_values) = _speedups.predictfun_books(texts)
        for i in declined:  # not a plain book push: a relayed chance, something else, or malformed
            try:
                msg = _PUSH.decode(texts[i])
            except (ValueError, RecursionError):
                continue  # items[i] is None: the checked path
            name, _, param = msg.topic.partition("/")
            if name == "predictOrderbook":
                return None
            if name in _ORIGINS:
                items[i] = (param, msg.data, _ORIGINS[name])
        books = _Books()
        books.markets, books.stamps, books.settles, books.sids, books.trade_markets = (
            markets, stamps, settles, sids, trade_markets)
        lv = levels.FlatLevels(bid_counts, ask_counts, best_bids, best_asks, depths, keys, bid_values, ask_values) \
            if markets else None
        return items, books, lv, declined

    def restore(self, state: dict) -> None:
        # Book keys of checkpoints written before levels.py were ("book", market, ts, hash of the
        # level tuples): restored as they are, they match no new key (the 5-element form).
        self.seen = Bounded(20_000, [_tuples(k) for k in state.get("seen", [])])
        self.settled = Bounded(20_000, state.get("settled"))

    def decode(self, text: str, meta: FrameMeta) -> list[Record]:
        msg = base.obj(base.parse_json(text), "frame")
        kind = msg.get("type")
        if kind == "R":
            return []
        if kind != "M":
            raise UnknownMessage(f"unknown message type {kind!r}")
        topic = base.text(msg.get("topic"), "topic")
        name, _, param = topic.partition("/")
        param = sys.intern(param)  # kept in dedupe keys
        data = msg.get("data")
        if name in ("heartbeat", "system"):
            return []
        handler = _HANDLERS.get(name)
        if handler is None:
            raise UnknownMessage(f"unknown topic {name!r}")
        return handler(self, param, data, meta)

    def _book(self, param: str, data, meta: FrameMeta) -> list[Record]:
        d = base.obj(data, "data")
        market = base.text(d.get("marketId", param), "data.marketId")
        ts = d.get("updateTimestampMs")
        ts_us = None if ts is None else ms_to_us(base.number(ts, "data.updateTimestampMs"))
        bids = self._levels(d.get("bids"), "data.bids")
        asks = self._levels(d.get("asks"), "data.asks")
        out: list[Record] = []
        # The key holds the levels' hash, not the levels (a window of 20,000 books would be tens of MB):
        # levels.levels_hash, the same in every process and the same the run-at-a-time path computes.
        if self.seen.add_new(("book", sys.intern(market), ts_us, len(bids), levels.levels_hash(bids, asks))):
            out.append(Book.row(venue=meta.venue, feed=meta.feed, ts_event=ts_us, ts_recv=meta.ts_recv,
                                conn_id=meta.conn_id, seq=meta.seq, market=market, outcome="Yes", bids=bids, asks=asks,
                                best_bid=bids[0][0] if bids else None, best_ask=asks[0][0] if asks else None,
                                depth=len(bids) + len(asks)))
        settled = d.get("lastOrderSettled")
        if settled is not None:
            s = base.obj(settled, "data.lastOrderSettled")
            trade_id = base.text(s.get("id"), "lastOrderSettled.id")
            if trade_id not in self.settled:
                self.settled.add(trade_id)
                out.append(Trade(ts_event=None, market=base.text(s.get("marketId", market), "lastOrderSettled.marketId"),
                                 outcome=base.outcome_name(s.get("outcome"), "lastOrderSettled.outcome"),
                                 side=base.opt_text(s.get("side"), "lastOrderSettled.side"),
                                 price=base.opt_number(s.get("price"), "lastOrderSettled.price"),
                                 trade_id=trade_id, **meta.common()))
        return out

    @staticmethod
    def _levels(value, what: str) -> tuple[tuple[float, float], ...]:
        if value is None:
            return ()
        if type(value) is list:  # fast path: well-formed [[price, shares], ...] of plain numbers
            fast = tuple((float(lv[0]), float(lv[1])) for lv in value
                         if type(lv) is list and len(lv) >= 2 and type(lv[0]) in _NUMBERS and type(lv[1]) in _NUMBERS)
            if len(fast) == len(value) and math.isfinite(sum(p + q for p, q in fast)):
                return fast
        levels = []
        for i, level in enumerate(base.lst(value, what)):
            pair = base.lst(level, f"{what}[{i}]")
            if len(pair) < 2:
                raise base.DecodeError(f"{what}[{i}] must be [price, shares], got {pair!r}")
            levels.append((base.number(pair[0], f"{what}[{i}].price"), base.number(pair[1], f"{what}[{i}].shares")))
        return tuple(levels)

    def _chance(self, param: str, data, meta: FrameMeta, origin: str) -> list[Record]:
        d = base.obj(data, "data")
        p = base.probability(d.get("percentage"), "data.percentage", scale=CHANCE_SCALE)
        ts = d.get("timestamp")
        ts_us = None if ts is None else ms_to_us(base.number(ts, "data.timestamp"))
        if not self.seen.add_new((origin, param, ts_us, p)):
            return []
        return [Chance.row(venue=meta.venue, feed=meta.feed, ts_event=ts_us, ts_recv=meta.ts_recv, conn_id=meta.conn_id,
                           seq=meta.seq, market=param, outcome="Yes", probability=p, origin=origin)]

    def _polymarket(self, param: str, data, meta: FrameMeta) -> list[Record]:
        return self._chance(param, data, meta, "polymarket")

    def _kalshi(self, param: str, data, meta: FrameMeta) -> list[Record]:
        return self._chance(param, data, meta, "kalshi")

    def _price(self, param: str, data, meta: FrameMeta) -> list[Record]:
        d = base.obj(data, "data")
        price = base.number(d.get("price"), "data.price")
        ts = d.get("timestamp")
        if ts is None and d.get("publishTime") is not None:
            ts = base.number(d["publishTime"], "data.publishTime") * 1000
        ts_us = None if ts is None else ms_to_us(base.number(ts, "data.timestamp"))
        if not self.seen.add_new(("price", param, ts_us, price)):
            return []
        return [Price.row(venue=meta.venue, feed=meta.feed, ts_event=ts_us, ts_recv=meta.ts_recv, conn_id=meta.conn_id,
                          seq=meta.seq, symbol=param, price=price)]

    def _wallet(self, param: str, data, meta: FrameMeta) -> list[Record]:
        d = base.obj(data, "data")
        kind = base.text(d.get("type", d.get("eventType")), "data.type")
        order_id = base.opt_text(d.get("orderId"), "data.orderId")
        ts = d.get("timestamp")
        ts_us = None if ts is None else ms_to_us(base.number(ts, "data.timestamp"))
        details = d.get("details") if isinstance(d.get("details"), dict) else {}
        payload = base.compact(d)
        if not self.seen.add_new(("wallet", payload)):
            return []
        return [Account(ts_event=ts_us, stream="wallet", kind=kind, order_id=order_id,
                        market=base.opt_text(details.get("marketId"), "details.marketId"), status=None,
                        payload=payload, **meta.common())]


class _Run:
    """decode_run's column buffers for one run, fetched on first use."""

    def __init__(self, decoder: Decoder, meta: FrameMeta, buffers) -> None:
        self.decoder, self.meta, self.buffers = decoder, meta, buffers
        self.first = meta.seq  # slow() moves meta.seq
        self.rows = 0
        self._trades = self._levels = None
        self._chances: dict[str, tuple] = {}

    def _consts(self, *more) -> tuple:
        return (("feed", self.meta.feed), ("conn_id", self.meta.conn_id)) + more

    def apply(self, items: list, books: "_Books", lv, slow) -> int:
        """decode_run's second pass, frame by frame in order: the checked path (slow), a book (its
        index in `books`, its levels in `lv`: levels.RunLevels or FlatLevels, with `keys`, the
        books' dedupe keys) or a chance; then the kept books' levels into the level columns. (One
        loop with the book case written out: it runs for every push.)"""
        if lv is not None:
            ok, nbs, nas, keys, kept = lv.ok, lv.bids, lv.asks, lv.keys, lv.kept_flags
            bbs, bas = lv.best_bid, lv.best_ask
        markets, stamps, settles, sids = books.markets, books.stamps, books.settles, books.sids
        dec = self.decoder
        seen_add, settled = dec.seen.add_new, dec.settled
        chance, first, recv = self.chance, self.first, self.meta.ts_recv
        appends = None
        rows = 0
        for i, j in enumerate(items):
            if j is None:
                slow(i)
                continue
            if type(j) is not int:
                if not chance(i, *j):
                    slow(i)
                continue
            if not ok[j]:
                slow(i)
                continue
            s = settles[j]
            new_trade = False
            if s is not None and sids[j] not in settled:
                new_trade = True
                price = _settlement_price(s)  # read for a new settlement only, as the checked path does
                if price is _BAD:
                    slow(i)
                    continue
            nb, na = nbs[j], nas[j]
            if seen_add(keys[j]):
                if appends is None:
                    appends = a_ts, a_recv, a_seq, a_market, a_bb, a_ba, a_depth = self._book_appenders()
                a_ts(stamps[j])
                a_recv(recv)
                a_seq(first + i)
                a_market(markets[j])
                a_bb(bbs[j] if nb else None)
                a_ba(bas[j] if na else None)
                a_depth(nb + na)
                kept[j] = True
                rows += 1
            if new_trade:
                settled.add(sids[j])
                self._trade(first + i, books.trade_markets[j], s, price, sids[j])
        self.rows += rows
        if lv is not None:
            self.add_levels(lv)
        return self.rows

    def apply_books(self, books: "_Books", lv: levels.FlatLevels) -> int | None:
        """apply() for a run of nothing but books the compiled reader took (nearly every run of a
        book feed): the same rows and state, a column at a time. None, with nothing done, if a new
        settlement's price is not a finite number (apply() sends that frame the checked way) or the
        settled window would turn over within the run (apply() asks it frame by frame)."""
        dec = self.decoder
        settled = dec.settled
        settles, sids = books.settles, books.sids
        trades = []  # (book, price) of the new settlements, in order
        fresh: set = set()
        for j, sid in enumerate(sids):
            if sid is None or sid in fresh or sid in settled:
                continue
            price = _settlement_price(settles[j])  # read for a new settlement only, as the checked path does
            if price is _BAD:
                return None
            fresh.add(sid)
            trades.append((j, price))
        if len(settled._current) + len(trades) >= settled._size:
            return None  # the settled window turns over within the run: an id it drops may come again
        kept = dec.seen.add_many(lv.keys)
        lv.kept_flags = kept
        first, n = self.first, len(kept)
        rows = kept.count(True)
        if rows:
            extend = self._book_extenders()
            columns = (books.stamps, repeat(self.meta.ts_recv, n), range(first, first + n), books.markets,
                       lv.best_bid, lv.best_ask, lv.depth)
            for add, values in zip(extend, columns):
                add(values if rows == n else compress(values, kept))
            self.add_levels(lv)
        self.rows += rows
        for j, price in trades:
            settled.add(sids[j])
            self._trade(first + j, books.trade_markets[j], settles[j], price, sids[j])
        return self.rows

    def _book_columns(self):
        cols = self.buffers.columns("book", self.meta.venue, self._consts(("outcome", "Yes"), ("last", None)),
                                    "ts_event", nullable=("ts_event", "best_bid", "best_ask"))
        self._levels = (cols.levels("bids"), cols.levels("asks"))
        return cols

    def _book_appenders(self) -> tuple:
        return self._book_columns().appenders("ts_event", "ts_recv", "seq", "market", "best_bid", "best_ask", "depth")

    def _book_extenders(self) -> tuple:
        return self._book_columns().extenders("ts_event", "ts_recv", "seq", "market", "best_bid", "best_ask", "depth")

    def add_levels(self, lv: levels.RunLevels) -> None:
        """The kept books' levels into the book buffer's level columns (at the end of the run)."""
        kept = lv.kept()
        if kept is not None:
            bid_counts, bid_values, ask_counts, ask_values = kept
            bids, asks = self._levels
            bids.extend(bid_counts, bid_values)
            asks.extend(ask_counts, ask_values)

    def _trade(self, seq: int, market: str, s: tuple, price: float | None, trade_id: str) -> None:
        if self._trades is None:
            cols = self.buffers.columns(
                "trades", self.meta.venue,
                self._consts(("ts_event", None), ("event", None), ("size", None), ("notional", None),
                             ("notional_minor", None), ("trader", None), ("source", "live")),
                "ts_recv", nullable=("price",))
            self._trades = cols.appenders("ts_recv", "seq", "market", "outcome", "side", "price", "trade_id")
        a_recv, a_seq, a_market, a_outcome, a_side, a_price, a_id = self._trades
        a_recv(self.meta.ts_recv)
        a_seq(seq)
        a_market(market)
        a_outcome(base.canonical_outcome(s[0]))
        a_side(s[1])
        a_price(price)
        a_id(trade_id)
        self.rows += 1

    def chance(self, i: int, param: str, data: msgspec.Raw, origin: str) -> bool:
        """One relayed chance push; False (nothing done) unless it is the well-formed common case."""
        try:
            d = _CHANCE.decode(data)
        except (ValueError, RecursionError):
            return False
        p, ts = d.percentage / CHANCE_SCALE, d.timestamp
        if not 0.0 <= p <= 1.0:
            return False
        if ts is not None:
            ts = ts * 1000
            if not -_MAX_US <= ts <= _MAX_US:
                return False
            ts = round(ts)
        param = sys.intern(param)
        if not self.decoder.seen.add_new((origin, param, ts, p)):
            return True
        appends = self._chances.get(origin)
        if appends is None:
            meta = self.meta
            cols = self.buffers.columns("chance", meta.venue,
                                        self._consts(("outcome", "Yes"), ("origin", origin), ("source", "live")),
                                        "ts_event", nullable=("ts_event",))
            appends = self._chances[origin] = cols.appenders("ts_event", "ts_recv", "seq", "market", "probability")
        a_ts, a_recv, a_seq, a_market, a_p = appends
        a_ts(ts)
        a_recv(self.meta.ts_recv)
        a_seq(self.first + i)
        a_market(param)
        a_p(p)
        self.rows += 1
        return True


class _Books:
    """decode_run's first pass over the book pushes of a run: each one's fields checked and made
    what the rows hold (no state read or changed), its sides kept as JSON text for
    levels.RunLevels. `add` gives the book's index, or None for the checked path."""

    __slots__ = ("markets", "stamps", "settles", "sids", "trade_markets", "sides")

    def __init__(self) -> None:
        self.markets: list[str] = []
        self.stamps: list[int | None] = []  # ts_event, microseconds
        self.settles: list[tuple | None] = []  # the settled order's (outcome, side, price)
        self.sids: list[str | None] = []  # the settlement's id
        self.trade_markets: list[str | None] = []  # the settlement's market
        self.sides: list = []  # bids, asks, bids, asks...

    def add(self, param: str, d: "msgspec.Raw | _BookData") -> int | None:
        if type(d) is not _BookData:
            try:
                d = _BOOK.decode(d)
            except (ValueError, RecursionError):
                return None
        market = param if d.marketId is msgspec.UNSET else base.fast_id(d.marketId)
        if market is None:
            return None
        ts = d.updateTimestampMs
        if ts is not None:
            ts = ts * 1000
            if not -_MAX_US <= ts <= _MAX_US:  # inf and beyond timestamp[us]: the checked path's message
                return None
            ts = round(ts)
        s = d.lastOrderSettled
        sid = trade_market = None
        if s is not None:
            sid = base.fast_id(s.id)
            trade_market = market if s.marketId is msgspec.UNSET else base.fast_id(s.marketId)
            if sid is None or trade_market is None:
                return None
        j = len(self.markets)
        self.markets.append(sys.intern(market))
        self.stamps.append(ts)
        self.settles.append(None if s is None else (s.outcome, s.side, s.price))
        self.sids.append(sid)
        self.trade_markets.append(trade_market)
        self.sides += (d.bids, d.asks)
        return j


# Typed structs for decode_run (msgspec checks types in C; a JSON integer becomes a float where a
# float is declared, as float() makes it on the checked path; a bool, a string or a null where a
# number is declared is not taken, nor a number beyond a double: that frame goes the checked way,
# so every float here is finite). No cycles: gc=False.
class _Push(msgspec.Struct, gc=False):
    type: Literal["M"]
    topic: str
    data: msgspec.Raw


class _Settled(msgspec.Struct, gc=False):
    id: str | int
    marketId: str | int | msgspec.UnsetType = msgspec.UNSET
    outcome: str | None = None
    side: str | None = None
    price: str | float | None = None


class _BookData(msgspec.Struct, gc=False):
    marketId: str | int | msgspec.UnsetType = msgspec.UNSET
    updateTimestampMs: float | None = None
    bids: msgspec.Raw = msgspec.Raw(b"[]")  # JSON text, read by levels.RunLevels (missing: no levels)
    asks: msgspec.Raw = msgspec.Raw(b"[]")
    lastOrderSettled: _Settled | None = None


class _ChanceData(msgspec.Struct, gc=False):
    percentage: float
    timestamp: float | None = None


class _BookPush(msgspec.Struct, gc=False):
    type: Literal["M"]
    topic: str
    data: _BookData


SMALL_RUN = 16  # runs shorter than this go frame by frame (Decoder.small_run; tests set 0)
_PUSH = msgspec.json.Decoder(_Push)
_BOOK_PUSH = msgspec.json.Decoder(_BookPush)
_BOOK_HINT = '"predictOrderbook/'
_BOOK = msgspec.json.Decoder(_BookData)
_CHANCE = msgspec.json.Decoder(_ChanceData)
_ORIGINS = {"polymarketChance": "polymarket", "kalshiChance": "kalshi"}
_MAX_US = 2**63 - 1  # timeutil.MAX_US


def _tuples(value):
    """JSON turned the tuple keys into lists: turn them back, all the way down."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


_HANDLERS = {
    "predictOrderbook": Decoder._book,
    "polymarketChance": Decoder._polymarket,
    "kalshiChance": Decoder._kalshi,
    "assetPriceUpdate": Decoder._price,
    WALLET: Decoder._wallet,
}


_BAD = object()


def _settlement_price(settle: tuple):
    """A new settlement's price as the checked path reads it (None, a number, or a numeric string
    as float() reads it); _BAD if it is not a finite number (that frame goes the checked way)."""
    price = settle[2]
    if type(price) is str:
        try:
            price = float(price)
        except ValueError:
            return _BAD
    return _BAD if price is not None and not math.isfinite(price) else price


_compiled_ok: bool | None = None


def compiled_reader_ok() -> bool:
    """The compiled reader is built and computes the content hash as this Python does (Python's
    tuple and float hashes, which it repeats in C): checked once, on values of every kind."""
    global _compiled_ok
    if _compiled_ok is None:
        values = [0.5, 1.0, 0.01, 123.25, 1e-300, 5e-324, 1.7976931348623157e308, -2.5, 3.0, 1e22, 0.1]
        _compiled_ok = _speedups is not None and all(
            _speedups.levels_hash(values[:k]) == hash(tuple(values[:k])) for k in range(len(values) + 1))
    return _compiled_ok


def make_decoder(spec: FeedSpec) -> Decoder:
    return Decoder(spec)


MARKET_TOPICS = ("predictOrderbook", "polymarketChance", "kalshiChance")


def markets(spec: FeedSpec) -> tuple[str, ...]:
    """The markets named by the feed's topics (the live page): `predictOrderbook/123` -> "123"."""
    out = [t.partition("/")[2] for t in spec.topics if t.partition("/")[0] in MARKET_TOPICS]
    return tuple(dict.fromkeys(m for m in out if m))
