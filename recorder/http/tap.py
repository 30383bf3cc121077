"""What the pipeline buffered since the last look, for the live page, with no work on the read loop.

A `Tap` on one table remembers, for each container the buffers append that table's rows to (a
row list or a `Columns`), how many rows it has seen. `take()` (called on the event loop every
half second or so, between two reads) returns the rows appended since, including those in
containers that left the buffers in between (`Buffers.watch` keeps them for us: a flush or a
full batch is rare, never per row). The read loop does nothing more per frame than before.

    tap = Tap(pipeline.buffers, "chance")
    rows = tap.take(lambda venue, market: market in wanted)   # list of dicts, oldest first
"""

from __future__ import annotations

from typing import Any, Callable

from .. import schema
from ..writer import Buffers, Columns

Want = Callable[[str, str], bool]  # (venue, market) -> keep this row?


def skip(venue: str, market: str) -> bool:
    """`take(skip)`: only move past the new rows (nobody watches), reading none of them."""
    return False


def _us(seconds: float) -> int:
    return round(seconds * 1e6)  # half to even, as Columns converts seconds


class Tap:
    def __init__(self, buffers: Buffers, table: str) -> None:
        self.buffers = buffers
        self.table = table
        self.names = schema.load(table).file_columns
        self._retired = buffers.watch(table)
        self._seen: dict[int, tuple[Any, int]] = {}  # id(container) -> (container, rows seen); holds it alive
        self.rows_seen = 0

    def take(self, want: Want | None = None) -> list[dict[str, Any]]:
        """The rows appended since the last call (those `want(venue, market)` keeps; all if None)."""
        out: list[dict[str, Any]] = []
        self._walk(lambda venue, container, seen: out.extend(self._rows(venue, container, seen, want)))
        return out

    def take_keys(self, markets: set[str] | frozenset[str]) -> set[tuple[str, str]]:
        """(feed, market) of the rows appended since the last call whose market is in `markets`:
        which feeds carry a market, reading two columns only."""
        out: set[tuple[str, str]] = set()
        self._walk(lambda venue, container, seen: out.update(self._keys(container, seen, markets)))
        return out

    def _walk(self, visit: Callable[[str, Any, int], None]) -> None:
        """visit(venue, container, rows already seen) for every container with rows to look at."""
        retired = self._retired[:]
        del self._retired[:]
        for venue, container in retired:
            _, seen = self._seen.pop(id(container), (container, 0))
            visit(venue, container, seen)
        current = {}
        for venue, container in self.buffers.containers(self.table):
            _, seen = self._seen.get(id(container), (container, 0))
            visit(venue, container, seen)
            current[id(container)] = (container, len(container))
        self._seen = current

    def _keys(self, container, seen: int, markets) -> set[tuple[str, str]]:
        n = len(container)
        if n <= seen or not markets:
            return set()
        self.rows_seen += n - seen
        if isinstance(container, Columns):
            feeds = container.cols.get("feed") or [container.consts.get("feed")] * n
            names = container.cols.get("market") or [container.consts.get("market")] * n
            return {(feeds[i], names[i]) for i in range(seen, n) if names[i] in markets}
        f, m = self.names.index("feed"), self.names.index("market")
        return {(r[f], r[m]) for r in container[seen:n] if r[m] in markets}

    def _rows(self, venue: str, container, seen: int, want: Want | None) -> list[dict[str, Any]]:
        n = len(container)
        if n <= seen or want is skip:
            self.rows_seen += max(0, n - seen)
            return []
        self.rows_seen += n - seen
        if isinstance(container, Columns):
            return self._from_columns(venue, container, seen, n, want)
        names = self.names
        market = names.index("market") if "market" in names else None
        rows = container[seen:n]
        if want is not None and market is not None:
            rows = [r for r in rows if want(venue, r[market])]
        return [{"venue": venue, **dict(zip(names, r))} for r in rows]

    def _from_columns(self, venue: str, cols: Columns, seen: int, n: int, want: Want | None) -> list[dict[str, Any]]:
        if want is not None and "market" in cols.consts and not want(venue, cols.consts["market"]):
            return []
        markets = cols.cols.get("market")
        keep = range(seen, n) if want is None or markets is None else \
            [i for i in range(seen, n) if want(venue, markets[i])]
        out = []
        for i in keep:
            row = {"venue": venue, **cols.consts}
            for name, col in cols.cols.items():
                row[name] = _us(col[i]) if name in cols.seconds else col[i]
            out.append(row)
        return out
