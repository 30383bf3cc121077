"""The lake store: a DuckLake catalog in PostgreSQL, Parquet files on a shared directory.

    <data_path>/main/<table>/venue=<v>/date=<d>/<writer>-<flush:010d>-<part:04d>.parquet

Commit protocol (one flush; `pipeline.commit` drives it, in the storage worker thread):

1. `checkpoint_files`: the journal is fsynced; each partition's file is written and fsynced
   under its final name. The files are invisible: only the catalog makes a file part of a table.
2. The pipeline writes its checkpoint naming these files (the local commit point).
3. `publish`: one catalog transaction registers every file of the flush
   (`ducklake_add_data_files`) and inserts the ledger row (writer, flush). Before it, the
   ledger is asked whether this flush is already there; if so, nothing is registered again.
   (Not on a flush's first publish in the process that wrote it: no ledger row can name it yet,
   as flushes are numbered after the checkpoint's and the ledger's at startup.)

Publishing at most every `publish_seconds`: the flusher holds flushes cut sooner in memory and
the next commit writes them with its own as one flush (pipeline.commit): fewer, larger files and
fewer transactions, each file and each transaction costing the writer CPU (DuckLake reads every
file's Parquet footer and writes its statistics to the catalog). A held flush is not yet in any
file or checkpoint, only in the journal: a crash replays it, as any uncommitted row.

A kill -9 before 2 leaves files no ledger row will ever name (same names are rewritten by the
replayed flush, or `remove_strays` deletes them); between 2 and 3, or during 3 (PostgreSQL
rolls the transaction back), recovery finds the checkpoint, no ledger row, and registers the
files; after 3, it finds the ledger row and registers nothing. So each flush is registered
exactly once, whatever the moment: the ledger answers, never a commit message (those vanish
with expired snapshots) and never file names (those change on merge).

Writer ids are uuid4s kept in `<journal>/lake_writer`: unique per recorder across the lake.
The catalog being unreachable raises StoreUnavailable: the storage task keeps everything and
retries, like a full disk; the event loop never waits on the catalog.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from pathlib import Path

import attrs
import duckdb
import pyarrow as pa

from .. import layout, schema
from ..fsutil import fsync_dir, write_atomic
from ..writer import Flush, sort_keys
from . import crashpoints, extensions, objectstore
from .errors import StoreUnavailable
from .settings import LakeSettings

log = logging.getLogger(__name__)

ALIAS = "lake"
LEDGER = "recorder_ledger"
WRITER_FILE = "lake_writer"
LOCK_KEY = 0x7265636F7264  # pg advisory lock key of lake maintenance ("record")
# Errors that mean "the catalog cannot be reached or refused this commit for now": retried.
# Anything else (a type mismatch, a bad path) is a bug and is not hidden behind a retry loop.
_TRANSIENT = (duckdb.IOException, duckdb.TransactionException, duckdb.ConnectionException,
              duckdb.InternalException)
_DUCK_TYPES = {"string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT", "float64": "DOUBLE", "bool": "BOOLEAN",
               "timestamp": "TIMESTAMPTZ", "levels": "STRUCT(price DOUBLE, size DOUBLE)[]"}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(settings: LakeSettings, *, read_only: bool, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake attached as `lake` (read-only for readers). The
    password goes in a temporary DuckDB secret, never in the attach string, so no error
    message or `duckdb_databases()` row shows it."""
    names = ("ducklake", "postgres_scanner") + (("httpfs",) if settings.on_s3 else ())
    con = extensions.connect(names, threads=threads)
    try:
        if settings.password:
            con.execute(f"CREATE TEMPORARY SECRET (TYPE postgres, PASSWORD {_quote(settings.password)})")
        if settings.on_s3:
            con.execute(objectstore.duckdb_secret_sql())
        options = "READ_ONLY" if read_only else f"DATA_PATH {_quote(settings.data_path)}"
        con.execute(f"ATTACH {_quote(settings.catalog)} AS {ALIAS} ({options})")
    except duckdb.Error as exc:
        con.close()
        raise StoreUnavailable(settings.scrub(f"cannot attach the lake catalog: {str(exc).splitlines()[0]}")) from None
    return con


