"""InTots: trades, event chart and asset price feeds. No auth and no client messages; the server
pings every 50 s (the transport answers) and sends one history message on connect.

Trades carry no ids: history replayed on reconnect is matched by content against what this feed
recorded recently. Chart points name their outcome in every form: a ratio key as configured
(case aside), index i of a value list as the feed's i-th outcome (`outcomes`, default Yes, No).
Points with a timestamp are deduplicated by (market, outcome, time, value); flat value lists
carry no time and are always recorded.
"""

from __future__ import annotations

import collections
import json
from urllib.parse import quote

import attrs
import msgspec

from ..config import Opt, Secret
from ..errors import ConfigError, DecodeError
from ..records import Chance, Price, Record, Trade
from ..timeutil import iso_to_us
from . import base
from .base import NOTHING, Bounded, Control, FrameMeta, UnknownMessage

VENUE = "intots"
DEFAULT_BASE = "wss://api.intots.com/api/v1"
RATIO_SCALE = 10_000  # dict-form ratios are on a 0..10000 scale
RECENT_TRADES = 5_000  # how many recent trade fingerprints are kept for history dedupe
OPTIONS = {
    "stream": Opt(type=str, required=True),
    "base_url": Opt(type=str, default=DEFAULT_BASE),
    "event_id": Opt(type=(str, int)),
    "symbol": Opt(type=str),
    "price_scale": Opt(type=(int, float), default=0.01),
    "outcomes": Opt(type=list, item=str),
}
DEFAULT_OUTCOMES = ("Yes", "No")  # InTots events are binary; its trades name the tokens Yes and No
STREAMS = ("trades", "chart", "asset_price")


@attrs.frozen(kw_only=True)
class FeedSpec:
    stream: str
    base_url: str = DEFAULT_BASE
    event_id: str | None = None
    symbol: str | None = None
    price_scale: float = 0.01
    outcomes: tuple[str, ...] = DEFAULT_OUTCOMES  # chart: index i of a value list is outcomes[i]


def parse_spec(options: dict, path: str, secret) -> tuple[FeedSpec, list[Secret]]:
    stream = options["stream"]
    if stream not in STREAMS:
        raise ConfigError(f"{path}.stream must be one of {', '.join(STREAMS)} for intots, got {stream!r}")
    needs = {"chart": "event_id", "asset_price": "symbol"}
    for key in ("event_id", "symbol"):
        if options[key] is not None and needs.get(stream) != key:
            raise ConfigError(f"{path}.{key} does not apply to intots stream {stream!r}")
    if stream in needs and options[needs[stream]] in (None, ""):
        raise ConfigError(f"{path}.{needs[stream]} is required for intots stream {stream!r}")
    if options["price_scale"] != 0.01 and stream != "asset_price":
        raise ConfigError(f"{path}.price_scale applies only to intots asset_price")
    if options["price_scale"] <= 0:
        raise ConfigError(f"{path}.price_scale must be positive, got {options['price_scale']!r}")
    outcomes = _outcomes(options["outcomes"], stream, path)
    event_id = None if options["event_id"] is None else str(options["event_id"])
    return FeedSpec(stream=stream, base_url=options["base_url"].rstrip("/"), event_id=event_id,
                    symbol=options["symbol"], price_scale=float(options["price_scale"]), outcomes=outcomes), []


def _outcomes(names: list[str] | None, stream: str, path: str) -> tuple[str, ...]:
    """The chart's outcome names, in the order value lists give their values."""
    if names is None:
        return DEFAULT_OUTCOMES
    if stream != "chart":
        raise ConfigError(f"{path}.outcomes applies only to intots chart")
    if len(names) < 2 or any(not n for n in names):
        raise ConfigError(f"{path}.outcomes must name at least two outcomes, none empty, got {names!r}")
    if len({n.casefold() for n in names}) != len(names):
        raise ConfigError(f"{path}.outcomes must name each outcome once (case does not count), got {names!r}")
    return tuple(names)


