"""Records: one frozen, keyword-only attrs class per table, fields named as the table's columns.

Records are dumb: no wire parsing here (that lives in `venues/`). Timestamps are integer
microseconds since the Unix epoch, UTC (`ts_event` is None when the venue sends no time).
Book levels are tuples of (price, size) pairs, best first. `tests/test_schema.py` proves that
each class's fields are exactly its table's columns in `schemas/`.
"""

from __future__ import annotations

from typing import ClassVar, Union

import attrs

Levels = tuple[tuple[float, float], ...]


@attrs.frozen(kw_only=True)
class Chance:
    table: ClassVar[str] = "chance"
    venue: str
    feed: str
    ts_event: int | None
    ts_recv: int
    conn_id: str
    seq: int
    market: str
    outcome: str
    probability: float
    origin: str
    source: str = "live"


@attrs.frozen(kw_only=True)
class Trade:
    table: ClassVar[str] = "trades"
    venue: str
    feed: str
    ts_event: int | None
    ts_recv: int
    conn_id: str
    seq: int
    market: str
    event: str | None = None
    outcome: str | None = None
    side: str | None = None
    price: float | None = None
    size: float | None = None
    notional: float | None = None
    notional_minor: int | None = None
    trader: str | None = None
    trade_id: str | None = None
    source: str = "live"


@attrs.frozen(kw_only=True)
class Book:
    table: ClassVar[str] = "book"
    venue: str
    feed: str
    ts_event: int | None
    ts_recv: int
    conn_id: str
    seq: int
    market: str
    outcome: str
    bids: Levels | None = None
    asks: Levels | None = None
    best_bid: float | None = None
    best_ask: float | None = None
    last: float | None = None
    depth: int | None = None


@attrs.frozen(kw_only=True)
class Price:
    table: ClassVar[str] = "prices"
    venue: str
    feed: str
    ts_event: int | None
    ts_recv: int
    conn_id: str
    seq: int
    symbol: str
    price: float


@attrs.frozen(kw_only=True)
class Account:
    table: ClassVar[str] = "account"
    venue: str
    feed: str
    ts_event: int | None
    ts_recv: int
    conn_id: str
    seq: int
    stream: str
    kind: str
    order_id: str | None = None
    market: str | None = None
    status: str | None = None
    payload: str


@attrs.frozen(kw_only=True)
class Raw:
    table: ClassVar[str] = "raw"
    venue: str
    feed: str
    ts_event: int | None
    ts_recv: int
    conn_id: str
    seq: int
    payload: str


@attrs.frozen(kw_only=True)
class Session:
    table: ClassVar[str] = "sessions"
    venue: str
    feed: str
    ts_event: int | None
    ts_recv: int
    conn_id: str
    url: str
    connected: int
    subscribed: int | None
    first_frame: int | None
    last_frame: int | None
    closed: int
    close_reason: str
    frames: int


@attrs.frozen(kw_only=True)
class Reject:
    table: ClassVar[str] = "rejects"
    venue: str
    feed: str
    ts_event: int | None
    ts_recv: int
    conn_id: str
    seq: int
    error: str
    payload: str


Record = Union[Chance, Trade, Book, Price, Account, Raw, Session, Reject]
RECORD_TYPES: dict[str, type] = {cls.table: cls for cls in (Chance, Trade, Book, Price, Account, Raw, Session, Reject)}
