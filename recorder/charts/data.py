"""The data a chart is drawn from: one market's lines, bid/ask band, volume and gaps over a range.

`chart_data(dataset, market, ...)` runs the named queries (`chance_series`, `book_band`,
`trade_volume`, `gaps`) and returns a `ChartData`: plain numbers, microseconds since the epoch,
no drawing. The PNG, the HTML file and the live page all draw from it (`to_json()` is what the
browser's chart.js receives), so a test of the data is a test of what every chart shows.

A line is broken (a point with value None) where a gap lies between two of its buckets, so no
chart draws a straight line through an interval the recorder was not listening.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from ..dataset import Dataset
from ..errors import QueryError
from ..queries import parse_interval, parse_time
from ..timeutil import UTC, us_to_datetime

# Bucket widths the automatic interval picks from (microseconds), and how many buckets it aims
# for at most across the range; an explicit --interval may make up to MAX_BUCKETS.
NICE_INTERVALS_US = tuple(int(s * 1_000_000) for s in (
    0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400,
    7 * 86400))
TARGET_BUCKETS = 600
MAX_BUCKETS = 50_000
SECOND = 1_000_000


@attrs.frozen(kw_only=True)
class Series:
    """One probability line: a venue's outcome (and origin, for relayed chances)."""

    venue: str
    origin: str
    outcome: str
    label: str
    times: tuple[int, ...]  # bucket starts, µs
    values: tuple[float | None, ...]  # bucket close; None breaks the line (a gap)

    @property
    def points(self) -> int:
        return sum(v is not None for v in self.values)


@attrs.frozen(kw_only=True)
class Band:
    """Best bid and best ask of one outcome's book, per bucket."""

    venue: str
    outcome: str
    times: tuple[int, ...]
    bids: tuple[float | None, ...]
    asks: tuple[float | None, ...]


@attrs.frozen(kw_only=True)
class Volume:
    """Traded volume per bucket, summed over venues: size, or the count of trades when no trade
    carries a size."""

    unit: str  # "size" or "trades"
    venues: frozenset[str]
    times: tuple[int, ...]
    values: tuple[float, ...]


@attrs.frozen(kw_only=True)
class Gap:
    """An interval where at least one feed carrying the market was not recording (feed gaps that
    overlap are merged)."""

    start: int
    end: int
    feeds: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SECOND

    @property
    def label(self) -> str:
        who = ", ".join(self.feeds) if len(self.feeds) <= 3 else f"{len(self.feeds)} feeds"
        return f"gap {_duration(self.seconds)} ({who})"


@attrs.frozen(kw_only=True)
class ChartData:
    market: str
    venues: tuple[str, ...]
    start: int  # range, µs, end exclusive
    end: int
    interval: int  # bucket width, µs
    series: tuple[Series, ...]
    bands: tuple[Band, ...]
    volume: Volume | None
    gaps: tuple[Gap, ...]

    @property
    def points(self) -> int:
        return sum(s.points for s in self.series)

    def band_colour(self, i: int) -> int:
        """The palette index of band i: its outcome's line when that line is the venue's own
        chance (not one it relays), else a colour of its own after the lines'."""
        b = self.bands[i]
        for j, s in enumerate(self.series):
            if (s.venue, s.outcome) == (b.venue, b.outcome) and s.origin == s.venue:
                return j
        return len(self.series) + i

    @property
    def title(self) -> str:
        venues = ", ".join(self.venues) or "no venue"
        return (f"{self.market} · {venues} · {_iso(self.start)} – {_iso(self.end)} UTC · "
                f"{self.points:,} points, {_duration(self.interval / SECOND)} buckets")

    def to_json(self) -> dict[str, Any]:
        """What chart.js draws: times as integer microseconds (exact in a JS number), values as
        numbers or null (a break in the line)."""
        return {
            "title": self.title, "market": self.market, "venues": list(self.venues),
            "start": self.start, "end": self.end, "interval": self.interval,
            "grid_start": grid_floor(self.start, self.interval),
            "series": [{"label": x.label, "venue": x.venue, "origin": x.origin, "outcome": x.outcome,
                        "times": list(x.times), "values": list(x.values)} for x in self.series],
            "bands": [{"venue": b.venue, "outcome": b.outcome, "colour": self.band_colour(i), "times": list(b.times),
                       "bids": list(b.bids), "asks": list(b.asks)} for i, b in enumerate(self.bands)],
            "volume": None if self.volume is None else {"unit": self.volume.unit, "times": list(self.volume.times),
                                                        "values": list(self.volume.values)},
            "gaps": [{"start": g.start, "end": g.end, "seconds": g.seconds, "feeds": list(g.feeds),
                      "reasons": list(g.reasons), "label": g.label} for g in self.gaps],
        }


