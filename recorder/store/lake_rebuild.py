"""Rebuild on a lake: every affected partition replaced in ONE catalog transaction.

    pin the lake's current snapshot S; views of every table AT (VERSION => S)
    rebuild.derive: raw at S ─► the current decoders ─► rebuilt rows per partition
    BEGIN
      per affected partition:  DELETE FROM lake.<table> WHERE venue, date AND the selection
                               INSERT INTO lake.<table> the rebuilt rows (DuckLake writes the files)
      guard: raw's rows of the selection, now, are still the ones decoded at S
    COMMIT                     (one snapshot: readers see every old row or every new one)

Unlike the plain dataset (one directory swap per partition), every table and partition changes
in the same snapshot: a row that moves from `rejects` to `chance` is never in both or neither.
Only the selected rows (feeds, receive-time range) are deleted: other feeds' rows in the same
partitions are not rewritten.

Live recorders: the guard compares raw's rows of the selection in the transaction's snapshot
with those decoded at S, and stops the rebuild (nothing changed) if a recorder has committed
frames of the selected feeds and range meanwhile: rebuild a range that is over (`--end`), or
stop the recorders of those feeds. A flush committed between the transaction's start and its
COMMIT is caught by DuckLake itself: it refuses to commit a delete from a table another
transaction inserted into meanwhile (a conflict, even in another partition, measured with the
ducklake extension for duckdb 1.5.5). The rebuild then rolls back and runs its transaction again
(CONFLICT_ATTEMPTS times, the guard included): recorders of other feeds may go on writing the
same tables, each retry only costs the rebuild's new files again (left unregistered; lake
maintenance deletes those after the grace period).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable

import duckdb
import pyarrow as pa

from .. import schema
from ..errors import RecorderError
from ..writer import sort_keys
from .errors import StoreUnavailable
from .lake import _TRANSIENT, ALIAS, connect
from .settings import LakeSettings

log = logging.getLogger(__name__)
CONFLICT_ATTEMPTS = 5  # DuckLake refuses a delete from a table another writer inserted into meanwhile


def current_snapshot(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute(f"SELECT max(snapshot_id) FROM {ALIAS}.snapshots()").fetchone()[0]


def pinned_views(con: duckdb.DuckDBPyConnection, snapshot: int) -> None:
    """A view per table over the lake AT this snapshot (what lake.lake_views gives, pinned)."""
    from ..dataset import empty_view_sql

    have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?",
                                      [ALIAS]).fetchall()}
    for table in schema.TABLES:
        if table in have:
            cols = ", ".join(schema.load(table).file_columns + ("date", "venue"))
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {cols} FROM {ALIAS}.{table} "
                        f"AT (VERSION => {int(snapshot)})")
        else:
            con.execute(empty_view_sql(table))


class LakeRebuild:
    """One rebuild's connection (read-write) and its replace step; see the module docstring."""

    def __init__(self, settings: LakeSettings) -> None:
        self.settings = settings
        try:
            self.con = connect(settings, read_only=False)
        except StoreUnavailable as exc:
            raise RecorderError(f"{exc}; nothing was changed") from None
        self.snapshot = current_snapshot(self.con)
        pinned_views(self.con, self.snapshot)

    def close(self) -> None:
        self.con.close()

    def replace_partitions(self, sel, derived, *, progress: Callable | None = None,
                           before_swap: Callable[[], None] | None = None) -> list:
        from ..rebuild import affected_partitions

        keys = affected_partitions(self.con, sel, derived)
        if not keys:
            return []
        decoded = self._raw_rows(sel, at=self.snapshot)
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                results = self._transaction(sel, derived, keys, decoded, before_swap)
                break
            except duckdb.TransactionException as exc:
                if "conflict" not in str(exc).lower() or attempt == CONFLICT_ATTEMPTS:
                    raise RecorderError(self.settings.scrub(
                        f"the rebuild's commit failed, nothing was changed (run it again): {str(exc).splitlines()[0]}")
                    ) from None
                log.warning("rebuild: a writer committed to the same tables meanwhile; nothing was changed, "
                            "trying again (%d/%d)", attempt, CONFLICT_ATTEMPTS)
                time.sleep(0.2 * attempt)
        log.info("rebuild: %d partitions replaced in one snapshot (raw read at snapshot %d)", len(results),
                 self.snapshot)
        for r in results:
            if progress:
                progress(r)
        return results

    def _transaction(self, sel, derived, keys, decoded: int, before_swap) -> list:
        """Every affected partition replaced, then COMMIT; on any error ROLLBACK (nothing changed)."""
        from ..rebuild import Result

        started = time.monotonic()
        con = self.con
        try:
            con.execute("BEGIN")
            results = [self._replace_one(sel, key, derived.partitions.get(key, []), started, Result) for key in keys]
            now = self._raw_rows(sel, at=None)
            if now != decoded:
                raise RecorderError(f"raw holds {now} frames of the selected feeds and range now, {decoded} when "
                                    "the rebuild read it: a recorder is writing them. Nothing was changed; stop "
                                    "the recorders of these feeds or rebuild a range that is over (--end)")
            if before_swap is not None:  # test seam
                before_swap()
            con.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            if isinstance(exc, _TRANSIENT) and not isinstance(exc, duckdb.TransactionException):
                raise RecorderError(self.settings.scrub(
                    f"the rebuild's commit failed, nothing was changed (run it again): {str(exc).splitlines()[0]}")
                ) from None
            raise
        return results

    def _raw_rows(self, sel, *, at: int | None) -> int:
        version = "" if at is None else f" AT (VERSION => {int(at)})"
        return self.con.execute(f"SELECT count(*) FROM {ALIAS}.raw{version} WHERE {sel.condition()}").fetchone()[0]

    def _replace_one(self, sel, key: tuple[str, str, str], batches: list, started: float, Result):
        table, venue, date = key
        con = self.con
        where = "venue = $venue AND date = CAST($date AS DATE)"
        params = {"venue": venue, "date": date}
        count = f"SELECT count(*) FROM {ALIAS}.{table} WHERE {where}"
        before = con.execute(count, params).fetchone()[0]
        con.execute(f"DELETE FROM {ALIAS}.{table} WHERE {where} AND {sel.condition()}", params)
        if batches:
            file_schema = schema.load(table).file_schema
            rows = pa.Table.from_batches(batches, schema=file_schema)
            cols = ", ".join(file_schema.names)
            order = ", ".join(c for c, _ in sort_keys(table))
            con.register("rebuilt_rows", rows)
            try:
                con.execute(f"INSERT INTO {ALIAS}.{table} ({cols}, venue, date) SELECT {cols}, $venue, "
                            f"CAST($date AS DATE) FROM rebuilt_rows ORDER BY {order}", params)
            finally:
                con.unregister("rebuilt_rows")
        after = con.execute(count, params).fetchone()[0]
        return Result(partition=f"{table}/venue={venue}/date={date}", rows_before=before, rows_after=after,
                      seconds=time.monotonic() - started)


@contextlib.contextmanager
def rebuild_session(settings: LakeSettings):
    session = LakeRebuild(settings)
    try:
        yield session
    finally:
        session.close()

