"""Arrow schemas of the dataset's tables, read from the TOML files in `schemas/`.

`schemas/<table>.toml` is the one source of truth: column names, types, nullability, sort
order and partition keys. Partition keys (`venue`, `date`) are in the Hive path, not in files.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import attrs
import pyarrow as pa

# The top-level schemas/ folder, mapped into the package as recorder.schemas at build time
# (pyproject.toml), so the installed wheel carries it.
SCHEMA_PACKAGE = "recorder.schemas"
TABLES = ("chance", "trades", "book", "prices", "account", "raw", "sessions", "rejects")
TIMESTAMP = pa.timestamp("us", tz="UTC")
LEVEL = pa.struct([pa.field("price", pa.float64(), nullable=False), pa.field("size", pa.float64(), nullable=False)])
_TYPES = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": TIMESTAMP,
    "levels": pa.list_(LEVEL),
}
# Partition keys and their types when read back (DuckDB: hive_types).
PARTITION_TYPES = {"venue": "VARCHAR", "date": "DATE"}


@attrs.frozen(kw_only=True)
class Column:
    name: str
    type_name: str
    nullable: bool
    doc: str

    @property
    def arrow_type(self) -> pa.DataType:
        return _TYPES[self.type_name]


@attrs.frozen(kw_only=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...]
    sort_by: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @functools.cached_property
    def file_schema(self) -> pa.Schema:
        """The schema of a Parquet file: every column but the partition keys."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns if c.name not in self.partition_by]
        )

    @property
    def file_columns(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n not in self.partition_by)


def _parse(path: Path | Traversable) -> TableSchema:
    raw = tomllib.loads(path.read_text())
    columns = []
    for c in raw["columns"]:
        if c["type"] not in _TYPES:
            raise ValueError(f"{path}: column {c['name']!r} has unknown type {c['type']!r}")
        columns.append(Column(name=c["name"], type_name=c["type"], nullable=c["nullable"], doc=c.get("doc", "")))
    return TableSchema(
        name=raw["table"],
        columns=tuple(columns),
        partition_by=tuple(raw["partition_by"]),
        sort_by=tuple(raw["sort_by"]),
    )


@functools.cache
def load(table: str) -> TableSchema:
    """The schema of `table`, read once from `schemas/<table>.toml`."""
    if table not in TABLES:
        raise KeyError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    return _parse(resources.files(SCHEMA_PACKAGE) / f"{table}.toml")


def all_schemas() -> dict[str, TableSchema]:
    return {t: load(t) for t in TABLES}
