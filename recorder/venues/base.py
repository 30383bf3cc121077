"""What every venue adapter provides, and helpers to read venue JSON with clear errors.

A venue module gives, per configured feed:
- a `Decoder`: text of a received frame in, records out (pure, deterministic, replayable from
  the journal; its dedupe state can be saved with `state()` and restored with `restore()`);
- a `Protocol`: the connection's control side (frames to send on connect, replies such as a
  heartbeat echo, subscribed / reconnect / fatal signals), frame by frame with `on_frame()`, and
  optionally `quiet(texts)`: True when no frame of a run needs on_frame (a cheap test on the
  whole run; it may say False when unsure). Neither does I/O or reads a clock.
"""

from __future__ import annotations

import base64
import bisect
import json
import math
import sys
from array import array
from typing import Any, Protocol as TypingProtocol

import attrs
import orjson

from ..errors import DecodeError
from ..records import Record, Row

try:  # the compiled hot paths (setup.py): Bounded.add_many's loop
    from .. import _speedups
except ImportError:
    _speedups = None


class FrameMeta:
    """Where a frame came from; every record made from it carries these. (A plain slotted class on
    the hot path: the pipeline makes one per run of frames and moves `seq` from frame to frame, so
    a decoder reads it during `decode()` and keeps no reference to it.)"""

    __slots__ = ("venue", "feed", "conn_id", "seq", "ts_recv")

    def __init__(self, *, venue: str, feed: str, conn_id: str, seq: int, ts_recv: int) -> None:
        self.venue, self.feed, self.conn_id, self.seq, self.ts_recv = venue, feed, conn_id, seq, ts_recv

    def common(self) -> dict[str, Any]:
        return {"venue": self.venue, "feed": self.feed, "conn_id": self.conn_id, "seq": self.seq, "ts_recv": self.ts_recv}


class Decoder(TypingProtocol):
    def decode(self, text: str, meta: FrameMeta) -> list[Record | Row]:
        """Records from one frame, each a record or, on hot paths, the same as a row
        (`Chance.row(...)`, see records.py); raises DecodeError (the frame goes to `rejects`)."""

    def state(self) -> dict:
        """JSON-able dedupe state, saved with every Parquet commit."""

    # Optional, for the hottest message types: a decoder may also have
    #     decode_run(texts, meta, buffers, slow) -> int
    # taking a whole run of frames (meta.seq is the first frame's number). It appends the rows of
    # the frames it recognises straight into column buffers (`buffers.columns(...)`, writer.py)
    # and returns how many; for every other frame, in order, it calls slow(i), which runs
    # decode() on texts[i]. The result must be exactly what decode() frame by frame gives
    # (tests/test_decoders.py checks this on generated runs). After decode_run, the decoder's
    # `data_only` attribute may say True when every frame of that run was a data push the venue's
    # control side has nothing to do with (Protocol.on_frame would answer NOTHING for each): the
    # feed then skips its own look at the run. False or absent: the feed looks as usual.

    def restore(self, state: dict) -> None:
        """Take back a state returned by `state()`."""


class UnknownMessage(DecodeError):
    """A well-formed frame of a type the decoder does not know: kept in raw and rejects."""


class RawOnlyDecoder:
    """For journaled feeds no longer in the config: the raw frames are kept, nothing decoded."""

    def decode(self, text: str, meta: FrameMeta) -> list[Record]:
        return []

    def state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass


# --- Reading venue JSON: every helper raises DecodeError quoting the bad value. -------------


