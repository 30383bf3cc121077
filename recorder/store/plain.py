"""The plain store: Hive-partitioned Parquet under one root directory (the embedded default).

A flush's files are written under temporary names (invisible to the readers' globs), the
journal checkpoint names them, then they are renamed into place: the renames are the publish,
redone from the checkpoint after a crash. Compaction swaps whole partition directories
(compact.py); readers glob the tree (dataset.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import layout
from ..compact import writers_lock
from ..fsutil import fsync_dir
from ..writer import Flush, write_files

log = logging.getLogger(__name__)


class PlainStore:
    name = "plain"
    publish_interval = 0.0  # renames are cheap: every flush is published at once

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.instance = ""

    def bind_writer(self, journal_dir: Path, instance: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.instance = instance

    def checkpoint_files(self, flush: Flush, flush_seq: int) -> list:
        """Write the flush's files under temporary names, fsynced; the renames still to do."""
        pairs = write_files(flush, self.root, instance=self.instance, flush_seq=flush_seq)
        return [[str(t.relative_to(self.root)), str(f.relative_to(self.root))] for t, f in pairs]

    def publish(self, flush_seq: int, pending: list) -> None:
        """Rename the files into place (a rename already done is fine), then fsync their directories."""
        if not pending:
            return
        dirs = set()
        with writers_lock(self.root, exclusive=False):  # never while compaction swaps a partition
            for tmp, final in pending:
                layout.publish(self.root / tmp, self.root / final)
                dirs.add((self.root / final).parent)
            for d in dirs:
                fsync_dir(d)

    def remove_strays(self, flush_seq: int) -> None:
        for stray in layout.stray_tmp_files(self.root, self.instance):
            log.warning("removing %s: written by a flush that never committed", stray)
            stray.unlink()

    def open_dataset(self):
        """A Dataset whose views glob the tree."""
        from ..dataset import Dataset

        return Dataset.open(self.root)

    def rebuild_session(self):
        """What `recorder rebuild` reads (a Dataset) and its replace step: directory swaps (rebuild.py)."""
        return _PlainRebuild(self.root)

    def last_flush(self) -> int:
        """Flush numbers only name files here; the checkpoint's are the ones that count."""
        return 0

    def close(self) -> None:
        pass


class _PlainRebuild:
    def __init__(self, root: Path) -> None:
        from ..dataset import Dataset

        self.root = root
        self.ds = Dataset.open(root)
        self.con = self.ds.con

    def replace_partitions(self, sel, derived, **kwargs) -> list:
        from ..rebuild import replace_plain

        return replace_plain(self.con, self.root, sel, derived, **kwargs)

    def __enter__(self) -> "_PlainRebuild":
        return self

    def __exit__(self, *exc) -> None:
        self.ds.close()
