"""Columnar buffers per table and partition, cut into flush jobs written as Parquet.

Rows arrive three ways: as records or row tuples (`add`, `add_row`), as runs of raw frames
(`add_frames`), and, on the hottest decode paths, column by column (`columns()`: a decoder
appends each value to its column, numbers into typed arrays that Arrow takes without converting
them one by one). Every `batch_rows` rows a partition's rows become an Arrow RecordBatch, so a
million buffered rows cost tens of MB, not hundreds. `cut()` hands all buffered batches over as
one `Flush` (called on the event loop, cheap); `write_files()` sorts, encodes and writes them
(called in a worker thread).
"""

from __future__ import annotations

import operator
import struct
import sys
from array import array
from itertools import accumulate
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import layout, schema, timeutil
from .records import Record

PartitionKey = tuple[str, str, int]  # (table, venue, day)


@attrs.define
class _Partition:
    table: str
    rows: list = attrs.field(factory=list)  # tuples in file-column order
    batches: list[pa.RecordBatch] = attrs.field(factory=list)
    runs: list = attrs.field(factory=list)  # raw only: (feed, ts_recv, conn_id, first_seq, data, lengths, count)
    run_frames: int = 0
    run_bytes: int = 0


@attrs.frozen(kw_only=True)
class Flush:
    """Everything buffered at one cut, ready to be written."""

    partitions: dict[PartitionKey, list[pa.RecordBatch]]
    rows: int
    nbytes: int = 0  # the batches' Arrow buffers (what the flush holds until it is committed)


_ROW_NUMBERS: list[pa.Array] = [pa.array([], pa.int64())]


def _row_numbers(n: int) -> pa.Array:
    """0, 1, ... n - 1 as int64 (a slice of one array, grown when needed)."""
    if len(_ROW_NUMBERS[0]) < n:
        _ROW_NUMBERS[0] = pa.array(range(max(n, 2 * len(_ROW_NUMBERS[0]))), pa.int64())
    return _ROW_NUMBERS[0].slice(0, n)


def _row_getter(table: str):
    """record -> tuple of its file columns, in one C call."""
    return operator.attrgetter(*schema.load(table).file_columns)


# What a buffered row not yet in an Arrow batch is counted as (Buffers.held_bytes): a tuple of
# Python values, or a row of column buffers; at most batch_rows such rows per partition.
ROW_BYTES_ESTIMATE = 256

# A raw batch is cut at this many payload bytes, if not at batch_rows frames first: Arrow string
# offsets are 32-bit, and a few huge frames should not hold much memory.
_RAW_BATCH_BYTES = 64 * 1024 * 1024

_TYPECODES = {"int64": "q", "timestamp": "q", "int32": "i", "float64": "d"}


class _Levels:
    """A column of book levels (list<struct<price, size>>), flat: no Python object per level. A
    decoder adds the levels of a run's rows at once (`extend`): each row's number of levels, and
    their prices and sizes as one float64 array (price, size, price, size...). Arrow builds the
    column from those arrays when the batch is sealed."""

    __slots__ = ("counts", "values", "rows", "nbytes")

    def __init__(self) -> None:
        self.counts: list[np.ndarray] = []  # int32, one per row
        self.values: list[np.ndarray] = []  # float64, two per level
        self.rows = self.nbytes = 0

    def __len__(self) -> int:
        return self.rows

    def extend(self, counts: np.ndarray, values: np.ndarray) -> None:
        """Levels of len(counts) more rows: row i has counts[i] levels, their (price, size) pairs
        one after another in `values`. The arrays are kept as they are: the caller makes new ones."""
        if len(values) != 2 * int(counts.sum()):
            raise ValueError(f"{len(values)} level values for {int(counts.sum())} levels (a decoder bug)")
        self.counts.append(counts)
        self.values.append(values)
        self.rows += len(counts)
        self.nbytes += counts.nbytes + values.nbytes

    def copy(self) -> "_Levels":
        out = _Levels()
        out.counts, out.values, out.rows, out.nbytes = self.counts[:], self.values[:], self.rows, self.nbytes
        return out

    def _flat(self) -> tuple[np.ndarray, np.ndarray]:
        counts = np.concatenate(self.counts) if self.counts else np.zeros(0, np.int32)
        values = np.concatenate(self.values) if self.values else np.zeros(0, np.float64)
        return counts, values

    def __getitem__(self, i: int) -> tuple[tuple[float, float], ...]:
        """Row i's levels as (price, size) pairs (for a reader of single rows: slow)."""
        counts, values = self._flat()
        start = 2 * int(counts[:i].sum())
        pairs = values[start : start + 2 * int(counts[i])].tolist()
        return tuple(zip(pairs[0::2], pairs[1::2]))

    def to_array(self, typ: pa.ListType) -> pa.Array:
        counts, values = self._flat()
        offsets = np.zeros(len(counts) + 1, np.int32)
        np.cumsum(counts, out=offsets[1:])
        fields = [typ.value_type.field(i) for i in range(typ.value_type.num_fields)]
        struct = pa.StructArray.from_arrays([pa.array(values[0::2]), pa.array(values[1::2])], fields=fields)
        return pa.ListArray.from_arrays(pa.array(offsets), struct, type=typ)


