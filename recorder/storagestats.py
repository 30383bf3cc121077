"""What the storage tasks report for the daemon's window: flush and fsync durations, the last
flush, disk errors, whether a worker is busy (and since when), and rows written per feed and table.

Updated once per flush, per group commit and per disk error (never per frame), on the event loop
(durations are measured in the worker thread and recorded when it returns), except `rows_written`,
which the committing thread replaces whole after each commit (readers see the old or the new dict).
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import attrs
import pyarrow.compute as pc

T = TypeVar("T")

# Seconds: a flush of 100k rows takes ~0.1-1 s here; an fsync ~1-20 ms on an SSD.
FLUSH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@attrs.define
class Durations:
    """A histogram: cumulative counts per upper bound (the last is +Inf), and the sum."""

    bounds: tuple[float, ...]
    counts: list[int] = attrs.field()
    total: float = 0.0

    @counts.default
    def _zeros(self) -> list[int]:
        return [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.counts[i] += 1
        self.counts[-1] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return self.counts[-1]


@attrs.define
class StorageStats:
    flush_durations: Durations = attrs.field(factory=lambda: Durations(FLUSH_BUCKETS))
    fsync_durations: Durations = attrs.field(factory=lambda: Durations(FSYNC_BUCKETS))
    last_flush: float = attrs.field(factory=time.time)  # wall clock of the last commit (the start before one)
    flushes: int = 0
    disk_errors: int = 0
    flush_busy_since: float | None = None  # trio clock: a commit is running in the worker since then
    fsync_busy_since: float | None = None  # trio clock: a group-commit fsync is running since then
    rows_written: dict[tuple[str, str], int] = attrs.field(factory=dict)  # (feed, table) -> rows

    def add_written(self, counts: dict[tuple[str, str], int]) -> None:
        """Add one commit's rows (called from the committing thread: builds a new dict, then swaps it in)."""
        merged = dict(self.rows_written)
        for key, n in counts.items():
            merged[key] = merged.get(key, 0) + n
        self.rows_written = merged


def timed(fn: Callable[..., T], *args) -> tuple[T, float]:
    """fn(*args) and the seconds it took (run in the worker thread, so the time is the disk's)."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def rows_by_feed(partitions: dict) -> dict[tuple[str, str], int]:
    """(feed, table) -> rows, from a Flush's partitions ((table, venue, day) -> batches)."""
    out: dict[tuple[str, str], int] = {}
    for (table, _venue, _day), batches in partitions.items():
        for batch in batches:
            if not batch.num_rows:
                continue
            counts = pc.value_counts(batch.column("feed"))
            for feed, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()):
                out[(feed, table)] = out.get((feed, table), 0) + n
    return out

