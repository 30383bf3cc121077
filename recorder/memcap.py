"""The memory cap: a bound on everything the recorder holds while it cannot write it out.

What is held: the journal's queue (bytes appended but not yet written, which grows while the
disk is full), the rows buffered for Parquet, and the flush cut but not yet committed (a commit
that keeps failing). `Pipeline.held_bytes` adds them up; a future catalog (DuckLake) adds what it
holds there too. At `limit_bytes`, every feed stops reading its socket before its next read:
its transport's queue fills, the transport stops reading, and TCP pushes back on the venue. If a
venue then drops the connection, the gap shows in `sessions` like any other. Nothing held is
dropped; feeds read again once a journal write or a Parquet commit has brought the held bytes
back under the limit.

The held bytes can pass the limit by at most one run of frames per feed (the run read just before
the limit was reached: a transport hands over at most 1,024 messages at a time), plus what is
outside this count: the interpreter and libraries, each transport's queue (up to 8,192 messages),
the decoders' dedupe windows, and a flush's working memory while it writes.

Plain attributes for the metrics: `held_bytes()` (also `Pipeline.held_bytes`), `limit_bytes`,
`paused` (names of the feeds waiting now), `pauses` (how many times a feed has waited); each
`Feed` has `paused` and `paused_seconds`.
"""

from __future__ import annotations

import logging
from typing import Callable

import trio

log = logging.getLogger(__name__)

MB = 1024 * 1024


class MemoryCap:
    """Feeds wait at `wait_below()` while `held_bytes()` is at `limit_bytes` or more; the storage
    tasks call `released()` after every journal write and Parquet commit that succeeds."""

    def __init__(self, limit_bytes: int, held_bytes: Callable[[], int], request_flush: Callable[[], None]) -> None:
        self.limit_bytes = limit_bytes
        self.held_bytes = held_bytes
        self._request_flush = request_flush
        self._released = trio.Event()
        self.paused: set[str] = set()
        self.pauses = 0

    def over(self) -> bool:
        return self.held_bytes() >= self.limit_bytes

    def released(self) -> None:
        """Something held was written out: waiting feeds look at the held bytes again."""
        self._released.set()
        self._released = trio.Event()

    async def wait_below(self, feed: str) -> None:
        """Return once less than the limit is held (at once if it already is). Asks for a flush
        while waiting: a commit is what frees buffered rows."""
        if not self.over():
            return
        self.paused.add(feed)
        self.pauses += 1
        log.warning("feed %s: %.1f MB held (limit %.1f MB, storage.max_memory_mb): not reading until it is written",
                    feed, self.held_bytes() / MB, self.limit_bytes / MB)
        try:
            while self.over():
                self._request_flush()
                await self._released.wait()
        finally:
            self.paused.discard(feed)
        log.warning("feed %s: reading again (%.1f MB held)", feed, self.held_bytes() / MB)
