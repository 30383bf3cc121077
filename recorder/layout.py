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
import pyarrow.parquet as pq

from . import timeutil
from .fsutil import TMP_SUFFIX

COMPRESSION = "zstd"


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


def write_tmp(table: pa.Table, final: Path) -> Path:
    """Write `table` as zstd Parquet under the temporary name for `final`, fsynced. Returns that name."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(final)
    with open(tmp, "wb") as f:
        pq.write_table(table, f, compression=COMPRESSION, row_group_size=256 * 1024)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def publish(tmp: Path, final: Path) -> None:
    """Rename a written temporary file into place (idempotent: done already is fine)."""
    if tmp.exists():
        os.replace(tmp, final)
    elif not final.exists():
        raise FileNotFoundError(f"neither {tmp} nor {final} exists")