def default_url(spec: FeedSpec) -> str:
    if spec.stream == "trades":
        return f"{spec.base_url}/ws/trades"
    if spec.stream == "chart":
        return f"{spec.base_url}/ws/events/{quote(spec.event_id, safe='')}/chart"
    return f"{spec.base_url}/ws/assets/{quote(spec.symbol, safe='')}/price"


def handshake_headers(spec: FeedSpec, secrets: tuple[Secret, ...]) -> list[tuple[str, str]]:
    return []


class Protocol:
    """InTots needs nothing sent: connected is subscribed."""

    def __init__(self, spec: FeedSpec) -> None:
        self.spec = spec

    def on_open(self, now: float) -> tuple[list[str], bool]:
        return [], True

    def expected_keys(self) -> set[str]:
        return set()  # one stream per connection: the connection's own staleness deadline covers it

    @staticmethod
    def data_key(text: str) -> str | None:
        return None

    def quiet(self, texts: list[str]) -> bool:
        return True

    def on_frame(self, text: str) -> Control:
        return NOTHING


def make_protocol(spec: FeedSpec, secrets: tuple[Secret, ...], url: str) -> Protocol:
    return Protocol(spec)


class Decoder:
    def __init__(self, spec: FeedSpec) -> None:
        self.spec = spec
        # A ratio key names its outcome as the venue spells it; "YES" and "Yes" are one outcome, recorded
        # under the configured spelling, so every form of chart message gives a point the same name.
        self.names = {n.casefold(): n for n in spec.outcomes}
        # What this feed recorded recently, for history dedupe: each trade as the tuple of the fields
        # that identify it (market, event, outcome, amount, trader), the newest last. A live trade
        # only appends its tuple (no hashing, no JSON); the counts are made when history arrives.
        self.recent: collections.deque[tuple] = collections.deque(maxlen=RECENT_TRADES)
        self.points = Bounded(50_000)
        if spec.stream == "asset_price":
            self.decode_run = self._price_run
        elif spec.stream == "chart":
            self.decode_run = self._chart_run

    def state(self) -> dict:
        return {"recent": [list(t) for t in self.recent], "points": self.points.items()}

    def restore(self, state: dict) -> None:
        self.recent = collections.deque((_trade_key(fp) for fp in state.get("recent", [])), maxlen=RECENT_TRADES)
        self.points = Bounded(50_000, state.get("points"))

    def decode(self, text: str, meta: FrameMeta) -> list[Record]:
        msg = base.obj(base.parse_json(text), "frame")
        kind = base.text(msg.get("type"), "type")
        if self.spec.stream == "trades":
            if kind == "trade":
                return self._trades([msg.get("trade")], meta, history=False)
            if kind in ("initial", "init"):
                return self._trades(base.lst(msg.get("trades"), "trades"), meta, history=True)
        elif self.spec.stream == "chart" and kind in ("chart_update", "init", "initial"):
            return self._chart(msg, meta, history=kind != "chart_update")
        elif self.spec.stream == "asset_price" and kind == "price_update":
            price = base.number(msg.get("price"), "price") * self.spec.price_scale
            symbol = base.text(msg.get("symbol", self.spec.symbol), "symbol")
            return [Price(ts_event=None, symbol=symbol, price=price, **meta.common())]
        raise UnknownMessage(f"unknown message type {kind!r} on the {self.spec.stream} feed")

    def decode_run(self, texts: list[str], meta: FrameMeta, buffers, slow) -> int:
        """A run of a trades feed (base.Decoder.decode_run): live trades, well formed, are parsed by
        msgspec into a typed struct and appended column by column; anything else (history, malformed
        frames) goes to slow(i), in order. Rows and the recent-trades window are exactly what
        decode() gives (tests/test_fastpaths.py)."""
        parse, remember = _LIVE_TRADE.decode, self.recent.append
        first, ts_recv = meta.seq, meta.ts_recv  # slow() moves meta.seq
        appends = None
        n = 0
        for i, text in enumerate(texts):
            try:
                t = parse(text).trade
            except (ValueError, RecursionError):  # msgspec's DecodeError and ValidationError: not a well-formed live trade
                slow(i)
                continue
            amount = t.amount
            if not -base.INT64 <= amount <= base.INT64:
                slow(i)
                continue
            if appends is None:
                cols = buffers.columns("trades", meta.venue, (("feed", meta.feed), ("conn_id", meta.conn_id),
                                                              ("ts_event", None), ("side", None), ("price", None),
                                                              ("size", None), ("trade_id", None), ("source", "live")),
                                       "ts_recv")
                a_recv, a_seq, a_market, a_event, a_outcome, a_notional, a_minor, a_trader = cols.appenders(
                    "ts_recv", "seq", "market", "event", "outcome", "notional", "notional_minor", "trader")
                appends = True
            market, event, outcome, trader = t.market, t.event, base.canonical_outcome(t.token), t.name
            a_recv(ts_recv)
            a_seq(first + i)
            a_market(market)
            a_event(event)
            a_outcome(outcome)
            a_notional(amount / 100)
            a_minor(amount)
            a_trader(trader)
            remember((market, event, outcome, amount, trader))
            n += 1
        return n

    def _price_run(self, texts: list[str], meta: FrameMeta, buffers, slow) -> int:
        """A run of an asset price feed (base.Decoder.decode_run): well-formed price updates parsed
        by msgspec and appended column by column; anything else goes to slow(i), in order."""
        first, ts_recv, scale, default = meta.seq, meta.ts_recv, self.spec.price_scale, self.spec.symbol
        parse = _PRICE_UPDATE.decode
        appends = None
        n = 0
        for i, text in enumerate(texts):
            try:
                msg = parse(text)
            except (ValueError, RecursionError):  # msgspec's DecodeError and ValidationError
                slow(i)
                continue
            symbol = default if msg.symbol is msgspec.UNSET else msg.symbol
            if symbol is None:  # no symbol in the frame nor the config: the checked path's error
                slow(i)
                continue
            if appends is None:
                cols = buffers.columns("prices", meta.venue, (("feed", meta.feed), ("conn_id", meta.conn_id),
                                                              ("ts_event", None)), "ts_recv")
                a_recv, a_seq, a_symbol, a_price = cols.appenders("ts_recv", "seq", "symbol", "price")
                appends = True
            a_recv(ts_recv)
            a_seq(first + i)
            a_symbol(symbol)
            a_price(msg.price * scale)
            n += 1
        return n

    def _chart_run(self, texts: list[str], meta: FrameMeta, buffers, slow) -> int:
        """A run of a chart feed (base.Decoder.decode_run): live chart updates in any of the three
        forms, well formed, parsed by msgspec and appended column by column; anything else (history,
        malformed frames, a point that would be a reject) goes to slow(i), in order, before any
        state is touched. Rows and the points window are exactly what decode() gives
        (tests/test_fastpaths.py)."""
        first, ts_recv, default = meta.seq, meta.ts_recv, self.spec.event_id
        points, parse = self.points, _CHART_UPDATE.decode
        appends = None
        n = 0
        for i, text in enumerate(texts):
            try:
                msg = parse(text)
                market = default if msg.event_id is msgspec.UNSET else base.fast_id(msg.event_id)
                if market is None:
                    raise ValueError  # no event id at all, or one the checked path's parser reads as a float
                values = self._chart_values(msg)
            except (ValueError, RecursionError):  # msgspec's errors, a bad time, or what the checked path rejects
                slow(i)
                continue
            for outcome, ts, p in values:
                if ts is not None:
                    key = f"{market}|{outcome}|{ts}|{p!r}"
                    if key in points:
                        continue
                    points.add(key)
                if appends is None:
                    appends = base.live_chance_appenders(buffers, meta, VENUE, nullable=("ts_event",))
                    a_ts, a_recv, a_seq, a_market, a_outcome, a_p = appends
                a_ts(ts)
                a_recv(ts_recv)
                a_seq(first + i)
                a_market(market)
                a_outcome(outcome)
                a_p(p)
                n += 1
        return n

    def _chart_values(self, msg: "_ChartUpdate") -> list[tuple[str, int | None, float]]:
        """(outcome, time, probability) of each point of a live chart update, as _chart() reads them;
        ValueError where _chart() would reject the frame."""
        raw = bytes(msg.ratios).lstrip()
        if raw[:1] == b"{":  # the seed form: {"Yes": 6450, "No": 3550} at msg.timestamp
            ts = _fast_time(msg.timestamp)
            out = []
            for key, v in _RATIO_DICT.decode(raw).items():
                p = v / RATIO_SCALE
                if not 0.0 <= p <= 1.0:
                    raise ValueError
                out.append((self.names.get(key.casefold(), key), ts, p))
            return out
        if raw[:1] != b"[":
            raise ValueError
        if raw[1:].lstrip()[:1] == b"{":  # [{"timestamp", "values": [...]}, ...]
            out = []
            for point in _POINT_LIST.decode(raw):
                ts = _fast_time(point.timestamp)  # read even when there are no values, as _chart() does
                out += [(o, ts, p) for o, p in self._fast_indexed(point.values)]
            return out
        ts = _fast_time(msg.timestamp)  # the flat list, its time (if any) in the frame
        return [(o, ts, p) for o, p in self._fast_indexed(_VALUE_LIST.decode(raw))]

    def _fast_indexed(self, values: list[float]) -> list[tuple[str, float]]:
        """_indexed() for values msgspec has already read as finite numbers; ValueError for a reject."""
        names = self.spec.outcomes
        if len(values) > len(names):
            raise ValueError
        scale = RATIO_SCALE if any(v > 1 for v in values) else 1
        out = []
        for name, v in zip(names, values):
            p = v / scale
            if not 0.0 <= p <= 1.0:
                raise ValueError
            out.append((name, p))
        return out

    # trades --------------------------------------------------------------------------------
    def _trades(self, items: list, meta: FrameMeta, *, history: bool) -> list[Record]:
        parsed = [self._trade(base.obj(t, "trade"), meta, history) for t in items]
        if history:  # drop what this feed already recorded: each recorded copy cancels one
            budget = collections.Counter(self.recent)
            kept = []
            for key, record in parsed:
                if budget[key] > 0:
                    budget[key] -= 1
                else:
                    kept.append((key, record))
            parsed = kept
        self.recent.extend(key for key, _ in parsed)
        return [r for _, r in parsed]

    def _trade(self, t: dict, meta: FrameMeta, history: bool) -> tuple[tuple, Trade]:
        amount = base.integer(t.get("amount"), "trade.amount")
        record = Trade(
            ts_event=None, market=base.text(t.get("market"), "trade.market"),
            event=base.opt_text(t.get("event"), "trade.event"), outcome=base.outcome_name(t.get("token"), "trade.token"),
            notional=amount / 100, notional_minor=amount, trader=base.opt_text(t.get("name"), "trade.name"),
            source="history" if history else "live", **meta.common())
        return (record.market, record.event, record.outcome, amount, record.trader), record

    # chart ---------------------------------------------------------------------------------
    def _chart(self, msg: dict, meta: FrameMeta, *, history: bool) -> list[Record]:
        market = base.text(msg.get("event_id", self.spec.event_id), "event_id")
        ratios = msg.get("ratios")
        source = "history" if history else "live"
        if isinstance(ratios, dict):  # {"Yes": 6450, "No": 3550} at msg.timestamp
            ts = self._time(msg.get("timestamp"))
            values = [(self._name(k), base.probability(v, f"ratios.{k}", scale=RATIO_SCALE))
                      for k, v in ratios.items()]
            return self._points(market, ts, values, meta, source)
        ratios = base.lst(ratios, "ratios")
        if ratios and all(isinstance(r, dict) for r in ratios):  # [{"timestamp", "values": [...]}]
            out: list[Record] = []
            for i, point in enumerate(ratios):
                ts = self._time(point.get("timestamp"))
                out += self._points(market, ts, self._indexed(base.lst(point.get("values"), f"ratios[{i}].values")),
                                    meta, source)
            return out
        return self._points(market, self._time(msg.get("timestamp")), self._indexed(ratios), meta, source)

    def _name(self, key) -> str:
        name = base.text(key, "ratios key")
        return self.names.get(name.casefold(), name)

    def _indexed(self, values: list) -> list[tuple[str, float]]:
        """Index i of a value list is the i-th configured outcome; more values than names is a reject."""
        names = self.spec.outcomes
        if len(values) > len(names):
            raise DecodeError(f"a value list of {len(values)} values for {len(names)} known outcomes "
                              f"({', '.join(names)}): set the feed's outcomes option to name them all")
        nums = [base.number(v, f"values[{i}]") for i, v in enumerate(values)]
        scale = RATIO_SCALE if any(v > 1 for v in nums) else 1  # defensive: a 0..10000 list
        return [(names[i], base.probability(v, f"values[{i}]", scale=scale)) for i, v in enumerate(nums)]

    @staticmethod
    def _time(value) -> int | None:
        if value is None:
            return None
        try:
            return iso_to_us(base.text(value, "timestamp"))
        except ValueError:
            raise DecodeError(f"timestamp must be ISO 8601, got {value!r}") from None

    def _points(self, market: str, ts: int | None, values: list[tuple[str, float]], meta: FrameMeta,
                source: str) -> list[Record]:
        out: list[Record] = []
        for outcome, p in values:
            if ts is not None:
                key = f"{market}|{outcome}|{ts}|{p!r}"
                if key in self.points:
                    continue
                self.points.add(key)
            out.append(Chance.row(venue=meta.venue, feed=meta.feed, ts_event=ts, ts_recv=meta.ts_recv,
                                  conn_id=meta.conn_id, seq=meta.seq, market=market, outcome=outcome, probability=p,
                                  origin=VENUE, source=source))
        return out


