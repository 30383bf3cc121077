"""Lake maintenance: DuckLake's own merge, snapshot expiry and old-file cleanup, one process at a time.

    maintain(settings)
      take pg_try_advisory_lock(LOCK_KEY) on a dedicated PostgreSQL session (held while this
          runs; released when it ends, also by kill -9: PostgreSQL drops a dead session's locks)
      ducklake_merge_adjacent_files    small files of a partition -> larger ones
      ducklake_expire_snapshots        snapshots older than the grace period
      ducklake_cleanup_old_files       files only expired snapshots referenced, older than the grace

The grace period (storage.lake_grace_minutes) must outlast any query: a query reads the
snapshot current when it started, and expiring that snapshot and deleting its files under it
fails the query with "Cannot open file". Files a writer has written but not yet registered are
in no snapshot: DuckLake's cleanup of old files never touches them. DuckLake's orphan deletion
is never let loose on the lake: a writer held back by a catalog outage keeps written,
unregistered files for as long as the outage lasts, and deleting those would lose the flush.
Each writer removes its own strays when it restarts (lake.LakeStore.remove_strays). What is
deleted here is only what a merge left behind when its commit lost to a writer's (DuckLake
names those files `ducklake-<uuid>.parquet`, a name no recorder writes), older than the grace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator

import duckdb

from . import extensions
from .errors import StoreUnavailable
from .lake import _TRANSIENT, ALIAS, LOCK_KEY, Maintenance, _quote, connect
from .settings import LakeSettings

log = logging.getLogger(__name__)


@contextlib.contextmanager
def maintenance_lock(settings: LakeSettings) -> Iterator[bool]:
    """Yields whether this process got the lake's maintenance lock (without waiting for it)."""
    con = extensions.connect(("postgres_scanner",))
    try:
        if settings.password:
            con.execute(f"CREATE TEMPORARY SECRET (TYPE postgres, PASSWORD {_quote(settings.password)})")
        con.execute(f"ATTACH {_quote(settings.libpq)} AS pg (TYPE postgres)")
        con.execute("BEGIN")  # pins one PostgreSQL session for as long as we hold the lock
        got = con.execute(f"SELECT * FROM postgres_query('pg', 'SELECT pg_try_advisory_lock({LOCK_KEY})')").fetchone()[0]
    except duckdb.Error as exc:
        con.close()
        raise StoreUnavailable(settings.scrub(f"cannot take the maintenance lock: {str(exc).splitlines()[0]}")) from None
    try:
        yield bool(got)
    finally:
        con.close()  # ends the session, which releases the lock


def _count(con: duckdb.DuckDBPyConnection, call: str) -> int:
    """How many rows a DuckLake maintenance function returns (files merged, snapshots expired...)."""
    return con.execute(f"CALL {call}").to_arrow_table().num_rows  # (fetchall would need pytz for timestamps)


def delete_failed_merge_files(con: duckdb.DuckDBPyConnection, settings: LakeSettings, older: str) -> int:
    """Delete the files of merges whose commit failed: orphans DuckLake named itself, older than
    the grace period. A recorder's own files (<writer>-<flush>-<part>.parquet) are never touched."""
    rows = con.execute(f"SELECT path FROM ducklake_delete_orphaned_files({_quote(ALIAS)}, dry_run => true,"
                       f" older_than => {older})").fetchall()
    doomed = [p for (p,) in rows if p.rsplit("/", 1)[-1].startswith("ducklake-")]
    for path in doomed:
        delete_file(settings, path)
    return len(doomed)


def delete_file(settings: LakeSettings, path: str) -> None:
    if settings.on_s3:
        from .objectstore import filesystem

        fs, key = filesystem(path)
        fs.delete_file(key)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def maintain(settings: LakeSettings, *, progress=None) -> Maintenance:
    """Merge, expire and clean up, if no other process is doing it."""
    started = time.monotonic()
    with maintenance_lock(settings) as got:
        if not got:
            log.info("lake maintenance skipped: another process holds the maintenance lock")
            return Maintenance(merged=0, expired=0, deleted=0, seconds=0.0, skipped=True)
        con = connect(settings, read_only=False)
        try:
            older = f"now() - INTERVAL '{float(settings.grace_seconds)} seconds'"
            merged = _count(con, f"ducklake_merge_adjacent_files({_quote(ALIAS)})")
            expired = _count(con, f"ducklake_expire_snapshots({_quote(ALIAS)}, older_than => {older})")
            deleted = _count(con, f"ducklake_cleanup_old_files({_quote(ALIAS)}, older_than => {older})")
            deleted += delete_failed_merge_files(con, settings, older)
        except _TRANSIENT as exc:  # the catalog gone, or a writer's commit conflicting: next time
            raise StoreUnavailable(settings.scrub(f"lake maintenance failed: {str(exc).splitlines()[0]}")) from None
        finally:
            con.close()
    result = Maintenance(merged=merged, expired=expired, deleted=deleted, seconds=time.monotonic() - started)
    if progress:
        progress(result)
    return result
