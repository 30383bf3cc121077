"""Compaction: merge each partition's small files into one file sorted by the table's sort keys.

How it stays correct with readers and writers running:

1. The merged file is written by DuckDB (out-of-core sort) into a staging directory
   `<root>/_compact/<table>/venue=<v>/date=<d>/`, outside anything a reader globs.
2. Under an exclusive lock on `<root>/_compact.lock` (recorders take it shared while they publish
   files), files that appeared in the partition since step 1 are hard-linked into the staging
   directory, and the two directories are swapped in one atomic `renameat2(RENAME_EXCHANGE)`.
   A reader lists either the old files or the new ones: never both (no row twice), never
   neither (no row missed). A query that listed the old files and opens one after the swap gets
   "file not found" and is re-run (`Dataset.sql` does this itself); it never gets wrong rows.
3. The old directory, now at the staging path, is deleted. A kill -9 at any step leaves either
   the old partition or the new one in place, and a staging leftover that the next run deletes.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import fcntl
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

import attrs
import pyarrow as pa
import pyarrow.parquet as pq

from . import layout, schema
from .errors import DatasetError
from .fsutil import fsync_dir

log = logging.getLogger(__name__)
LOCK_NAME = "_compact.lock"
STAGING = "_compact"
ROW_GROUP_ROWS = 1_000_000
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@attrs.frozen(kw_only=True)
class Result:
    partition: str
    files_before: int
    files_after: int
    rows: int
    bytes_before: int
    bytes_after: int
    seconds: float


@contextlib.contextmanager
def writers_lock(root: Path, exclusive: bool) -> Iterator[None]:
    """Recorders hold it shared while publishing files; compaction exclusive while swapping."""
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.renameat2(_AT_FDCWD, str(a).encode(), _AT_FDCWD, str(b).encode(), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"atomic directory swap failed: {os.strerror(err)}", str(b))


def partitions(root: Path, table: str) -> list[Path]:
    return sorted(p for p in (root / table).glob("venue=*/date=*") if p.is_dir())


def clean_staging(root: Path) -> None:
    """Delete what an interrupted compaction left (old or half-built partitions, never live ones)."""
    shutil.rmtree(root / STAGING, ignore_errors=True)


def compact_partition(root: Path, table: str, live: Path, *, threads: int = 1, memory_limit: str = "512MB",
                      before_swap: Callable[[], None] | None = None) -> Result | None:
    import duckdb

    inputs = sorted(live.glob("*.parquet"))
    if len(inputs) < 2:
        return None
    started = time.monotonic()
    rel = live.relative_to(root)
    stage = root / STAGING / rel
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    name = f"compacted-{int(time.time())}-{secrets.token_hex(3)}.parquet"
    order = ", ".join(schema.load(table).sort_by)
    files = ", ".join("'" + str(f).replace("'", "''") + "'" for f in inputs)
    con = duckdb.connect(":memory:", config={"threads": threads, "memory_limit": memory_limit})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET temp_directory = '{stage}/.spill'")
        # DuckDB sorts (spilling to disk past memory_limit); pyarrow writes, with the same settings
        # and schema as every other file of the dataset.
        file_schema = schema.load(table).file_schema
        cols = ", ".join(file_schema.names)
        relation = con.sql(f"SELECT {cols} FROM read_parquet([{files}], hive_partitioning = false, "
                           f"union_by_name = true) ORDER BY {order}")
        reader = (relation.to_arrow_reader(ROW_GROUP_ROWS) if hasattr(relation, "to_arrow_reader")
                  else relation.record_batch(ROW_GROUP_ROWS))  # duckdb < 2
        rows = 0
        with pq.ParquetWriter(stage / name, file_schema, **layout.writer_options(file_schema)) as writer:
            for batch in reader:
                writer.write_table(pa.Table.from_batches([batch]).cast(file_schema), row_group_size=ROW_GROUP_ROWS)
                rows += batch.num_rows
    finally:
        con.close()
    shutil.rmtree(stage / ".spill", ignore_errors=True)
    with open(stage / name, "rb+") as f:
        os.fsync(f.fileno())
    if before_swap is not None:  # test seam: lets a test publish a file "meanwhile"
        before_swap()
    with writers_lock(root, exclusive=True):
        for extra in sorted(set(live.glob("*.parquet")) - set(inputs)):
            os.link(extra, stage / extra.name)  # published by a recorder since we listed the inputs
        fsync_dir(stage)
        exchange(stage, live)
        fsync_dir(live.parent)
        fsync_dir(stage.parent)
    bytes_before = sum(f.stat().st_size for f in stage.glob("*.parquet"))  # the old files, now at stage
    shutil.rmtree(stage)
    return Result(partition=str(rel), files_before=len(inputs), files_after=len(list(live.glob("*.parquet"))), rows=rows,
                  bytes_before=bytes_before, bytes_after=sum(f.stat().st_size for f in live.glob("*.parquet")),
                  seconds=time.monotonic() - started)


def compact(root: Path, *, tables: tuple[str, ...] = schema.TABLES, before: dt.date | None = None,
            progress: Callable[[Result], None] | None = None) -> list[Result]:
    """Compact every partition (of `tables`, dated before `before` if given) with two or more files."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {str(root)!r} does not exist")
    clean_staging(root)
    results = []
    for table in tables:
        for live in partitions(root, table):
            day = dt.date.fromisoformat(live.name.split("=", 1)[1])
            if before is not None and day >= before:
                continue
            result = compact_partition(root, table, live)
            if result is not None:
                results.append(result)
                if progress:
                    progress(result)
    clean_staging(root)
    return results
