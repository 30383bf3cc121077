"""Query a recorded dataset with DuckDB: one view per table, named queries, any SQL.

    ds = Dataset.open("data")          # or recorder.open_dataset("data")
    ds.query("chance_history", market="evt1", interval="5m")   # -> pyarrow.Table
    ds.sql("SELECT venue, count(*) FROM trades GROUP BY ALL")  # -> pyarrow.Table

Views read `<root>/<table>/venue=*/date=*/*.parquet` with Hive partitioning; a table with no
files yet is an empty view with the right columns, so queries never fail on a quiet table.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa

from . import layout, queries, schema
from .errors import DatasetError, QueryError

if TYPE_CHECKING:  # imported where a connection is made: the daemon imports this module (its pages) but
    import duckdb  # records without DuckDB, and DuckDB's library is ~35 MB of its resident memory

# What DuckDB says when a file it listed was swapped away by a compaction before it opened it.
_SWAPPED = ("No such file", "No files found", "Cannot open file")
_DUCK_TYPES = {"string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT", "float64": "DOUBLE", "bool": "BOOLEAN",
               "timestamp": "TIMESTAMPTZ", "levels": "STRUCT(price DOUBLE, size DOUBLE)[]"}


def empty_view_sql(table: str) -> str:
    """A view with the table's columns and no rows (a table nothing has been written to yet)."""
    sch = schema.load(table)
    cols = ", ".join(
        f"CAST(NULL AS {schema.PARTITION_TYPES.get(c.name) or _DUCK_TYPES[c.type_name]}) AS {c.name}"
        for c in sch.columns
    ) + ", CAST(NULL AS DATE) AS date"
    return f"CREATE OR REPLACE VIEW {table} AS SELECT {cols} WHERE false"


def view_sql(root: Path, table: str) -> str:
    """The CREATE VIEW statement for one table (usable from plain DuckDB too)."""
    if not layout.data_files(root, table):
        return empty_view_sql(table)
    glob = layout.table_glob(root, table).replace("'", "''")
    hive = ", ".join(f"'{k}': {v}" for k, v in schema.PARTITION_TYPES.items())
    return (f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
            f"hive_types = {{{hive}}}, union_by_name = true)")


class Dataset:
    """A DuckDB connection with a view per table over one dataset root."""

    def __init__(self, root: Path, con: duckdb.DuckDBPyConnection,
                 views: Callable[[duckdb.DuckDBPyConnection], None] | None = None) -> None:
        self.root = root
        self.con = con
        self._views = views  # makes the views (a lake's store gives its own; default: the Hive tree)

    @classmethod
    def open(cls, root: str | Path, *, require_data: bool = True) -> "Dataset":
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"dataset root {str(root)!r} does not exist; record first (recorder run / demo)"
                               " or pass --data DIR")
        if require_data and not layout.data_files(root):
            raise DatasetError(f"dataset root {str(root)!r} holds no Parquet files yet")
        import duckdb

        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        ds = cls(root, con)
        ds.refresh()
        return ds

    def refresh(self) -> None:
        """Re-create the views (new tables may have appeared since opening)."""
        if self._views is not None:
            self._views(self.con)
            return
        for table in schema.TABLES:
            self.con.execute(view_sql(self.root, table))

    def sql(self, text: str, params: dict[str, Any] | None = None) -> pa.Table:
        import duckdb

        attempts = 20
        stale = False
        for attempt in range(attempts):
            try:
                if stale:  # inside the try: the views' own listing can meet the next swap too
                    self.refresh()
                relation = self.con.sql(text, params=params or None)
                if relation is None:  # a statement with no result (CREATE, SET ...)
                    return pa.table({})
                return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
            except duckdb.IOException as exc:
                # A compaction swapped a partition between DuckDB listing its files and opening
                # them: the listing is stale, not the data. Re-list and run again.
                # While a compaction swaps partition after partition, consecutive attempts can each
                # meet a different swap: retry with a short, growing pause.
                if attempt == attempts - 1 or not any(m in str(exc) for m in _SWAPPED):
                    raise QueryError(f"SQL failed: {str(exc).splitlines()[0]}") from None
                time.sleep(0.005 * (attempt + 1))
                stale = True
            except duckdb.Error as exc:
                raise QueryError(f"SQL failed: {str(exc).splitlines()[0]}") from None
        raise AssertionError("unreachable")

    def query(self, name: str, *, now: dt.datetime | None = None, **params: Any) -> pa.Table:
        """Run a named query from `queries/`; parameters as text or typed values."""
        q = queries.get(name)
        values = q.bind({k: v if isinstance(v, str) else _to_text(v) for k, v in params.items()}, now=now)
        return self.sql(q.sql, values)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _to_text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def open_dataset(root: str | Path | None = None, *, config: str | Path | None = None) -> Dataset:
    """A plain dataset's root directory, or a config.toml whose [storage] is a plain dataset or a
    DuckLake lake (attached read-only): the same views and named queries either way."""
    if (root is None) == (config is None):
        raise DatasetError("open_dataset takes a dataset root or config=<config.toml>, one of the two")
    if root is not None:
        return Dataset.open(root)
    from . import config as cfgmod

    from .store import open_store

    return open_store(cfgmod.load(config).storage).open_dataset()