def parse_json(text: str) -> Any:
    """Parse a frame: orjson (a quarter of json.loads's cost per frame), and the standard library
    for whatever orjson refuses (NaN, numbers beyond a double, nesting deeper than 1024), so those
    are accepted or rejected exactly as json.loads would, except a lone surrogate escape
    ("\\ud800"), which no string column can hold: rejected. One difference remains: orjson reads an
    integer outside [-2**63, 2**64) as a float. As a number (price, time) that is the same float
    json.loads's integer would become; as an id, `text()` rejects it with a clear message. The raw
    table always keeps the exact text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    try:  # a lone surrogate escape ("\ud800") parses, but no column can hold it
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise DecodeError("not valid Unicode: a \\u escape is a lone surrogate") from None
    except (ValueError, RecursionError):
        pass
    return value


def obj(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be an object, got {_show(value)}")
    return value


def lst(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise DecodeError(f"{what} must be a list, got {_show(value)}")
    return value


def text(value: Any, what: str) -> str:
    """A string id; integers are accepted and turned into strings (ids arrive both ways)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2**63:
        raise DecodeError(f"{what} is an integer too large to read exactly, got {_show(value)}")
    raise DecodeError(f"{what} must be a string, got {_show(value)}")


def opt_text(value: Any, what: str) -> str | None:
    return None if value is None else text(value, what)


_YES_NO = {"yes": "Yes", "no": "No"}


def outcome_name(value: Any, what: str) -> str | None:
    """An outcome named by a word: "YES", "yes" and "Yes" are one outcome, recorded as Yes (and No),
    the spelling the book and chance rows of binary markets use; any other name is kept as sent."""
    return canonical_outcome(opt_text(value, what))


def canonical_outcome(name: str | None) -> str | None:
    """outcome_name() for a value already known to be a string or None (the fast paths)."""
    if name is None or name == "Yes" or name == "No":
        return name
    return _YES_NO.get(name.casefold(), name)


def number(value: Any, what: str) -> float:
    """A finite number; numeric strings (decimal strings) are accepted."""
    if isinstance(value, bool):
        raise DecodeError(f"{what} must be a number, got {_show(value)}")
    if isinstance(value, (int, float)):
        try:
            result = float(value)
        except OverflowError:  # an integer beyond any float
            raise DecodeError(f"{what} is out of range, got {_show(value)}") from None
    elif isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            raise DecodeError(f"{what} must be a number, got {_show(value)}") from None
    else:
        raise DecodeError(f"{what} must be a number, got {_show(value)}")
    if not math.isfinite(result):
        raise DecodeError(f"{what} must be finite, got {_show(value)}")
    return result


def opt_number(value: Any, what: str) -> float | None:
    return None if value is None else number(value, what)


INT64 = 2**63 - 1