class Columns:
    """Rows of one table that share their constant columns (feed, connection, origin...), kept
    column by column: each varying column is a typed array (numbers, no nulls), a list (strings,
    and the numeric columns named in `nullable`, which may hold None) or flat level buffers (book
    levels, `_Levels`). A decoder appends one value per varying column per row, through
    `appenders()`, except to level columns, which take a run's rows at once (`levels()`). A timestamp column named in `seconds` takes float seconds and is converted at
    the end exactly as timeutil.seconds_to_us converts one value (x 1e6, rounded half to even), in
    one Arrow call. `day_column` (a timestamp column) decides each row's date partition, and
    `ts_recv` where it is null (as records.py's rows do)."""

    __slots__ = ("table", "venue", "consts", "names", "cols", "day_column", "seconds", "_levels")

    def __init__(self, table: str, venue: str, consts: dict[str, Any], day_column: str,
                 seconds: tuple[str, ...] = (), nullable: tuple[str, ...] = ()) -> None:
        sch = schema.load(table)
        self.table, self.venue, self.consts, self.day_column, self.seconds = table, venue, consts, day_column, seconds
        self.names = tuple(n for n in sch.file_columns if n not in consts)
        types = {c.name: c.type_name for c in sch.columns}
        if types.get(day_column) != "timestamp" or day_column in consts:
            raise ValueError(f"{table}: day_column {day_column!r} must be a varying timestamp column")
        if any(types.get(n) != "timestamp" or n in consts for n in seconds):
            raise ValueError(f"{table}: {seconds} must all be varying timestamp columns")
        if any(n not in self.names or n in seconds for n in nullable):
            raise ValueError(f"{table}: {nullable} must all be varying columns, not in seconds")
        self.cols = {n: self._buffer(types[n], n in seconds, n in nullable) for n in self.names}
        self._levels = tuple(c for c in self.cols.values() if isinstance(c, _Levels))

    @staticmethod
    def _buffer(type_name: str, seconds: bool, nullable: bool):
        if seconds:
            return array("d")
        if type_name == "levels":
            return _Levels()
        return array(_TYPECODES[type_name]) if type_name in _TYPECODES and not nullable else []

    def __len__(self) -> int:
        return len(self.cols[self.day_column])

    def copy(self) -> "Columns":
        """The rows so far, in columns of their own (slices copy: arrays by memcpy, lists by pointer)."""
        out = Columns.__new__(Columns)
        out.table, out.venue, out.consts, out.names = self.table, self.venue, self.consts, self.names
        out.day_column, out.seconds = self.day_column, self.seconds
        n = len(self)
        out.cols = {name: col.copy() if isinstance(col, _Levels) else col[:n] for name, col in self.cols.items()}
        out._levels = tuple(c for c in out.cols.values() if isinstance(c, _Levels))
        return out

    def appenders(self, *names: str) -> tuple:
        """The `append` methods of the named columns (every varying column but the level columns
        must get one value per row)."""
        return tuple(col.append for col in self._varying(names))

    def extenders(self, *names: str) -> tuple:
        """The `extend` methods of the same columns, for a decoder that adds a run's rows a column
        at a time."""
        return tuple(col.extend for col in self._varying(names))

    def _varying(self, names: tuple[str, ...]) -> list:
        varying = [n for n in self.names if not isinstance(self.cols[n], _Levels)]
        if sorted(names) != sorted(varying):
            raise ValueError(f"{self.table}: the varying columns are {tuple(varying)}, got {names}")
        return [self.cols[n] for n in names]

    def levels(self, name: str) -> _Levels:
        """A level column's buffer: its `extend` adds the levels of as many rows as the other
        columns got values for (before the buffer is read or sealed: at the end of the run)."""
        col = self.cols[name]
        if not isinstance(col, _Levels):
            raise ValueError(f"{self.table}.{name} is not a level column")
        return col

    @property
    def level_bytes(self) -> int:
        """Bytes held by the level columns' arrays (Buffers.held_bytes counts them)."""
        return sum(col.nbytes for col in self._levels)

    def to_batches(self, sch: pa.Schema) -> list[tuple[int, pa.RecordBatch]]:
        """(day, batch) for every date the rows fall on (nearly always one)."""
        n = len(self)
        arrays = {}
        for field in sch:
            name = field.name
            if name in self.consts:
                value = self.consts[name]
                arr = pa.nulls(n, field.type)
                arrays[name] = arr if value is None else arr.fill_null(pa.scalar(value, field.type))
                continue
            col = self.cols[name]
            if len(col) != n:
                raise ValueError(f"{self.table}.{name} has {len(col)} values for {n} rows (a decoder bug)")
            if name in self.seconds:
                secs = pa.Array.from_buffers(pa.float64(), n, [None, pa.py_buffer(col)])
                us = pc.round(pc.multiply(secs, 1e6), round_mode="half_to_even").cast(pa.int64())
                arrays[name] = us.view(field.type)
            elif isinstance(col, _Levels):
                arrays[name] = col.to_array(field.type)
            elif isinstance(col, array):
                arrays[name] = pa.Array.from_buffers(field.type, n, [None, pa.py_buffer(col)])
            else:
                arr = arrays[name] = pa.array(col, type=field.type)
                if arr.null_count and not field.nullable:
                    raise ValueError(f"{self.table}.{name} is required but {arr.null_count} rows have none (a decoder bug)")
        batch = pa.RecordBatch.from_arrays([arrays[f.name] for f in sch], schema=sch)
        stamps = arrays[self.day_column]
        if stamps.null_count:
            stamps = pc.coalesce(stamps, arrays["ts_recv"])
        stamps = stamps.view(pa.int64())
        bounds = pc.min_max(stamps)
        first, last = bounds["min"].as_py() // timeutil.US_PER_DAY, bounds["max"].as_py() // timeutil.US_PER_DAY
        if first == last:
            return [(first, batch)]
        days = [t // timeutil.US_PER_DAY for t in stamps.to_pylist()]
        return [(day, batch.filter(pa.array([d == day for d in days]))) for day in sorted(set(days))]


class Buffers:
    """Per-table, per-partition row buffers."""

    def __init__(self, *, batch_rows: int = 8192) -> None:
        self._batch_rows = batch_rows
        self._parts: dict[PartitionKey, _Partition] = {}
        self._columns: dict[tuple, Columns] = {}
        self._with_levels: dict[tuple, Columns] = {}  # those of _columns that have level columns
        self._getters = {t: _row_getter(t) for t in schema.TABLES}
        self._schemas = {t: schema.load(t).file_schema for t in schema.TABLES}
        self._retired: dict[str, list] = {}  # watched table -> containers that left the buffers (see watch)
        self.rows = 0
        self._sealed_rows = self._sealed_bytes = 0  # rows (raw frames included) in batches, and their bytes
        self._run_frames = self._run_bytes = 0  # raw frames in runs not yet batched, and their payload bytes

    @property
    def held_bytes(self) -> int:
        """What the buffered rows hold: Arrow batches exactly, raw runs by their payload bytes,
        book levels in column buffers by their arrays, other rows by ROW_BYTES_ESTIMATE each."""
        loose = self.rows - self._sealed_rows - self._run_frames
        levels = sum(cols.level_bytes for cols in self._with_levels.values())
        return self._sealed_bytes + self._run_bytes + max(loose, 0) * ROW_BYTES_ESTIMATE + levels

    def _sealed(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        self._sealed_rows += batch.num_rows
        self._sealed_bytes += batch.nbytes
        return batch

    # --- for readers on the event loop (the live page): never per row ---------------------------

    def watch(self, table: str) -> list:
        """From now on, keep each container of `table`'s rows (a row list or a Columns) as it leaves
        the buffers (made a batch, or cut), as (venue, container), in the returned list: a reader
        that looks every so often sees every row appended, even to a container that came and went
        between two looks. The reader empties the list; nothing is kept for tables not watched."""
        return self._retired.setdefault(table, [])

    def _retire(self, table: str, venue: str, container) -> None:
        retired = self._retired.get(table)
        if retired is not None and len(container):
            retired.append((venue, container))

    def containers(self, table: str) -> list[tuple[str, Any]]:
        """(venue, container) for each row list and Columns that rows of `table` are appended to now."""
        out: list[tuple[str, Any]] = [(k[1], part.rows) for k, part in self._parts.items() if k[0] == table]
        out += [(cols.venue, cols) for cols in self._columns.values() if cols.table == table]
        return out

    def peek(self, table: str) -> "Peek":
        """A copy of `table`'s buffered rows, cheap enough for the event loop (lists and arrays
        sliced, batches shared); `Peek.to_table()` builds the Arrow table, in a worker thread."""
        batches = [(k[1], b) for k, part in self._parts.items() if k[0] == table for b in part.batches]
        rows = [(k[1], part.rows[:]) for k, part in self._parts.items() if k[0] == table and part.rows]
        cols = [c.copy() for c in self._columns.values() if c.table == table and len(c)]
        return Peek(table=table, batches=batches, rows=rows, columns=cols, schema=self._schemas[table])

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
            part.batches.append(self._sealed(self._to_batch(table, rows)))
            part.rows = []
            self._retire(table, venue, rows)

    def add_frames(self, venue: str, day: int, feed: str, ts_recv: int, conn_id: str, first_seq: int,
                   texts: list[str], data: memoryview | bytes | None = None,
                   lengths: memoryview | bytes | None = None) -> None:
        """Raw rows for a run of frames, kept as the run (not a tuple per frame) and turned into
        columns by Arrow: feed, conn_id and ts_recv are one value per run, seq a range, the
        payloads one buffer. `data` and `lengths`, when given, are the frames' UTF-8 bytes one
        after another and their byte lengths as little-endian u32 (the journal entry's tail):
        then nothing is encoded or counted here."""
        k = len(texts)
        if data is None:
            blobs = [t.encode() for t in texts]
            data, lengths = b"".join(blobs), struct.pack(f"<{k}I", *map(len, blobs))
        key = ("raw", venue, day)
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = _Partition("raw")
        part.runs.append((feed, ts_recv, conn_id, first_seq, data, lengths, k))
        part.run_frames += k
        part.run_bytes += len(data)
        self._run_frames += k
        self._run_bytes += len(data) + 4 * k
        self.rows += k
        if part.run_frames >= self._batch_rows or part.run_bytes >= _RAW_BATCH_BYTES:
            self._batch_runs(part)

    def _batch_runs(self, part: _Partition) -> None:
        part.batches.append(self._sealed(runs_to_batch(part.runs, part.run_frames)))
        self._run_frames -= part.run_frames
        self._run_bytes -= part.run_bytes + 4 * part.run_frames
        part.runs, part.run_frames, part.run_bytes = [], 0, 0

    def columns(self, table: str, venue: str, consts: tuple[tuple[str, Any], ...], day_column: str,
                seconds: tuple[str, ...] = (), nullable: tuple[str, ...] = ()) -> Columns:
        """The column buffer for rows of `table` with these constant columns ((name, value) pairs),
        for a decoder to append to. Call it once per run of frames: a buffer that has reached
        `batch_rows` rows is turned into batches here and a fresh one handed out. The caller adds
        the number of rows it appended to `rows`."""
        key = (table, venue, consts)
        cols = self._columns.get(key)
        if cols is None:
            cols = self._columns[key] = Columns(table, venue, dict(consts), day_column, seconds, nullable)
        elif len(cols) >= self._batch_rows:
            self._seal(key, cols)
            cols = self._columns[key] = Columns(table, venue, cols.consts, day_column, seconds, nullable)
        else:
            return cols
        if cols._levels:
            self._with_levels[key] = cols
        return cols

    def _seal(self, key: tuple, cols: Columns) -> None:
        del self._columns[key]
        self._with_levels.pop(key, None)
        if not len(cols):
            return
        self._retire(cols.table, cols.venue, cols)
        table, venue = cols.table, cols.venue
        for day, batch in cols.to_batches(self._schemas[table]):
            pkey = (table, venue, day)
            part = self._parts.get(pkey)
            if part is None:
                part = self._parts[pkey] = _Partition(table)
            part.batches.append(self._sealed(batch))

    def _to_batch(self, table: str, rows: list) -> pa.RecordBatch:
        sch = self._schemas[table]
        arrays = [pa.array(column, type=field.type) for column, field in zip(zip(*rows), sch)]
        for field, arr in zip(sch, arrays):
            if arr.null_count and not field.nullable:
                raise ValueError(f"{table}.{field.name} is required but {arr.null_count} rows have none (a decoder bug)")
        return pa.RecordBatch.from_arrays(arrays, schema=sch)

    def cut(self) -> Flush:
        """Take everything buffered, as Arrow batches; the buffers start empty again."""
        for key, cols in list(self._columns.items()):
            self._seal(key, cols)
        out: dict[PartitionKey, list[pa.RecordBatch]] = {}
        for key, part in self._parts.items():
            batches = part.batches
            if part.rows:
                batches.append(self._sealed(self._to_batch(part.table, part.rows)))
                self._retire(part.table, key[1], part.rows)
            if part.runs:
                self._batch_runs(part)
            if batches:
                out[key] = batches
        flush = Flush(partitions=out, rows=self.rows, nbytes=self._sealed_bytes)
        self._parts = {}
        self.rows = 0
        self._sealed_rows = self._sealed_bytes = self._run_frames = self._run_bytes = 0
        return flush


@attrs.frozen(kw_only=True)
class Peek:
    """Buffered rows of one table, copied (Buffers.peek)."""

    table: str
    batches: list[tuple[str, pa.RecordBatch]]  # (venue, batch)
    rows: list[tuple[str, list]]  # (venue, row tuples)
    columns: list[Columns]
    schema: pa.Schema

    def to_table(self, extra: list[tuple[str, pa.RecordBatch]] = ()) -> pa.Table:
        """The rows as one Arrow table with a `venue` column; `extra`: more (venue, batch) pairs."""
        sch = self.schema
        pairs = list(self.batches) + list(extra)
        for venue, rows in self.rows:
            arrays = [pa.array(column, type=field.type) for column, field in zip(zip(*rows), sch)]
            pairs.append((venue, pa.RecordBatch.from_arrays(arrays, schema=sch)))
        for cols in self.columns:
            pairs += [(cols.venue, batch) for _day, batch in cols.to_batches(sch)]
        out = sch.insert(0, pa.field("venue", pa.string(), nullable=False))
        tables = [pa.Table.from_batches([b]).add_column(0, out.field(0), pa.array([v] * b.num_rows, pa.string()))
                  for v, b in pairs]
        return pa.concat_tables(tables).cast(out) if tables else out.empty_table()


def runs_to_batch(runs: list, n: int) -> pa.RecordBatch:
    """The raw rows of runs of frames, built by Arrow from one value per run (run-end
    encoded, then decoded) and the runs' concatenated payload bytes and lengths."""
    sch = schema.load("raw").file_schema
    feeds, ts, conns, seq_base = [], [], [], []
    ends = accumulate(run[6] for run in runs)
    start = 0
    for (feed, ts_recv, conn_id, first, _data, _lengths, k) in runs:
        feeds.append(feed)
        ts.append(ts_recv)
        conns.append(conn_id)
        seq_base.append(first - start)  # seq = row number + this, within the run
        start += k
    run_ends = pa.array(ends, pa.int32())

    def expand(values: list, typ: pa.DataType) -> pa.Array:
        return pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(run_ends, pa.array(values, typ)))

    packed = b"".join(run[5] for run in runs)  # u32 little-endian, as the journal stores them
    if sys.byteorder != "little":
        swapped = array("i")
        swapped.frombytes(packed)
        swapped.byteswap()
        packed = swapped.tobytes()
    lengths = pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(packed)])
    ends_of = pc.cumulative_sum_checked(lengths)
    offsets = pa.py_buffer(b"\0\0\0\0" + ends_of.buffers()[1].to_pybytes()[ends_of.offset * 4 : (ends_of.offset + n) * 4])
    columns = {"feed": expand(feeds, pa.string()), "ts_event": pa.nulls(n, sch.field("ts_event").type),
               "ts_recv": expand(ts, sch.field("ts_recv").type), "conn_id": expand(conns, pa.string()),
               "seq": pc.add(expand(seq_base, pa.int64()), _row_numbers(n)),
               "payload": pa.Array.from_buffers(pa.string(), n, [None, offsets,
                                                                 pa.py_buffer(b"".join(run[4] for run in runs))])}
    return pa.RecordBatch.from_arrays([columns[f.name] for f in sch], schema=sch)


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