def table_ddl(table: str) -> str:
    """CREATE TABLE for one table: its file columns, then the partition keys (the order the
    plain dataset's views have, so `SELECT *` answers alike)."""
    sch = schema.load(table)
    cols = [f"{c.name} {_DUCK_TYPES[c.type_name]}" for c in sch.columns if c.name not in sch.partition_by]
    cols += [f"{k} {schema.PARTITION_TYPES[k]}" for k in sch.partition_by]
    return f"CREATE TABLE {ALIAS}.{table} ({', '.join(cols)})"


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables and the ledger the first time any writer meets this lake. Writers
    starting together race: the loser's commit fails (a conflict, or "already exists") and it
    looks again at what is there."""
    for attempt in range(20):
        have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?",
                                          [ALIAS]).fetchall()}
        missing = [t for t in schema.TABLES if t not in have]
        if not missing and LEDGER in have:
            return
        try:
            con.execute("BEGIN")
            for t in missing:
                con.execute(table_ddl(t))
                con.execute(f"ALTER TABLE {ALIAS}.{t} SET PARTITIONED BY (venue, date)")
            if LEDGER not in have:
                con.execute(f"CREATE TABLE {ALIAS}.{LEDGER} (writer VARCHAR, flush BIGINT, files INTEGER,"
                            " rows BIGINT, committed TIMESTAMPTZ)")
            con.execute("COMMIT")
        except (duckdb.TransactionException, duckdb.CatalogException):
            with contextlib.suppress(duckdb.TransactionException):
                con.execute("ROLLBACK")
            if attempt == 19:
                raise
            time.sleep(0.05 * (attempt + 1))


def writer_id(journal_dir: Path) -> str:
    """This recorder's id in the lake: a uuid4 made once and kept beside the journal."""
    path = Path(journal_dir) / WRITER_FILE
    if path.exists():
        return path.read_text().strip()
    wid = uuid.uuid4().hex
    write_atomic(path, wid.encode())
    return wid


