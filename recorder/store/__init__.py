"""The storage seam: where a flush's files go and what makes them visible to readers.

    Store.checkpoint_files(flush, flush_seq) -> pending   files written and durable, invisible
    Store.publish(flush_seq, pending)                     make them visible (idempotent)
    Store.publish_interval                                seconds: publish at most this often (the
                                                          flusher holds flushes back in between)
    Store.remove_strays(flush_seq)                        files of flushes that never committed
    Store.last_flush()                                    the highest flush number it holds of this writer
    Store.open_dataset()                                  a reader: a DuckDB view per table
    Store.rebuild_session()                               `recorder rebuild`: what it reads (.con) and
                                                          .replace_partitions(sel, derived): the swap

Compaction differs enough to stay beside each: compact.py (plain: partition directory swaps) and
maintenance.py (lake: DuckLake's merge, expiry and cleanup under an advisory lock).

The pipeline writes `pending` (plain JSON) into its journal checkpoint between the first two
steps; recovery calls `publish` again with it, so each implementation makes `publish` safe to
repeat. Two implementations: `plain.PlainStore`, the Hive-partitioned directory tree (the
default, one machine, no server), and `lake.LakeStore`, a DuckLake catalog (PostgreSQL) with
data on a shared directory, for many recorders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..writer import Flush


class Store(Protocol):
    name: str
    publish_interval: float

    def bind_writer(self, journal_dir: Path, instance: str) -> None: ...

    def checkpoint_files(self, flush: Flush, flush_seq: int) -> list: ...

    def publish(self, flush_seq: int, pending: list) -> None: ...

    def remove_strays(self, flush_seq: int) -> None: ...

    def last_flush(self) -> int: ...

    def open_dataset(self): ...

    def rebuild_session(self): ...

    def close(self) -> None: ...


def open_store(storage: Any) -> Store:
    """The store a `config.StorageConfig` describes."""
    if getattr(storage, "lake", None) is not None:
        from .lake import LakeStore

        return LakeStore(storage.lake)
    from .plain import PlainStore

    return PlainStore(storage.root)
