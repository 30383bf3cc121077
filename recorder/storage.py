"""The storage tasks: group-commit fsync of the journal and periodic Parquet flushes.

Both hand their disk work to worker threads, so the event loop (and with it every feed's read
loop) never waits on disk. A disk error (full, read-only, gone) is logged once per episode;
nothing buffered is dropped, the same flush is retried until it succeeds, and the journal keeps
everything meanwhile (in memory until it can be written).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable

import attrs
import trio

from .memcap import MemoryCap
from .pipeline import Pipeline
from .storagestats import timed

log = logging.getLogger(__name__)


# A flush is also cut when the buffered rows hold 1/24 of storage.max_memory_mb (21 MB by default):
# while it is written the next rows are buffered, so about twice that is held at the peak.
FLUSH_SHARE_OF_MEMORY = 24

# Called in the flush's worker thread after every flush attempt: the daemon sets it to glibc's
# malloc_trim(0) (supervisor.tune_malloc), which hands the heap's free pages back to the system.
release_memory: Callable[[], object] | None = None


@attrs.frozen(kw_only=True)
class FlushPolicy:
    max_rows: int = 100_000  # flush when this many rows are buffered
    max_age: float = 60.0  # seconds between flushes while rows are buffered
    commit_interval: float = 0.2  # journal group-commit fsync interval, seconds
    retry_interval: float = 5.0  # after a disk error, seconds before trying again
    max_memory_bytes: int = 512 * 1024 * 1024  # feeds stop reading while this much is held (memcap.py)


class _Episode:
    """Logs a failure once when it starts and once when it ends, not once per attempt."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing = False
        self.attempts = 0

    def failed(self, exc: OSError) -> None:
        self.attempts += 1
        if not self.failing:
            log.error("%s failed: %s; keeping everything and retrying until it works", self.what, exc)
            self.failing = True

    def succeeded(self) -> None:
        if self.failing:
            log.warning("%s works again after %d failed attempts", self.what, self.attempts)
        self.failing = False
        self.attempts = 0


class FlushGate:
    """Backpressure from Parquet flushes to the feeds. A feed that finds `limit` rows buffered
    asks for a flush now and waits until the flusher has cut the buffers (at once if it is idle,
    after the running flush otherwise). Meanwhile its transport stops reading the socket once its
    own queue is full, so TCP pushes back on the venue. Without this a recorder fed faster than it
    can write Parquet buffers without bound. While flushes are failing (disk full) the gate stays
    open: feeds keep reading and the journal keeps everything (in memory until it can be written)."""

    def __init__(self, limit: int, soft_limit: int | None = None, soft_bytes: int | None = None) -> None:
        self.limit = limit
        self.soft_limit = limit if soft_limit is None else soft_limit  # from here feeds nudge() the flusher
        # The same in bytes (Buffers.held_bytes), for wide rows: 100k rows of order books hold ~45 MB.
        self.soft_bytes = soft_bytes if soft_bytes is not None else 2**62
        self.limit_bytes = 2 * self.soft_bytes
        self.wanted = trio.Event()  # a feed asked for a flush
        self._cut = trio.Event()
        self.failing = False
        self.waits = 0

    async def wait(self) -> None:
        if self.failing:
            return
        self.waits += 1
        self.wanted.set()
        await self._cut.wait()

    def nudge(self) -> None:
        """max_rows are buffered: flush as soon as the flusher is free (without waiting for its next
        look at the clock). At full rate this keeps each flush near max_rows rows instead of
        letting rows pile up to `limit` while the flusher sleeps."""
        self.wanted.set()

    def cut_made(self) -> None:
        self._cut.set()
        self._cut = trio.Event()

    def set_failing(self, failing: bool) -> None:
        self.failing = failing
        if failing:
            self.cut_made()  # release whoever waits: nothing will be cut until the disk is back


