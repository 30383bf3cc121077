"""A dataset that also shows what the recorder holds but has not flushed yet.

The live page charts a market from its recorded history "plus what is still buffered and not
yet flushed, so there is no hole between the two". The daemon hands the rows it holds as Arrow
tables, one per table name, with the table's columns (`venue` included; `date` may be left out),
and its open connections as `sessions` rows closed "now":

    with PendingDataset.open_with(root, {"chance": buffered_chance, "sessions": open_sessions}) as ds:
        data = chart_data(ds, "evt-1", start=...)

Each view becomes the Parquet files UNION ALL BY NAME the pending rows, so every named query
(and chart_data) runs unchanged over both. A row is in one or the other: the daemon snapshots
its buffers on the event loop, where a flush cannot move rows between them half way.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from .. import schema
from ..dataset import Dataset, view_sql


class PendingDataset(Dataset):
    """Dataset views over the Parquet files plus rows not flushed yet."""

    def __init__(self, root: Path, con, pending: dict[str, pa.Table] | None = None) -> None:
        super().__init__(root, con)
        self.pending = dict(pending or {})

    @classmethod
    def open_with(cls, root: str | Path, pending: dict[str, pa.Table]) -> "PendingDataset":
        unknown = sorted(set(pending) - set(schema.TABLES))
        if unknown:
            raise ValueError(f"pending rows for unknown table {unknown[0]!r}; tables: {', '.join(schema.TABLES)}")
        ds = cls.open(root, require_data=False)
        ds.pending = dict(pending)
        ds.refresh()
        return ds

    def refresh(self) -> None:
        super().refresh()
        for table, rows in self.pending.items():
            self._overlay(table, rows)

    def _overlay(self, table: str, rows: pa.Table) -> None:
        name = f"pending_{table}"
        self.con.register(name, rows)
        files = view_sql(self.root, table).split(" AS ", 1)[1]  # the SELECT behind the Parquet view
        date = "" if "date" in rows.column_names else ", CAST(coalesce(ts_event, ts_recv) AS DATE) AS date"
        self.con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM ({files}) "
                         f"UNION ALL BY NAME SELECT *{date} FROM {name}")
