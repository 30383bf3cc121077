"""Records: one frozen, keyword-only attrs class per table, fields named as the table's columns.

Records are dumb: no wire parsing here (that lives in `venues/`). Timestamps are integer
microseconds since the Unix epoch, UTC (`ts_event` is None when the venue sends no time).
Book levels are tuples of (price, size) pairs, best first. `tests/test_schema.py` proves that
each class's fields are exactly its table's columns in `schemas/`.
"""

from __future__ import annotations

from typing import ClassVar, Union

import attrs

from .timeutil import US_PER_DAY

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

# --- Rows: a record as the writer stores it, without building the record ----------------------
#
# `Chance.row(venue=..., feed=..., ...)` takes exactly the class's keyword arguments and defaults
# and returns (table, venue, day, values): the partition the record goes to and its file columns
# (every field but `venue`, in field order, which tests/test_schema.py ties to schemas/). Building
# a frozen attrs instance sets each field through object.__setattr__; on the hot decode paths
# (chance points, books, prices) that was a sixth of the recorder's time per frame. Elsewhere
# decoders return records; `from_row` turns a row back into its record.

Row = tuple  # (table, venue, day, values)


def _row_maker(cls: type):
    fields = attrs.fields(cls)
    namespace: dict = {}
    params = []
    for f in fields:
        if f.default is attrs.NOTHING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    values = ", ".join(f.name for f in fields if f.name != "venue")
    source = (f"def row(*, {', '.join(params)}):\n"
              f"    return ({cls.table!r}, venue, (ts_recv if ts_event is None else ts_event) // {US_PER_DAY},"
              f" ({values},))\n")
    exec(source, namespace)  # noqa: S102 - generated from the class's own field names, as attrs does
    row = namespace["row"]
    row.__doc__ = f"A {cls.__name__} record as a row: (table, venue, day, file columns), see records.py."
    return staticmethod(row)


for _cls in RECORD_TYPES.values():
    _cls.row = _row_maker(_cls)


def from_row(row: Row) -> Record:
    """The record a row stands for."""
    table, venue, _day, values = row
    cls = RECORD_TYPES[table]
    names = [f.name for f in attrs.fields(cls) if f.name != "venue"]
    return cls(venue=venue, **dict(zip(names, values)))
