"""Rebuild: re-derive the normalised tables from `raw` with the current decoders (plain dataset or lake).

    raw (per feed, in received order) ─► the feed's decoder, as configured ─► rows (and rejects)
    each affected partition: rows kept + rows rebuilt ─► staging ─► swapped in atomically

What is rebuilt: the rows of the selected feeds (every feed of the config, or of one venue)
whose frames were received in [start, end). Rows keep their lineage (`conn_id`, `seq`,
`ts_recv` are the raw frame's). Each feed's frames are decoded from its first recorded frame,
in the order the recorder decoded them (RECEIVED_ORDER), so the dedupe windows hold exactly what
they held live; frames before `start` only rebuild that state, and their rows are not touched.

A partition is affected when rebuilt rows land in it or old rows of the range leave it. Its new
content (the rows of other feeds and times, plus the rebuilt ones) is written to
`<root>/_rebuild/...`, then swapped with the live partition by `renameat2(RENAME_EXCHANGE)` under
the writers' lock, exactly as compaction swaps (compact.py): a reader sees the old partition or
the new one, never both, never neither. Partitions are swapped one by one: a row that moves
from `rejects` to `chance` is, for the moment between those two swaps, in both tables or in
neither. Run it on a range no recorder is writing any more (a live recorder's new files of the
same feeds and range would be kept beside the rebuilt rows).

The decoding (`derive`) is the same for every store; only replacing the partitions differs: the
store's `rebuild_session()` gives the connection to read and the replace step. On a DuckLake lake
(store/lake_rebuild.py) raw is read at one pinned snapshot and every affected partition of every
table is replaced in one catalog transaction (no partial state between tables there).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Callable

import attrs
import pyarrow as pa

from . import layout, schema, timeutil
from .compact import exchange, writers_lock
from .config import Config, FeedConfig
from .errors import DecodeError, RecorderError
from .fsutil import fsync_dir
from .records import Reject
from .venues import registry
from .venues.base import FrameMeta
from .writer import Buffers, sort_keys

log = logging.getLogger(__name__)
DERIVED = ("chance", "trades", "book", "prices", "account", "rejects")
STAGING = "_rebuild"
# The order the recorder decoded a feed's frames in: by receive time, each connection's frames in
# their own order (a running maximum of the receive time, in case the wall clock stepped back),
# overlapping connections interleaved as they were received.
RECEIVED_ORDER = ("max(ts_recv) OVER (PARTITION BY conn_id ORDER BY seq ROWS UNBOUNDED PRECEDING), "
                  "conn_id, seq")
FETCH_ROWS = 8192


@attrs.frozen(kw_only=True)
class Result:
    partition: str
    rows_before: int
    rows_after: int
    seconds: float


@attrs.frozen(kw_only=True)
class Selection:
    """Which rows a rebuild re-derives: these feeds' rows received in [start_us, end_us)."""

    feeds: tuple[FeedConfig, ...]
    tables: tuple[str, ...] = DERIVED
    start_us: int | None = None
    end_us: int | None = None

    def condition(self) -> str:
        """SQL: true for the rows this rebuild replaces (literals only: used inside read_parquet queries)."""
        names = ", ".join("'" + f.name.replace("'", "''") + "'" for f in self.feeds)
        cond = [f"feed IN ({names})"]
        if self.start_us is not None:
            cond.append(f"epoch_us(ts_recv) >= {int(self.start_us)}")
        if self.end_us is not None:
            cond.append(f"epoch_us(ts_recv) < {int(self.end_us)}")
        return " AND ".join(cond)


def select(config: Config, *, tables: tuple[str, ...] = DERIVED, venue: str | None = None,
           start_us: int | None = None, end_us: int | None = None) -> Selection:
    for t in tables:
        if t not in DERIVED:
            raise RecorderError(f"--table {t!r} cannot be rebuilt; tables derived from raw: {', '.join(DERIVED)}")
    feeds = tuple(f for f in config.feeds if venue is None or f.venue == venue)
    if not feeds:
        raise RecorderError(f"no feed of venue {venue!r} in the config; venues there: "
                            f"{', '.join(sorted({f.venue for f in config.feeds})) or 'none'}")
    if start_us is not None and end_us is not None and start_us >= end_us:
        raise RecorderError("--start must be before --end")
    return Selection(feeds=feeds, tables=tables, start_us=start_us, end_us=end_us)


