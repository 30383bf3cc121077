"""The Parquet dataset layout: the one module that knows paths and file names.

    <root>/<table>/venue=<venue>/date=<YYYY-MM-DD>/<instance>-<flush:010d>-<part:04d>.parquet

A file is written as `.<name>.tmp` in its partition directory (never matched by `*.parquet`),
fsynced, and renamed into place; the directory is then fsynced. Names carry the writer
instance id, so recorders with separate journals never collide in one root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import timeutil
from .schema import LEVEL
from .fsutil import TMP_SUFFIX

COMPRESSION = "zstd"
LEVELS = pa.list_(LEVEL)  # schema.py's `levels` type: book levels


def partition_dir(root: Path, table: str, venue: str, day: int) -> Path:
    return root / table / f"venue={venue}" / f"date={timeutil.day_name(day)}"


def file_name(instance: str, flush_seq: int, part: int) -> str:
    return f"{instance}-{flush_seq:010d}-{part:04d}.parquet"


def tmp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{TMP_SUFFIX}")


def table_glob(root: Path, table: str) -> str:
    """The glob DuckDB reads for one table (Hive keys in the directory names)."""
    return str(root / table / "*" / "*" / "*.parquet")


def data_files(root: Path, table: str | None = None) -> list[Path]:
    tables = [table] if table else [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    files: list[Path] = []
    for t in tables:
        files.extend(sorted((root / t).glob("*/*/*.parquet")))
    return files


def stray_tmp_files(root: Path, instance: str) -> list[Path]:
    """Temporary files this writer instance left behind (from a flush that never committed)."""
    return sorted(root.glob(f"*/*/*/.{instance}-*{TMP_SUFFIX}"))


WRITE_CHUNK_ROWS = 64 * 1024
NOT_DICTIONARY = ("payload", "error")  # free text: every value different


def writer_options(file_schema: pa.Schema) -> dict:
    """Parquet settings for every file of the dataset: zstd, and dictionary encoding only for
    string columns that repeat (ids, names, enums). pyarrow's default tries a dictionary for every
    column; on timestamps, sequence numbers, prices and frame payloads it overflows, falls back, and
    leaves files larger and slower to write. Measured on 100,000 small frames (flush files):
    raw 7.9 -> 3.8 bytes/row and 45 -> 15 ms to write; chance 13.0 -> 4.6 bytes/row.

    Book levels' prices and sizes are written BYTE_STREAM_SPLIT (each double's bytes by position:
    zstd finds the repeats), and neither they nor free text carry min/max statistics, which no
    query prunes on. Measured on a 47,802-row flush of the books benchmark, 11 interleaved runs:
    1.43 -> 1.24 us a row to write, 486 -> 192 KB."""
    names = [f.name for f in file_schema]
    levels = [f.name for f in file_schema if f.type == LEVELS]
    return {"compression": COMPRESSION,
            "use_dictionary": [f.name for f in file_schema
                               if pa.types.is_string(f.type) and f.name not in NOT_DICTIONARY],
            "write_statistics": [n for n in names if n not in levels and n not in NOT_DICTIONARY],
            "column_encoding": {f"{n}.list.element.{leaf}": "BYTE_STREAM_SPLIT" for n in levels
                                for leaf in ("price", "size")}}


def write_tmp(table: pa.Table, final: Path, *, sort_by: list[tuple[str, str]] | None = None) -> Path:
    """Write `table` (sorted by `sort_by` if given) as zstd Parquet under the temporary name for
    `final`, fsynced. Returns that name. Sorted rows are taken and written 64k at a time, one row
    group each, so a flush holds one chunk's copy and one row group's pages, not a sorted copy
    of everything plus the whole file's pages."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(final)
    with open(tmp, "wb") as f:
        write_sorted(table, f, sort_by=sort_by)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_sorted(table: pa.Table, sink, *, sort_by: list[tuple[str, str]] | None = None) -> None:
    """`table` as zstd Parquet into an open binary file or stream (see write_tmp)."""
    order = pc.sort_indices(table, sort_keys=sort_by) if sort_by else None
    if order is not None and _identity(order):
        order = None  # already in order (raw frames of one connection): no sorted copy to take
    with pq.ParquetWriter(sink, table.schema, **writer_options(table.schema)) as writer:
        for start in range(0, max(table.num_rows, 1), WRITE_CHUNK_ROWS):
            if order is None:
                chunk = table.slice(start, WRITE_CHUNK_ROWS)
            else:
                chunk = table.take(order.slice(start, WRITE_CHUNK_ROWS))
            writer.write_table(chunk, row_group_size=WRITE_CHUNK_ROWS)


def _identity(order: pa.Array) -> bool:
    """True if the sort indices are 0, 1, 2, ... (every step +1)."""
    n = len(order)
    if n < 2:
        return True
    steps = pc.min_max(pc.subtract(order.slice(1), order.slice(0, n - 1)))
    return steps["min"].as_py() == steps["max"].as_py() == 1


def publish(tmp: Path, final: Path) -> None:
    """Rename a written temporary file into place (idempotent: done already is fine)."""
    if tmp.exists():
        os.replace(tmp, final)
    elif not final.exists():
        raise FileNotFoundError(f"neither {tmp} nor {final} exists")
