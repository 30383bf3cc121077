"""The daemon: one nursery with a task per feed, the storage tasks, and a periodic summary.

    run_recorder(config)   opens the pipeline (recovering from the journal), runs until
                           cancelled or `stop` is set, then stops the feeds (each journals its
                           close), stops the storage tasks and commits everything left.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from typing import Callable

import trio

from .config import Config
from .http.status import Sources
from .http.live import run_live_page
from .http.window import open_listeners, routes, run_window
from .feed import Feed
from .pipeline import Pipeline
from .storage import run_storage
from .venues import registry

log = logging.getLogger("recorder")


MIB = 1024 * 1024


def tune_malloc() -> None:
    """glibc's malloc for a process that allocates and frees buffers of 0.1-4 MB all the time
    (socket reads, a run's journal entry, Arrow columns, Parquet pages). No-op off glibc.

    - mmap threshold fixed at 4 MiB, trim threshold 8 MiB: by default glibc mmaps a block of 128 KiB
      or more and unmaps it when freed, so every such buffer is page-faulted and zeroed again
      (measured: ~15% of the recorder's CPU on order books, in the kernel); fixed, the threshold
      also stops glibc raising it on its own (up to 32 MiB), which put every large read on the heap.
    - One arena: threads' freed memory is reused by every thread, not held per thread.
    - After each Parquet flush, `malloc_trim(0)` (storage.release_memory, in the flush's worker
      thread) returns the free pages of the heap to the system, so what the heap keeps between
      flushes is reused within a flush and does not accumulate (peak RSS, see docs/PROFILE.md).
    Before this, the threshold was 64 KiB: the same peak RSS, ~25% more CPU a book frame."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 4 * MIB)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 8 * MIB)  # M_TRIM_THRESHOLD
        libc.mallopt(-8, 1)  # M_ARENA_MAX
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    from . import storage

    storage.release_memory = lambda: trim(0)


def tune_gc() -> None:
    """Collect cyclic garbage less often. The ingest path allocates millions of short-lived tuples and
    records but makes almost no reference cycles, and with the default thresholds the collector took
    about a quarter of the per-frame time (measured: full recorder ~45k -> ~52k frames/s, same peak RSS). What
    exists at startup (modules, config, restored state) is frozen out of every collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)


def tune_arrow() -> None:
    """Arrow buffers from the C library's malloc (so, with tune_malloc, those of 4 MiB or more are
    mmapped and go back to the system when freed, the others at the next flush's malloc_trim)
    instead of pyarrow's default mimalloc pool, which keeps
    freed pages for reuse: over 1M frames, peak RSS ~245 -> ~185 MB, same rate (make bench).
    This covers what pyarrow's Python calls allocate. Arrow's C++ internals (the Parquet writer's
    encoders) take the C++ default pool, chosen once from ARROW_DEFAULT_MEMORY_POOL when pyarrow
    loads: the `recorder` command sets it to "system" before importing anything (cli.py). Left
    on mimalloc, the first Parquet writer reserved a 1 GiB arena that held 30-40 MB of freed
    pages: peak RSS over 1M frames ~190 -> ~160 MB with it set."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    if pa.default_memory_pool().backend_name != "system" and "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        log.info("pyarrow was loaded before ARROW_DEFAULT_MEMORY_POOL=system could be set: the Parquet"
                 " writer keeps using %s (more memory held after flushes)", pa.default_memory_pool().backend_name)


def tune_threads() -> None:
    """Hand the GIL over every 0.5 ms instead of 5 ms. The Parquet flush runs in a worker thread
    that drops the GIL inside Arrow and must take it back between calls; with the event loop busy
    reading frames, each take-back waited up to the whole interval, so flushes fell behind and
    rows piled up. Measured over 1M frames (make bench): peak RSS ~215 -> ~170 MB and a higher
    frame rate, the flush keeping up."""
    sys.setswitchinterval(float(os.environ.get("RECORDER_SWITCH_INTERVAL", "0.0005")))


def tune_process() -> None:
    """Process-wide settings for the daemon (not for a library caller): malloc, Arrow's pool,
    the GIL's switch interval, GC."""
    tune_malloc()
    tune_arrow()
    tune_threads()
    tune_gc()


def make_pipeline(config: Config) -> Pipeline:
    feeds = {f.name: f for f in config.feeds}

    def decoder_for(name: str):
        f = feeds.get(name)
        return registry.module(f.venue).make_decoder(f.spec) if f else None

    from .store import open_store

    return Pipeline(config.storage.root, config.storage.journal, decoder_for,
                    segment_bytes=config.storage.segment_bytes, store=open_store(config.storage))


async def run_summary(pipeline: Pipeline, feeds: list[Feed], interval: float) -> None:
    """One line per feed every `interval` seconds: frames, rows, rejects, age of the last frame."""
    while True:
        await trio.sleep(interval)
        now = time.time_ns() // 1000
        for f in feeds:
            s = pipeline.stats.get(f.cfg.name)
            if s is None:
                log.info("feed %s: no frame yet (%d connection attempts)", f.cfg.name, f.connections)
                continue
            age = (now - s.last_frame) / 1e6 if s.last_frame else float("nan")
            log.info("feed %s: %d frames, %d rows, %d rejects, last frame %.1f s ago", f.cfg.name, s.frames,
                     s.rows, s.rejects, age, extra={"fields": {"frames": s.frames, "rows": s.rows,
                                                               "rejects": s.rejects, "last_frame_age_seconds": age}})


async def run_compaction(config: Config) -> None:
    """Compact closed partitions (dated before today, UTC) every `compact_interval` seconds."""
    import datetime as dt

    from .compact import compact

    while True:
        await trio.sleep(config.storage.compact_interval)
        if config.storage.lake is not None:
            await run_lake_maintenance(config)
            continue
        today = dt.datetime.now(dt.timezone.utc).date()
        try:
            results = await trio.to_thread.run_sync(lambda: compact(config.storage.root, before=today))
        except OSError as exc:
            log.error("compaction failed: %s; the partitions are unchanged, retrying next interval", exc)
            continue
        if results:
            log.info("compacted %d partitions (%d files into %d)", len(results),
                     sum(r.files_before for r in results), sum(r.files_after for r in results))


async def run_lake_maintenance(config: Config) -> None:
    """One lake maintenance run (merge, expiry, cleanup) in a worker thread; a catalog outage is logged."""
    from .store.errors import StoreUnavailable
    from .store.maintenance import maintain

    try:
        result = await trio.to_thread.run_sync(maintain, config.storage.lake)
    except StoreUnavailable as exc:
        log.error("lake maintenance failed: %s; retrying next interval", exc)
        return
    if not result.skipped:
        log.info("lake maintenance: %d files merged, %d snapshots expired, %d old files deleted",
                 result.merged, result.expired, result.deleted)


async def run_recorder(config: Config, *, stop: trio.Event | None = None, listeners: list | None = None,
                       on_http: Callable[[str], None] | None = None,
                       task_status=trio.TASK_STATUS_IGNORED) -> Pipeline:
    """Record every configured feed until `stop` is set (or the task is cancelled). With [http],
    the window (/metrics, /healthz, /status) is served on `listeners` (bound here if not given);
    `on_http(url)` is called once it listens."""
    started = time.time()
    if config.http is not None and listeners is None:
        listeners = await open_listeners(config.http)
    pipeline = await trio.to_thread.run_sync(make_pipeline(config).open)
    log.info("recording %d feeds into %s (journal %s)", len(config.feeds), config.storage.root,
             config.storage.journal)
    try:
        async with trio.open_nursery() as storage:
            storage.start_soon(run_storage, pipeline, config.storage.policy)
            feeds = [Feed(f, pipeline) for f in config.feeds]
            async with trio.open_nursery() as nursery:
                for feed in feeds:
                    nursery.start_soon(feed.run, name=f"feed {feed.cfg.name}")
                nursery.start_soon(run_summary, pipeline, feeds, config.summary_interval)
                if listeners:
                    sources = Sources(config=config, pipeline=pipeline, feeds=tuple(feeds), started=started)
                    table = routes(sources)  # path -> handler: more pages add their entries here
                    await nursery.start(run_live_page, sources, table)  # /, /api/*: the live page
                    url = await nursery.start(run_window, sources, listeners, table)
                    if on_http is not None:
                        on_http(url)
                if config.storage.compact:
                    nursery.start_soon(run_compaction, config)
                task_status.started(pipeline)
                if stop is not None:
                    await stop.wait()
                    nursery.cancel_scope.cancel()
            storage.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(pipeline.close)
            log.info("stopped; everything received is committed to %s", config.storage.root)
    return pipeline


async def run_until_signal(config: Config) -> None:
    """`recorder run`: record until SIGINT or SIGTERM, then flush and return."""
    tune_process()
    stop = trio.Event()
    listeners = await open_listeners(config.http) if config.http is not None else None  # a taken port: ConfigError
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async def wait_signal() -> None:
                async for signum in signals:
                    log.info("received %s: stopping feeds and flushing", signal.Signals(signum).name)
                    stop.set()
                    return

            nursery.start_soon(wait_signal)
            await run_recorder(config, stop=stop, listeners=listeners)
            nursery.cancel_scope.cancel()