class LakeStore:
    name = "lake"

    def __init__(self, settings: LakeSettings) -> None:
        self.settings = settings
        self.publish_interval = settings.publish_seconds
        self.writer = ""
        self._con: duckdb.DuckDBPyConnection | None = None
        # flushes whose files this process wrote and has not yet tried to publish: no ledger row can
        # name them (a flush is published only after its checkpoint, and new flushes are numbered
        # after the checkpoint's and the ledger's), so their first publish skips the ledger check.
        # Only once last_flush() has read the ledger at startup (else the numbering is the
        # checkpoint's alone, and a checkpoint moved away would make it start too low).
        self._fresh: set[int] = set()
        self._numbered_after_ledger = False

    # --- the writer side -------------------------------------------------------------------

    def bind_writer(self, journal_dir: Path, instance: str) -> None:
        """Take this recorder's writer id and attach the catalog now, at startup (loading the
        extensions and attaching take about a second): not in the middle of the first flush. A
        catalog that cannot be reached yet is attached at the first flush, retried until it can."""
        self.writer = writer_id(journal_dir)
        try:
            self._writer_con()
        except StoreUnavailable as exc:
            log.warning("%s; recording anyway, flushes are kept until the lake can be reached", exc)

    def _writer_con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            # one DuckDB thread: registering files needs no parallelism, and the event loop needs the cores
            con = connect(self.settings, read_only=False, threads=1)
            try:
                ensure_tables(con)
            except _TRANSIENT as exc:
                con.close()
                raise StoreUnavailable(self._message("cannot prepare the lake's tables", exc)) from None
            self._con = con
            log.info("writer %s attached the lake (data in %s)", self.writer, self.settings.data_path)
        return self._con

    def _message(self, what: str, exc: BaseException) -> str:
        text = self.settings.scrub(f"{what}: {str(exc).splitlines()[0]}")
        for secret in objectstore.secrets() if self.settings.on_s3 else ():
            text = text.replace(secret, "***")
        return text

    def _path(self, table: str, venue: str, day: int, flush_seq: int, part: int) -> str:
        rel = Path("main") / table / f"venue={venue}" / f"date={layout.timeutil.day_name(day)}"
        return str(rel / layout.file_name(self.writer, flush_seq, part))

    def checkpoint_files(self, flush: Flush, flush_seq: int) -> list:
        """Write each partition's file under its final name, durable (invisible until registered).
        Returns [[table, path relative to data_path], ...]."""
        parts = sorted(flush.partitions.items())
        pending = [[table, self._path(table, venue, day, flush_seq, no)]
                   for no, ((table, venue, day), _) in enumerate(parts)]
        tables = [(pa.Table.from_batches(batches), sort_keys(table)) for (table, _, _), batches in parts]
        if self.settings.on_s3:
            self._write_s3(pending, tables)
        else:
            self._write_local(pending, tables)
        if self._numbered_after_ledger:
            self._fresh.add(flush_seq)
        return pending

    def _write_local(self, pending: list, tables: list) -> None:
        root, dirs = Path(self.settings.data_path), set()
        for (_, rel), (table, order) in zip(pending, tables):
            final = root / rel
            os.replace(layout.write_tmp(table, final, sort_by=order), final)
            dirs.add(final.parent)
        for d in dirs:
            fsync_dir(d)

    def _write_s3(self, pending: list, tables: list) -> None:
        """One PUT per file: the object exists whole once its upload completes, or not at all. A
        failed upload raises OSError: the storage task retries the flush, like a full disk."""
        fs, base = objectstore.filesystem(self.settings.data_path.rstrip("/"))
        for (_, rel), (table, order) in zip(pending, tables):
            with fs.open_output_stream(f"{base}/{rel}") as out:
                layout.write_sorted(table, out, sort_by=order)

    def in_ledger(self, con: duckdb.DuckDBPyConnection, flush_seq: int) -> bool:
        row = con.execute(f"SELECT count(*) FROM {ALIAS}.{LEDGER} WHERE writer = ? AND flush = ?",
                          [self.writer, flush_seq]).fetchone()
        return row[0] > 0

    def publish(self, flush_seq: int, pending: list) -> None:
        """Register the flush's files and its ledger row in one catalog transaction, unless the
        ledger shows it done already (a crash or a lost reply after COMMIT)."""
        if not pending:
            return
        by_table: dict[str, list[str]] = {}
        for table, rel in pending:
            by_table.setdefault(table, []).append(str(Path(self.settings.data_path) / rel)
                                                  if not self.settings.on_s3 else self.settings.data_path.rstrip("/") + "/" + rel)
        fresh = flush_seq in self._fresh
        self._fresh.discard(flush_seq)  # from now on it may have committed (a reply lost): ask the ledger
        try:
            con = self._writer_con()
            if not fresh and self.in_ledger(con, flush_seq):
                log.info("flush %d is in the lake's ledger already: not registered again", flush_seq)
                return
            con.execute("BEGIN")
            for table, paths in sorted(by_table.items()):
                con.execute(f"CALL ducklake_add_data_files({_quote(ALIAS)}, {_quote(table)}, ?)", [paths])
            con.execute(f"INSERT INTO {ALIAS}.{LEDGER} VALUES (?, ?, ?, NULL, now())",
                        [self.writer, flush_seq, len(pending)])
            crashpoints.reach("in_transaction")
            con.execute("COMMIT")
        except _TRANSIENT as exc:
            self._drop()
            raise StoreUnavailable(self._message(f"lake commit of flush {flush_seq} failed", exc)) from None
        crashpoints.reach("catalog_committed")

    def _drop(self) -> None:
        """Forget a connection after a failure (its transaction, if any, is rolled back)."""
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.close()
            self._con = None

    def remove_strays(self, flush_seq: int) -> None:
        """Delete this writer's files of flushes after `flush_seq` that the ledger does not hold:
        written before a crash that came before their checkpoint. (The ledger is asked too, in
        case the checkpoint is older than the lake: a registered file is never deleted.) Local
        data paths only, and only with the catalog reachable; on object storage they stay."""
        if self.settings.on_s3:
            return
        root = Path(self.settings.data_path) / "main"
        candidates = [p for p in root.glob(f"*/*/*/{self.writer}-*.parquet") if int(p.name.split("-")[1]) > flush_seq]
        for path in root.glob(f"*/*/*/.{self.writer}-*"):
            path.unlink()
        if not candidates:
            return
        try:
            registered = self._registered_after(flush_seq)
        except StoreUnavailable as exc:
            log.warning("not removing unregistered files yet (%s)", exc)
            return
        for path in candidates:
            if int(path.name.split("-")[1]) not in registered:
                log.warning("removing %s: written by a flush that never committed", path)
                path.unlink()

    def _registered_after(self, flush_seq: int) -> set[int]:
        try:
            con = self._writer_con()
            rows = con.execute(f"SELECT DISTINCT flush FROM {ALIAS}.{LEDGER} WHERE writer = ? AND flush > ?",
                               [self.writer, flush_seq]).fetchall()
        except _TRANSIENT as exc:
            self._drop()
            raise StoreUnavailable(self._message("cannot read the lake's ledger", exc)) from None
        return {r[0] for r in rows}

    def last_flush(self) -> int:
        """This writer's highest flush in the ledger (0 if the catalog cannot be reached now)."""
        try:
            con = self._writer_con()
            row = con.execute(f"SELECT max(flush) FROM {ALIAS}.{LEDGER} WHERE writer = ?", [self.writer]).fetchone()
        except (StoreUnavailable, *_TRANSIENT) as exc:
            self._drop()
            log.warning("cannot read this writer's last flush from the lake's ledger (%s)", exc)
            return 0
        self._numbered_after_ledger = True
        return row[0] or 0

    def close(self) -> None:
        self._drop()

    def rebuild_session(self):
        """What `recorder rebuild` reads (the lake pinned at one snapshot) and its replace step: one
        catalog transaction for every partition (lake_rebuild.py)."""
        from .lake_rebuild import rebuild_session

        return rebuild_session(self.settings)

    # --- readers -----------------------------------------------------------------------------

    def open_dataset(self):
        """A Dataset whose views read the lake's current snapshot (attached read-only)."""
        from ..dataset import Dataset

        con = connect(self.settings, read_only=True)
        ds = Dataset(Path(self.settings.data_path), con, views=lake_views)
        ds.refresh()
        return ds


def lake_views(con: duckdb.DuckDBPyConnection) -> None:
    """A view per table over the lake's tables (an empty view for a table not yet created)."""
    from ..dataset import empty_view_sql

    have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?",
                                      [ALIAS]).fetchall()}
    for table in schema.TABLES:
        if table in have:
            # the plain dataset's column order: the file's columns, then the Hive keys as DuckDB lists them
            cols = ", ".join(schema.load(table).file_columns + ("date", "venue"))
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {cols} FROM {ALIAS}.{table}")
        else:
            con.execute(empty_view_sql(table))


@attrs.frozen(kw_only=True)
class Maintenance:
    merged: int
    expired: int
    deleted: int
    seconds: float
    skipped: bool = False  # another process held the maintenance lock