# --- decoding ---------------------------------------------------------------------------------


def decode_feed(con, feed: FeedConfig, sel: Selection, buffers: Buffers) -> int:
    """Run one feed's raw frames through a fresh decoder; rows of frames in range go to `buffers`.
    Returns the number of frames in range."""
    decoder = registry.module(feed.venue).make_decoder(feed.spec)
    end = "" if sel.end_us is None else f"AND epoch_us(ts_recv) < {int(sel.end_us)}"
    cursor = con.cursor()
    try:
        cursor.execute(f"SELECT epoch_us(ts_recv), conn_id, seq, payload FROM raw WHERE feed = $feed "
                       f"AND venue = $venue {end} ORDER BY {RECEIVED_ORDER}", {"feed": feed.name, "venue": feed.venue})
        start = sel.start_us
        scratch = Buffers()
        n = 0
        while rows := cursor.fetchmany(FETCH_ROWS):
            for ts, conn_id, seq, text in rows:
                meta = FrameMeta(venue=feed.venue, feed=feed.name, conn_id=conn_id, seq=seq, ts_recv=ts)
                into = buffers if start is None or ts >= start else scratch
                decode_frame(decoder, text, meta, into)
                n += into is buffers
            scratch.cut()  # rows of frames before the range only carried the decoder's state forward
    finally:
        cursor.close()
    return n


def decode_frame(decoder, text: str, meta: FrameMeta, buffers: Buffers) -> None:
    """What the pipeline does with one frame (pipeline.Pipeline._decode_one): rows, or a reject."""
    try:
        records = decoder.decode(text, meta)
    except DecodeError as exc:
        buffers.add(Reject(ts_event=None, error=str(exc), payload=text, **meta.common()))
        return
    for r in records:
        if type(r) is tuple:
            buffers.add_row(*r)
        else:
            buffers.add(r)


# --- swapping partitions ----------------------------------------------------------------------


def _files_sql(files: list[Path]) -> str:
    return "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"


def rewrite_partition(con, root: Path, sel: Selection, key: tuple[str, str, str], batches: list[pa.RecordBatch], *,
                      before_swap: Callable[[], None] | None = None) -> Result:
    """Write a partition's new content to staging and swap it in atomically."""
    started = time.monotonic()
    table, venue, date = key
    live = root / table / f"venue={venue}" / f"date={date}"
    inputs = sorted(live.glob("*.parquet"))
    file_schema = schema.load(table).file_schema
    parts = [pa.Table.from_batches(batches, schema=file_schema)] if batches else []
    before = 0
    if inputs:
        cols = ", ".join(file_schema.names)
        files = _files_sql(inputs)
        before = con.sql(f"SELECT count(*) FROM read_parquet({files}, hive_partitioning = false, "
                         f"union_by_name = true)").fetchone()[0]
        kept = con.sql(f"SELECT {cols} FROM read_parquet({files}, hive_partitioning = false, union_by_name = true) "
                       f"WHERE NOT ({sel.condition()})")
        kept = kept.to_arrow_table() if hasattr(kept, "to_arrow_table") else kept.arrow()
        parts.append(kept.cast(file_schema))
    rows = pa.concat_tables(parts) if parts else file_schema.empty_table()
    stage = root / STAGING / secrets.token_hex(4) / table / f"venue={venue}" / f"date={date}"
    stage.mkdir(parents=True)
    if rows.num_rows:
        final = stage / f"rebuilt-{int(time.time())}-{secrets.token_hex(3)}.parquet"
        os.replace(layout.write_tmp(rows, final, sort_by=sort_keys(table)), final)
    fsync_dir(stage)
    if before_swap is not None:  # test seam
        before_swap()
    with writers_lock(root, exclusive=True):
        gone = [f.name for f in inputs if not f.exists()]
        if gone:  # a compaction (or another rebuild) rewrote the partition since we read it
            shutil.rmtree(stage.parents[2], ignore_errors=True)  # this rebuild's staging of it
            raise RecorderError(f"{live.relative_to(root)} was rewritten while rebuilding ({gone[0]} is gone): "
                                "nothing was changed there; run the rebuild again when no compaction is running")
        if live.is_dir():
            for extra in sorted(set(live.glob("*.parquet")) - set(inputs)):
                os.link(extra, stage / extra.name)  # published by a recorder since we read the partition
            exchange(stage, live)
            fsync_dir(live.parent)
        else:
            live.parent.mkdir(parents=True, exist_ok=True)
            os.rename(stage, live)
            fsync_dir(live.parent)
    return Result(partition=f"{table}/venue={venue}/date={date}", rows_before=before, rows_after=rows.num_rows,
                  seconds=time.monotonic() - started)