def chart_data(ds: Dataset, market: str, *, venue: str | None = None, start: str | dt.datetime | None = None,
               end: str | dt.datetime | None = None, interval: str | None = None,
               now: dt.datetime | None = None) -> ChartData:
    """The chart of `market` over [start, end) (default: the span of its recorded rows)."""
    now = now or dt.datetime.now(UTC)
    lo, hi = _range(ds, market, venue, start, end, now)
    iv = pick_interval(lo, hi) if interval is None else _interval(interval, lo, hi)
    params = {"market": market, "start": us_to_datetime(lo), "end": us_to_datetime(hi), "interval": f"{iv}us"}
    if venue is not None:
        params["venue"] = venue
    gaps = merge_gaps(ds.query("gaps", **{k: v for k, v in params.items() if k != "interval"}))
    series = tuple(_series(ds.query("chance_series", **params), gaps, iv))
    bands = tuple(_bands(ds.query("book_band", **params), gaps, iv))
    volume = _volume(ds.query("trade_volume", **params))
    if not series and not bands and volume is None:
        where = f" on venue {venue!r}" if venue else ""
        raise QueryError(f"market {market!r} has no chance, book or trade rows{where} between {_iso(lo)} and "
                         f"{_iso(hi)}; `recorder query latest` lists the recorded markets")
    venues = sorted({x.venue for x in series} | {b.venue for b in bands} | (volume.venues if volume else set()))
    return ChartData(market=market, venues=tuple(venues), start=lo, end=hi, interval=iv, series=series, bands=bands,
                     volume=volume, gaps=gaps)


# --- range and interval ---------------------------------------------------------------------

_EXTENT = """
SELECT epoch_us(min(t)) AS lo, epoch_us(max(t)) AS hi FROM (
    SELECT coalesce(ts_event, ts_recv) AS t FROM chance WHERE market = $market AND ($venue IS NULL OR venue = $venue)
    UNION ALL
    SELECT coalesce(ts_event, ts_recv) FROM book WHERE market = $market AND ($venue IS NULL OR venue = $venue)
    UNION ALL
    SELECT coalesce(ts_event, ts_recv) FROM trades WHERE market = $market AND ($venue IS NULL OR venue = $venue))
"""


def _range(ds: Dataset, market: str, venue: str | None, start, end, now: dt.datetime) -> tuple[int, int]:
    lo = None if start is None else _us(_time("start", start, now))
    hi = None if end is None else _us(_time("end", end, now))
    if lo is None or hi is None:
        row = ds.sql(_EXTENT, {"market": market, "venue": venue}).to_pylist()[0]
        if row["lo"] is None:
            where = f" on venue {venue!r}" if venue else ""
            raise QueryError(f"market {market!r} has no chance, book or trade rows{where}; "
                             "`recorder query latest` lists the recorded markets")
        lo = row["lo"] if lo is None else lo
        hi = row["hi"] + 1 if hi is None else hi
    if lo >= hi:
        raise QueryError(f"the range is empty: start {_iso(lo)} is not before end {_iso(hi)}")
    return lo, hi


def _time(name: str, value: str | dt.datetime, now: dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    try:
        return parse_time(value, now)
    except ValueError as exc:
        raise QueryError(f"{name}={value!r} is not a valid timestamp: {exc}") from None


def pick_interval(lo: int, hi: int) -> int:
    """The smallest nice bucket width that makes at most TARGET_BUCKETS buckets of [lo, hi)."""
    for iv in NICE_INTERVALS_US:
        if (hi - lo) / iv <= TARGET_BUCKETS:
            return iv
    return NICE_INTERVALS_US[-1]


def _interval(text: str, lo: int, hi: int) -> int:
    try:
        iv = parse_interval(text)
    except ValueError as exc:
        raise QueryError(f"--interval {text!r} is not a valid interval: {exc}") from None
    if (hi - lo) / iv > MAX_BUCKETS:
        raise QueryError(f"--interval {text} makes {(hi - lo) // iv:,} buckets over {_duration((hi - lo) / SECOND)}; "
                         f"at most {MAX_BUCKETS:,}: use {_duration(pick_interval(lo, hi) / SECOND)} or more")
    return iv


def grid_floor(t: int, iv: int) -> int:
    """The start of the bucket holding t, as DuckDB's time_bucket places it (origin 2000-01-03)."""
    origin = 946_857_600_000_000
    return origin + (t - origin) // iv * iv


# --- gaps and line breaks ---------------------------------------------------------------------

def merge_gaps(table: pa.Table) -> tuple[Gap, ...]:
    """Per-feed gaps (the `gaps` query) merged where they overlap."""
    rows = sorted(zip(_us_col(table, "start"), _us_col(table, "end"), table.column("feed").to_pylist(),
                      table.column("reason").to_pylist()))
    merged: list[list] = []
    for start, end, feed, reason in rows:
        if merged and start <= merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], end)
            last[2].add(feed)
            last[3].add(reason)
        else:
            merged.append([start, end, {feed}, {reason}])
    return tuple(Gap(start=s, end=e, feeds=tuple(sorted(f)), reasons=tuple(sorted(r))) for s, e, f, r in merged)