async def run_group_commit(pipeline: Pipeline, policy: FlushPolicy) -> None:
    """fsync the journal every `commit_interval` while there is something new."""
    episode = _Episode("journal write")
    journal, stats = pipeline.journal, pipeline.storage_stats
    while True:
        await trio.sleep(policy.retry_interval if episode.failing else policy.commit_interval)
        if journal.position > journal.durable or episode.failing:
            stats.fsync_busy_since = trio.current_time()
            try:
                _, seconds = await trio.to_thread.run_sync(timed, journal.sync)
                stats.fsync_durations.observe(seconds)
                episode.succeeded()
                if pipeline.memory is not None:
                    pipeline.memory.released()
            except OSError as exc:
                stats.disk_errors += 1
                episode.failed(exc)
            finally:
                stats.fsync_busy_since = None


def _commit(pipeline: Pipeline, job, defer: bool) -> tuple:
    """One flush (in a worker thread), timed; then the memory it freed goes back (release_memory)."""
    try:
        return timed(functools.partial(pipeline.commit, job, defer_publish=defer))
    finally:
        if release_memory is not None:
            release_memory()


async def run_flusher(pipeline: Pipeline, policy: FlushPolicy, gate: FlushGate) -> None:
    """Flush when `max_rows` rows are buffered (a feed that sees them nudges the flusher, or it
    notices at its next look every `commit_interval`), `max_age` seconds have passed, or a feed
    waits at the gate.

    A store with a `publish_interval` (a lake: each publish is a catalog transaction, whose cost
    grows with its files) publishes at most that often: a flush cut sooner is held back in memory
    (its rows are in the journal) and written with the next one as one flush, one file per
    partition; once the interval is over the flusher commits what is held even with no new rows."""
    episode = _Episode("Parquet flush")
    next_due = trio.current_time() + policy.max_age
    interval = getattr(pipeline.store, "publish_interval", 0.0)
    last_publish = trio.current_time()  # at most one publish per interval, counted from the start
    while True:
        if episode.failing:
            await trio.sleep(policy.retry_interval)
        else:
            with trio.move_on_after(policy.commit_interval):
                await gate.wanted.wait()
        wanted = gate.wanted.is_set()
        gate.wanted = trio.Event()
        now = trio.current_time()
        held_due = bool(pipeline.held) and now - last_publish >= interval  # held back long enough
        if pipeline.unfinished is None:
            if not wanted and pipeline.buffers.rows < policy.max_rows and now < next_due and not held_due:
                continue
            next_due = now + policy.max_age
            if (pipeline.buffers.rows == 0 and pipeline.journal.position == pipeline.committed
                    and pipeline.staged is None):
                continue
        job = pipeline.next_job()
        gate.cut_made()
        stats = pipeline.storage_stats
        stats.flush_busy_since = trio.current_time()
        defer = now - last_publish < interval
        if not defer:
            last_publish = now
        try:
            _, seconds = await trio.to_thread.run_sync(_commit, pipeline, job, defer)
        except OSError as exc:
            stats.disk_errors += 1
            episode.failed(exc)
            gate.set_failing(True)
            continue
        finally:
            stats.flush_busy_since = None
        stats.flush_durations.observe(seconds)
        stats.last_flush, stats.flushes = time.time(), stats.flushes + 1
        episode.succeeded()
        gate.set_failing(False)
        if pipeline.memory is not None:
            pipeline.memory.released()


async def run_storage(pipeline: Pipeline, policy: FlushPolicy) -> None:
    """Run both storage tasks until cancelled. The caller commits the rest with `close()`."""
    pipeline.gate = gate = FlushGate(policy.max_rows * 2, soft_limit=policy.max_rows,
                                     soft_bytes=policy.max_memory_bytes // FLUSH_SHARE_OF_MEMORY)
    pipeline.memory = MemoryCap(policy.max_memory_bytes, lambda: pipeline.held_bytes, gate.nudge)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_group_commit, pipeline, policy)
        nursery.start_soon(run_flusher, pipeline, policy, gate)