@attrs.frozen(kw_only=True)
class Derived:
    """What the current decoders make of the selected frames: the rebuilt rows per partition."""

    frames: int
    partitions: dict  # (table, venue, "YYYY-MM-DD") -> [pa.RecordBatch, ...] (file columns only)


def derive(con, sel: Selection) -> Derived:
    """Decode the selected feeds' raw frames (the `raw` view of `con`) with the current decoders.
    Shared by every store: only replacing the partitions differs."""
    recorded = {r[0] for r in con.sql("SELECT DISTINCT feed FROM raw").fetchall()}
    buffers = Buffers()
    frames = 0
    for feed in sel.feeds:
        if feed.name in recorded:
            frames += decode_feed(con, feed, sel, buffers)
    log.info("rebuild: decoded %d frames", frames)
    partitions = {(table, venue, timeutil.day_name(day)): batches
                  for (table, venue, day), batches in buffers.cut().partitions.items() if table in sel.tables}
    return Derived(frames=frames, partitions=partitions)


def affected_partitions(con, sel: Selection, derived: Derived) -> list[tuple[str, str, str]]:
    """(table, venue, date) of every partition the rebuild rewrites: rows land there, or leave."""
    out = set(derived.partitions)
    venues = sorted({f.venue for f in sel.feeds})
    for table in sel.tables:
        for venue in venues:
            rows = con.sql(f"SELECT DISTINCT CAST(date AS VARCHAR) AS d FROM {table} "
                           f"WHERE venue = $v AND {sel.condition()}", params={"v": venue}).fetchall()
            out.update((table, venue, d) for (d,) in rows)
    return sorted(out)


def replace_plain(con, root: Path, sel: Selection, derived: Derived, *,
                  progress: Callable[[Result], None] | None = None,
                  before_swap: Callable[[], None] | None = None) -> list[Result]:
    """The plain dataset's replace step: each affected partition rewritten to staging and swapped in."""
    shutil.rmtree(root / STAGING, ignore_errors=True)
    results = []
    try:
        for key in affected_partitions(con, sel, derived):
            result = rewrite_partition(con, root, sel, key, derived.partitions.get(key, []), before_swap=before_swap)
            results.append(result)
            if progress:
                progress(result)
    finally:
        shutil.rmtree(root / STAGING, ignore_errors=True)
    return results


def rebuild(target, sel: Selection, *, progress: Callable[[Result], None] | None = None,
            before_swap: Callable[[], None] | None = None) -> list[Result]:
    """Re-derive the selected rows from raw and replace every affected partition.

    `target`: a plain dataset's root directory, or a Store (store/__init__.py): the store opens
    what the rebuild reads and replaces the partitions its own way (`Store.rebuild_session`)."""
    from .store.plain import PlainStore

    store = target if hasattr(target, "rebuild_session") else PlainStore(Path(target))
    with store.rebuild_session() as session:
        derived = derive(session.con, sel)
        return session.replace_partitions(sel, derived, progress=progress, before_swap=before_swap)
