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

import attrs

from ..config import Opt, Secret
from ..errors import ConfigError
from ..records import Account, Book, Chance, Price, Record, Trade
from ..timeutil import ms_to_us
from . import base
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

    def state(self) -> dict:
        return {"seen": self.seen.items(), "settled": self.settled.items()}

    def restore(self, state: dict) -> None:
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
        # The key holds the levels' hash, not the levels (a window of 20,000 books would be tens of MB).
        # Tuples of floats hash the same in every process, so a restored window still matches.
        if self.seen.add_new(("book", sys.intern(market), ts_us, hash((bids, asks)))):
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


def make_decoder(spec: FeedSpec) -> Decoder:
    return Decoder(spec)


MARKET_TOPICS = ("predictOrderbook", "polymarketChance", "kalshiChance")


def markets(spec: FeedSpec) -> tuple[str, ...]:
    """The markets named by the feed's topics (the live page): `predictOrderbook/123` -> "123"."""
    out = [t.partition("/")[2] for t in spec.topics if t.partition("/")[0] in MARKET_TOPICS]
    return tuple(dict.fromkeys(m for m in out if m))