def broken(times: list[int], columns: list[list], gaps: tuple[Gap, ...], iv: int):
    """Insert a break (None in every column) after a bucket when a gap starts before the next
    bucket and the buckets between are empty: the line stops at the gap and resumes after it."""
    out_t, out_cols = [], [[] for _ in columns]
    for i, t in enumerate(times):
        if i and _gap_between(times[i - 1] + iv, t, gaps):
            out_t.append(times[i - 1] + iv)
            for col in out_cols:
                col.append(None)
        out_t.append(t)
        for col, src in zip(out_cols, columns):
            col.append(src[i])
    return tuple(out_t), [tuple(c) for c in out_cols]


def _gap_between(a: int, b: int, gaps: tuple[Gap, ...]) -> bool:
    """Whether a gap overlaps [a, b): the empty buckets between two points."""
    return a < b and any(g.start < b and g.end > a for g in gaps)


# --- query results to records -------------------------------------------------------------------

def _series(table: pa.Table, gaps, iv: int):
    groups = _group(table, ("venue", "origin", "outcome"))
    many_venues = len({k[0] for k in groups}) > 1
    for (venue, origin, outcome), rows in groups.items():
        times, (values,) = broken(rows["bucket"], [rows["close"]], gaps, iv)
        label = outcome if not many_venues else f"{venue} {outcome}"
        if origin != venue:  # a relayed chance (predict.fun's Polymarket and Kalshi)
            label += f" ({origin})"
        yield Series(venue=venue, origin=origin, outcome=outcome, label=label, times=times, values=values)


def _bands(table: pa.Table, gaps, iv: int):
    for (venue, outcome), rows in _group(table, ("venue", "outcome")).items():
        times, (bids, asks) = broken(rows["bucket"], [rows["best_bid"], rows["best_ask"]], gaps, iv)
        yield Band(venue=venue, outcome=outcome, times=times, bids=bids, asks=asks)


def _volume(table: pa.Table) -> Volume | None:
    if table.num_rows == 0:
        return None
    sizes = table.column("size").to_pylist()
    unit = "size" if any(s is not None for s in sizes) else "trades"
    totals: dict[int, float] = {}
    for t, size, n in zip(_us_col(table, "bucket"), sizes, table.column("trades").to_pylist()):
        totals[t] = totals.get(t, 0.0) + ((size or 0.0) if unit == "size" else n)
    times = tuple(sorted(totals))
    return Volume(unit=unit, venues=frozenset(table.column("venue").to_pylist()), times=times, values=tuple(totals[t] for t in times))


def _group(table: pa.Table, keys: tuple[str, ...]) -> dict[tuple, dict[str, list]]:
    cols = {name: (_us_col(table, name) if name == "bucket" else table.column(name).to_pylist())
            for name in table.column_names}
    groups: dict[tuple, dict[str, list]] = {}
    for i in range(table.num_rows):
        g = groups.setdefault(tuple(cols[k][i] for k in keys), {name: [] for name in cols})
        for name, col in cols.items():
            g[name].append(col[i])
    return groups


# --- small conversions -------------------------------------------------------------------------

def _us_col(table: pa.Table, name: str) -> list[int]:
    col = table.column(name)
    if pa.types.is_timestamp(col.type):
        col = pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64())
    return col.to_pylist()


def _us(t: dt.datetime) -> int:
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * SECOND + delta.microseconds


def _iso(us: int) -> str:
    t = us_to_datetime(us)
    text = t.strftime("%Y-%m-%d %H:%M:%S")
    return text + (f".{t.microsecond // 1000:03d}" if t.microsecond else "")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    if seconds < 172800:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} d"
