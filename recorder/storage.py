"""The storage tasks: group-commit fsync of the journal and periodic Parquet flushes.

Both hand their disk work to worker threads, so the event loop (and with it every feed's read
loop) never waits on disk. A disk error (full, read-only, gone) is logged once per episode;
nothing buffered is dropped, the same flush is retried until it succeeds, and the journal keeps
everything meanwhile (in memory until it can be written).
"""

from __future__ import annotations

import logging

import attrs
import trio

from .pipeline import Pipeline

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class FlushPolicy:
    max_rows: int = 100_000  # flush when this many rows are buffered
    max_age: float = 60.0  # seconds between flushes while rows are buffered
    commit_interval: float = 0.2  # journal group-commit fsync interval, seconds
    retry_interval: float = 5.0  # after a disk error, seconds before trying again


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


async def run_group_commit(pipeline: Pipeline, policy: FlushPolicy) -> None:
    """fsync the journal every `commit_interval` while there is something new."""
    episode = _Episode("journal write")
    journal = pipeline.journal
    while True:
        await trio.sleep(policy.retry_interval if episode.failing else policy.commit_interval)
        if journal.position > journal.durable or episode.failing:
            try:
                await trio.to_thread.run_sync(journal.sync)
                episode.succeeded()
            except OSError as exc:
                episode.failed(exc)


async def run_flusher(pipeline: Pipeline, policy: FlushPolicy) -> None:
    """Flush when `max_rows` rows are buffered or `max_age` seconds have passed."""
    episode = _Episode("Parquet flush")
    next_due = trio.current_time() + policy.max_age
    while True:
        await trio.sleep(policy.retry_interval if episode.failing else policy.commit_interval)
        now = trio.current_time()
        if pipeline.unfinished is None:
            if pipeline.buffers.rows < policy.max_rows and now < next_due:
                continue
            next_due = now + policy.max_age
            if pipeline.buffers.rows == 0 and pipeline.journal.position == pipeline.committed:
                continue
        try:
            await trio.to_thread.run_sync(pipeline.commit, pipeline.next_job())
        except OSError as exc:
            episode.failed(exc)
            continue
        episode.succeeded()


async def run_storage(pipeline: Pipeline, policy: FlushPolicy) -> None:
    """Run both storage tasks until cancelled. The caller commits the rest with `close()`."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_group_commit, pipeline, policy)
        nursery.start_soon(run_flusher, pipeline, policy)
