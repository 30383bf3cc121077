"""Columnar buffers per table and partition, cut into flush jobs written as Parquet.

Rows are appended as records; every `batch_rows` rows a partition's records are turned into an
Arrow RecordBatch, so a million buffered rows cost tens of MB, not hundreds. `cut()` hands all
buffered batches over as one `Flush` (called on the event loop, cheap); `write_files()` sorts,
encodes and writes them (called in a worker thread).
"""

from __future__ import annotations

import operator
from array import array
from pathlib import Path
import attrs
import pyarrow as pa

from . import layout, schema, timeutil
from .records import Record

PartitionKey = tuple[str, str, int]  # (table, venue, day)


@attrs.define
class _Partition:
    table: str
    rows: list = attrs.field(factory=list)  # tuples in file-column order
    batches: list[pa.RecordBatch] = attrs.field(factory=list)
    runs: list = attrs.field(factory=list)  # raw only: (feed, ts_recv, conn_id, first_seq, texts)
    run_frames: int = 0


@attrs.frozen(kw_only=True)
class Flush:
    """Everything buffered at one cut, ready to be written."""

    partitions: dict[PartitionKey, list[pa.RecordBatch]]
    rows: int


def _row_getter(table: str):
    """record -> tuple of its file columns, in one C call."""
    return operator.attrgetter(*schema.load(table).file_columns)


class Buffers:
    """Per-table, per-partition row buffers."""

    def __init__(self, *, batch_rows: int = 8192) -> None:
        self._batch_rows = batch_rows
        self._parts: dict[PartitionKey, _Partition] = {}
        self._getters = {t: _row_getter(t) for t in schema.TABLES}
        self._schemas = {t: schema.load(t).file_schema for t in schema.TABLES}
        self.rows = 0

    def add(self, record: Record) -> None:
        ts = record.ts_event if record.ts_event is not None else record.ts_recv
        table = record.table
        self.add_row(table, record.venue, ts // timeutil.US_PER_DAY, self._getters[table](record))

    def add_row(self, table: str, venue: str, day: int, row: tuple) -> None:
        """Add one row given as a tuple of the table's file columns (the hot path for raw frames)."""
        key = (table, venue, day)
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = _Partition(table)
        rows = part.rows
        rows.append(row)
        self.rows += 1
        if len(rows) >= self._batch_rows:
            part.batches.append(self._to_batch(table, rows))
            part.rows = []

    def add_frames(self, venue: str, day: int, feed: str, ts_recv: int, conn_id: str, first_seq: int,
                   texts: list[str]) -> None:
        """Raw rows for a run of frames, kept as the run (not a tuple per frame) and turned into
        columns directly: feed, conn_id and ts_recv are one value per run, seq a range."""
        key = ("raw", venue, day)
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = _Partition("raw")
        part.runs.append((feed, ts_recv, conn_id, first_seq, texts))
        part.run_frames += len(texts)
        self.rows += len(texts)
        if part.run_frames >= self._batch_rows:
            part.batches.append(self._runs_to_batch(part.runs, part.run_frames))
            part.runs, part.run_frames = [], 0

    def _runs_to_batch(self, runs: list, n: int) -> pa.RecordBatch:
        sch = self._schemas["raw"]
        seq, ts = array("q"), array("q")
        feeds, conns = array("i"), array("i")
        feed_ids: dict[str, int] = {}
        conn_ids: dict[str, int] = {}
        for feed, ts_recv, conn_id, first, texts in runs:
            k = len(texts)
            f = feed_ids.get(feed)
            if f is None:
                f = feed_ids[feed] = len(feed_ids)
            c = conn_ids.get(conn_id)
            if c is None:
                c = conn_ids[conn_id] = len(conn_ids)
            if k == 1:  # light traffic: runs of one frame
                seq.append(first)
                ts.append(ts_recv)
                feeds.append(f)
                conns.append(c)
            else:
                seq.extend(range(first, first + k))
                ts.extend(array("q", [ts_recv]) * k)
                feeds.extend(array("i", [f]) * k)
                conns.extend(array("i", [c]) * k)

        def ints(values: array, typ: pa.DataType) -> pa.Array:
            return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(values)])

        def strings(indices: array, ids: dict) -> pa.Array:
            return pa.DictionaryArray.from_arrays(ints(indices, pa.int32()), pa.array(list(ids), pa.string())).dictionary_decode()

        columns = {"feed": strings(feeds, feed_ids), "ts_event": pa.nulls(n, sch.field("ts_event").type),
                   "ts_recv": ints(ts, sch.field("ts_recv").type), "conn_id": strings(conns, conn_ids),
                   "seq": ints(seq, pa.int64()),
                   "payload": pa.array([t for run in runs for t in run[4]], pa.string())}
        return pa.RecordBatch.from_arrays([columns[f.name] for f in sch], schema=sch)

    def _to_batch(self, table: str, rows: list) -> pa.RecordBatch:
        sch = self._schemas[table]
        arrays = [pa.array(column, type=field.type) for column, field in zip(zip(*rows), sch)]
        for field, arr in zip(sch, arrays):
            if arr.null_count and not field.nullable:
                raise ValueError(f"{table}.{field.name} is required but {arr.null_count} rows have none (a decoder bug)")
        return pa.RecordBatch.from_arrays(arrays, schema=sch)

    def cut(self) -> Flush:
        """Take everything buffered, as Arrow batches; the buffers start empty again."""
        out: dict[PartitionKey, list[pa.RecordBatch]] = {}
        for key, part in self._parts.items():
            batches = part.batches
            if part.rows:
                batches.append(self._to_batch(part.table, part.rows))
            if part.runs:
                batches.append(self._runs_to_batch(part.runs, part.run_frames))
            if batches:
                out[key] = batches
        flush = Flush(partitions=out, rows=self.rows)
        self._parts = {}
        self.rows = 0
        return flush


def sort_keys(table: str) -> list[tuple[str, str]]:
    return [(c, "ascending") for c in schema.load(table).sort_by]


def write_files(flush: Flush, root: Path, *, instance: str, flush_seq: int) -> list[tuple[Path, Path]]:
    """Write each partition of `flush` as one sorted Parquet file under a temporary name.

    Returns (temporary, final) path pairs; nothing is visible to readers until published.
    """
    pairs = []
    for part_no, ((table, venue, day), batches) in enumerate(sorted(flush.partitions.items())):
        final = layout.partition_dir(root, table, venue, day) / layout.file_name(instance, flush_seq, part_no)
        pairs.append((layout.write_tmp(pa.Table.from_batches(batches), final, sort_by=sort_keys(table)), final))
    return pairs
