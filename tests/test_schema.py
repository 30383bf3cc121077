"""Records and schemas/ agree: names, order, types, nullability."""

from __future__ import annotations

import attrs
import pytest

from recorder import records, schema
from recorder.writer import Buffers

COMMON = dict(venue="v", feed="f", ts_event=None, ts_recv=1_700_000_000_000_000, conn_id="c", seq=1)
SAMPLES = {
    "chance": records.Chance(market="m", outcome="Yes", probability=0.5, origin="v", **COMMON),
    "trades": records.Trade(market="m", price=0.4, size=3.0, **COMMON),
    "book": records.Book(market="m", outcome="Yes", bids=((0.5, 10.0),), asks=(), best_bid=0.5, depth=1, **COMMON),
    "prices": records.Price(symbol="BTC", price=1.5, **COMMON),
    "account": records.Account(stream="orders", kind="ORDER_UPDATE", payload="{}", **COMMON),
    "raw": records.Raw(payload="{}", **COMMON),
    "sessions": records.Session(url="ws://x", connected=1, subscribed=None, first_frame=None, last_frame=None, closed=2,
                                close_reason="stopped", frames=0, **{k: v for k, v in COMMON.items() if k != "seq"}),
    "rejects": records.Reject(error="bad", payload="x", **COMMON),
}


@pytest.mark.parametrize("table", schema.TABLES)
def test_record_fields_are_the_schema_columns(table):
    """Each record class has exactly its table's columns, in the schema file's order."""
    cls = records.RECORD_TYPES[table]
    assert [f.name for f in attrs.fields(cls)] == list(schema.load(table).names)
    assert cls.table == table


@pytest.mark.parametrize("table", schema.TABLES)
def test_records_convert_to_the_file_schema(table):
    """A record goes through the writer's Arrow conversion into exactly the file schema."""
    buffers = Buffers()
    buffers.add(SAMPLES[table])
    flush = buffers.cut()
    (batches,) = flush.partitions.values()
    assert batches[0].schema == schema.load(table).file_schema
    assert batches[0].num_rows == 1


def test_non_nullable_columns_reject_none():
    """A required column given None fails loudly at conversion instead of writing a null."""
    buffers = Buffers()
    buffers.add(attrs.evolve(SAMPLES["chance"], market=None))
    with pytest.raises(ValueError, match="chance.market is required"):
        buffers.cut()


def test_every_common_column_is_documented():
    """Every table has the common columns DESIGN.md promises, and every column has a doc string."""
    for table, sch in schema.all_schemas().items():
        names = set(sch.names)
        assert {"venue", "feed", "ts_event", "ts_recv", "conn_id"} <= names, table
        assert sch.partition_by == ("venue", "date")
        assert all(c.doc for c in sch.columns), table
        assert set(sch.sort_by) <= names, table


@pytest.mark.parametrize("table", schema.TABLES)
def test_a_row_is_the_record_as_the_writer_stores_it(table):
    """`Cls.row(**fields)` (the hot decode paths) gives exactly the partition and file columns the
    writer takes from the record itself, and turns back into the same record."""
    record = SAMPLES[table]
    cls = records.RECORD_TYPES[table]
    fields = attrs.asdict(record, recurse=False)
    row = cls.row(**fields)
    columns = schema.load(table).file_columns
    assert row == (table, record.venue, record.ts_recv // 86_400_000_000, tuple(fields[c] for c in columns))
    assert records.from_row(row) == record
    with_event = cls.row(**{**fields, "ts_event": 5 * 86_400_000_000 + 1})
    assert with_event[2] == 5  # the partition day follows ts_event when there is one
    with pytest.raises(TypeError):
        cls.row(*fields.values())  # keyword-only, like the class


def test_rows_and_records_land_in_the_same_files():
    """A flush of rows and a flush of the same records are the same Arrow data."""
    by_row, by_record = Buffers(), Buffers()
    for table, record in SAMPLES.items():
        by_record.add(record)
        by_row.add_row(*records.RECORD_TYPES[table].row(**attrs.asdict(record, recurse=False)))
    a, b = by_row.cut(), by_record.cut()
    assert a.partitions.keys() == b.partitions.keys()
    for key in a.partitions:
        assert [x.to_pylist() for x in a.partitions[key]] == [x.to_pylist() for x in b.partitions[key]]


def test_runs_of_frames_become_the_same_raw_rows_as_tuples():
    """Raw rows kept as runs (add_frames, the live path) convert to exactly the rows the per-tuple
    path gives: several feeds and connections, runs of one frame, non-ASCII text, and runs that
    cross the batch size."""
    runs = [("f1", 1_700_000_000_000_001, "c1", 1, ["a", "b", "é"]), ("f2", 1_700_000_000_000_002, "c2", 1, ["x"]),
            ("f1", 1_700_000_000_000_003, "c1", 4, [str(i) for i in range(10)]), ("f1", 1_700_000_000_000_004, "c3", 1, [""])]
    by_run, by_tuple = Buffers(batch_rows=4), Buffers(batch_rows=4)
    for feed, ts, conn, first, texts in runs:
        by_run.add_frames("v", 3, feed, ts, conn, first, texts)
        for i, t in enumerate(texts):
            by_tuple.add_row("raw", "v", 3, (feed, None, ts, conn, first + i, t))
    assert by_run.rows == by_tuple.rows == 15
    a, b = by_run.cut(), by_tuple.cut()
    rows = lambda flush: sorted(r for batch in flush.partitions[("raw", "v", 3)] for r in  # noqa: E731
                                map(lambda d: tuple(d.values()), batch.to_pylist()))
    assert rows(a) == rows(b) and len(rows(a)) == 15
    assert all(batch.schema == schema.load("raw").file_schema for batch in a.partitions[("raw", "v", 3)])


def test_files_encode_levels_by_byte_stream_split_and_keep_statistics_where_queries_prune(tmp_path):
    """layout.writer_options on every table: book levels' doubles BYTE_STREAM_SPLIT, no min/max on
    levels or free text, min/max on every other column; DuckDB reads the levels back exactly."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recorder import layout

    for name, s in schema.all_schemas().items():
        fs = s.file_schema
        rows = {f.name: [None if f.nullable else _value(f.type)] for f in fs}
        if name == "book":
            rows["bids"] = [[{"price": 0.51, "size": 1200.0}, {"price": 0.5, "size": 3.25}]]
        path = tmp_path / f"{name}.parquet"
        with open(path, "wb") as f:
            layout.write_sorted(pa.Table.from_pydict(rows, schema=fs), f)
        meta = pq.ParquetFile(path).metadata.row_group(0)
        for i in range(meta.num_columns):
            col = meta.column(i)
            top = col.path_in_schema.split(".")[0]
            levels = str(fs.field(top).type).startswith("list<")
            assert ("BYTE_STREAM_SPLIT" in col.encodings) == levels, (name, col.path_in_schema, col.encodings)
            assert col.is_stats_set == (not levels and top not in ("payload", "error")), (name, col.path_in_schema)
        if name == "book":
            got = duckdb.sql(f"SELECT bids FROM '{path}'").fetchall()
            assert got == [([{"price": 0.51, "size": 1200.0}, {"price": 0.5, "size": 3.25}],)]


def _value(t):
    import pyarrow as pa

    if pa.types.is_string(t):
        return "x"
    if pa.types.is_timestamp(t):
        return 1_700_000_000_000_000
    if pa.types.is_boolean(t):
        return True
    if pa.types.is_floating(t):
        return 0.5
    if pa.types.is_list(t):
        return []
    return 1