def _trade_key(saved) -> tuple:
    """A recent trade as saved by state(): a list, or (before 2026-12) its JSON text."""
    if isinstance(saved, str):
        saved = json.loads(saved)
    return tuple(saved)


# A live trade as a typed struct, or a ValueError (msgspec checks the types in C: an amount must be
# a JSON integer, ids strings or null; anything else goes the checked way). No cycles: gc=False.
class _TradeItem(msgspec.Struct, gc=False):
    amount: int
    market: str
    event: str | None = None
    token: str | None = None
    name: str | None = None


class _LiveTrade(msgspec.Struct, tag_field="type", tag="trade", gc=False):
    trade: _TradeItem


_LIVE_TRADE = msgspec.json.Decoder(_LiveTrade)


class _PriceUpdate(msgspec.Struct, tag_field="type", tag="price_update", gc=False):
    price: float
    symbol: str | msgspec.UnsetType = msgspec.UNSET


_PRICE_UPDATE = msgspec.json.Decoder(_PriceUpdate)


# A live chart update: its ratios read by form (_chart_values), numbers as finite floats (a string,
# a bool or a null where a number is expected goes the checked way). No cycles: gc=False.
class _ChartUpdate(msgspec.Struct, tag_field="type", tag="chart_update", gc=False):
    ratios: msgspec.Raw
    timestamp: str | None = None
    event_id: str | int | msgspec.UnsetType = msgspec.UNSET


class _ChartPoint(msgspec.Struct, gc=False):
    values: list[float]
    timestamp: str | None = None


_CHART_UPDATE = msgspec.json.Decoder(_ChartUpdate)
_RATIO_DICT = msgspec.json.Decoder(dict[str, float])
_POINT_LIST = msgspec.json.Decoder(list[_ChartPoint])
_VALUE_LIST = msgspec.json.Decoder(list[float])


def _fast_time(value: str | None) -> int | None:
    """Decoder._time() for a value msgspec has read as a string or null (ValueError if not ISO 8601)."""
    return None if value is None else iso_to_us(value)


def make_decoder(spec: FeedSpec) -> Decoder:
    return Decoder(spec)


def markets(spec: FeedSpec) -> tuple[str, ...]:
    """The market a chart stream subscribes to (the live page); other streams carry every market."""
    return (spec.event_id,) if spec.stream == "chart" and spec.event_id else ()