def integer(value: Any, what: str) -> int:
    """An integer that fits the int64 columns it goes into."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise DecodeError(f"{what} must be an integer, got {_show(value)}")
    if not -INT64 <= value <= INT64:
        raise DecodeError(f"{what} is out of range, got {_show(value)}")
    return int(value)


def probability(value: Any, what: str, *, scale: float = 1.0) -> float:
    p = number(value, what) / scale
    if not 0.0 <= p <= 1.0:
        raise DecodeError(f"{what} must be a probability in 0..{scale:g}, got {_show(value)}")
    return p


# Integer ids outside [-2**63, 2**64) are floats to the checked path's parser (orjson), and rejected
# there as too large to read exactly: the run decoders leave them to it.
INT_ID_MIN, INT_ID_END = -(2**63), 2**64


def fast_id(value):
    """An id as msgspec read it in a run decoder, as the checked path records it: a string as it is,
    an integer as its string; None for an integer the checked path's parser reads as a float (the
    frame goes the checked way). Anything else (msgspec.UNSET) is returned as it is."""
    if type(value) is int:
        return str(value) if INT_ID_MIN <= value < INT_ID_END else None
    return value


def live_chance_appenders(buffers, meta, origin: str, **kwargs) -> tuple:
    """A run decoder's appenders for live chance rows of one venue's own points (feed, conn_id,
    origin and source constant): ts_event, ts_recv, seq, market, outcome, probability. `kwargs`
    go to Buffers.columns (seconds=, nullable=)."""
    cols = buffers.columns("chance", meta.venue, (("feed", meta.feed), ("conn_id", meta.conn_id), ("origin", origin),
                                                  ("source", "live")), "ts_event", **kwargs)
    return cols.appenders("ts_event", "ts_recv", "seq", "market", "outcome", "probability")


def _show(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


class Bounded:
    """A set that remembers at least the last `size` keys added, and at most 2 x size (dedupe by id
    or content). Two generations of dicts: keys go into the current one; when it holds `size`, it
    becomes the previous one and the oldest generation is dropped whole. Nothing is copied, so a
    new key costs two lookups and an insert however long the run (trimming a single window by
    copying it cost a fifth of the recorder's time per frame at full rate)."""

    def __init__(self, size: int = 10_000, items: list | None = None) -> None:
        self._size = size
        self._previous: dict = {}
        self._current: dict = {}
        for item in items or []:
            self.add_new(item)

    def __contains__(self, key) -> bool:
        return key in self._current or key in self._previous

    def add_new(self, key) -> bool:
        """Add `key`; False if it was already there (the dedupe test and insert in one call)."""
        if key in self._previous:
            return False
        current = self._current
        n = len(current)
        current.setdefault(key)  # lookup and insert with one hash of the key
        if len(current) == n:
            return False
        if n + 1 >= self._size:
            self._previous, self._current = current, {}
        return True

    def add_many(self, keys: list) -> list[bool]:
        """add_new() of each key in order; what each returned (the loop in C where it is built)."""
        if _speedups is not None:
            out, self._previous, self._current = _speedups.bounded_add_many(self._previous, self._current, self._size,
                                                                            keys)
            return out
        out = []
        append = out.append
        previous, current, size = self._previous, self._current, self._size
        for key in keys:
            if key in previous:
                append(False)
                continue
            n = len(current)
            current.setdefault(key)
            if len(current) == n:
                append(False)
                continue
            append(True)
            if n + 1 >= size:
                self._previous = previous = current
                self._current = current = {}
        return out

    def add(self, key) -> None:
        self.add_new(key)

    def items(self) -> list:
        """The last `size` keys, oldest first (what `state()` saves)."""
        keys = list(self._previous) + list(self._current)
        return keys[-self._size :]


class _Stream:
    """One outcome's in-order points: times strictly increasing, their probabilities beside them."""

    __slots__ = ("market", "outcome", "ts", "ps", "latest", "current")

    def __init__(self, market: str, outcome: str) -> None:
        self.market, self.outcome = market, outcome
        self.ts, self.ps = array("d"), array("d")
        self.latest = -math.inf  # the latest time of any point of this outcome added, in order or not
        self.current = 0  # where the current generation starts in ts/ps (the previous one is before it)

    def holds(self, t: float, p: float) -> bool:
        i = bisect.bisect_left(self.ts, t)
        return i < len(self.ts) and self.ts[i] == t and self.ps[i] == p


class PointWindow:
    """The dedupe window for chance points (market, outcome, t, p): like Bounded, it remembers at
    least the last `size` points added, and at most 4 x size (2 x size in order, 2 x size not).

    Live points arrive in time order per outcome, and a point later than every point its outcome
    has had cannot have been seen: it is only appended to that outcome's arrays of times and
    probabilities (16 bytes; no key, no hashing; a hash-set key cost ~150 bytes and, at full
    rate, the largest share of the decoder's time in cache misses). Any other point (a repeat, a
    history point, one out of order) is looked up in its outcome's arrays (bisect) and in a
    Bounded of out-of-order points. In-order points are forgotten by generations of `size`
    additions, as Bounded does. `streams` (market -> outcome -> _Stream) is read by decoders'
    fast paths, which must do exactly what add_new does for an in-order point."""

    def __init__(self, size: int = 50_000, state: Any = None) -> None:
        self.size = size
        self.streams: dict[str, dict[str, _Stream]] = {}
        self.added = 0  # in-order points added in the current generation
        self._other = Bounded(size)
        if isinstance(state, dict):
            self._restore(state)
        else:  # the older form: a list of [market, outcome, t, p]
            for item in state or []:
                self.add_new(tuple(item))

    def stream(self, market: str, outcome: str) -> _Stream:
        by_outcome = self.streams.get(market)
        if by_outcome is None:
            by_outcome = self.streams[sys.intern(market)] = {}
        st = by_outcome.get(outcome)
        if st is None:
            st = by_outcome[sys.intern(outcome)] = _Stream(sys.intern(market), sys.intern(outcome))
        return st

    def __contains__(self, key) -> bool:
        market, outcome, t, p = key
        st = self.streams.get(market, {}).get(outcome)
        return (st is not None and st.holds(t, p)) or key in self._other

    def add_new(self, key) -> bool:
        """Add (market, outcome, t, p); False if it was already there."""
        market, outcome, t, p = key
        st = self.stream(market, outcome)
        if t > st.latest:  # in order: new for sure
            st.ts.append(t)
            st.ps.append(p)
            st.latest = t
            self.added += 1
            if self.added >= self.size:
                self.rotate()
            return True
        if st.holds(t, p) or key in self._other:
            return False
        self._other.add_new((st.market, st.outcome, t, p))
        return True

    def add(self, key) -> None:
        self.add_new(key)

    def rotate(self) -> None:
        """Start a new generation of in-order points, forgetting the oldest one."""
        self.added = 0
        for by_outcome in self.streams.values():
            for st in by_outcome.values():
                drop = st.current
                if drop:
                    del st.ts[:drop]
                    del st.ps[:drop]
                st.current = len(st.ts)

    def state(self) -> dict:
        """JSON-able: each outcome's arrays as base64 of little-endian doubles, and the
        out-of-order points as a list. Cheap to dump at every flush (no key per point)."""
        streams = []
        for by_outcome in self.streams.values():
            for st in by_outcome.values():
                if st.ts:
                    streams.append([st.market, st.outcome, _pack(st.ts), _pack(st.ps), st.latest])
        return {"streams": streams, "other": self._other.items()}

    def items(self) -> list:
        """Every point remembered, in-order ones per outcome first (what a reference model compares)."""
        out = [(st.market, st.outcome, t, p) for by in self.streams.values() for st in by.values()
               for t, p in zip(st.ts, st.ps)]
        return out + self._other.items()

    def _restore(self, state: dict) -> None:
        for market, outcome, ts, ps, latest in state.get("streams", []):
            st = self.stream(market, outcome)
            st.ts, st.ps = _unpack(ts), _unpack(ps)
            if len(st.ts) != len(st.ps):
                raise ValueError(f"dedupe state for {market}/{outcome}: {len(st.ts)} times, {len(st.ps)} probabilities")
            st.latest = latest if latest is not None else -math.inf
            self.added += len(st.ts)
        for item in state.get("other", []):
            market, outcome, t, p = item
            st = self.stream(market, outcome)
            st.latest = max(st.latest, t)
            self._other.add_new((st.market, st.outcome, t, p))
        if self.added >= self.size:
            self.rotate()


def _pack(values: array) -> str:
    if sys.byteorder != "little":
        values = array("d", values)
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def _unpack(text: str) -> array:
    values = array("d")
    values.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        values.byteswap()
    return values


@attrs.frozen(kw_only=True)
class Control:
    """What the connection must do about a frame (the control side of a venue protocol)."""

    send: tuple[str, ...] = ()  # frames to send now (a heartbeat echo, a re-request)
    subscribed: bool = False  # the venue confirmed auth or subscription
    reconnect: str | None = None  # the venue asked for a new connection; keep reading this one
    fatal: str | None = None  # e.g. credentials rejected: close and back off (no retry storm)
    error: str | None = None  # a venue error worth one log line; the connection goes on


NOTHING = Control()


def control_message(text: str) -> dict | None:
    """A frame as a JSON object for the control side, or None (the decoder reports bad frames)."""
    try:
        msg = parse_json(text)
    except DecodeError:
        return None
    return msg if isinstance(msg, dict) else None


def compact(value: Any) -> str:
    """JSON text of a value, compact and stable (for payload columns and dedupe keys)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
