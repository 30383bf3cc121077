"""The memory cap (storage.max_memory_mb): what is held while the disk is unavailable is counted,
feeds stop reading at the cap, nothing held is dropped, and it is all written once space returns."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import trio

from conftest import ROOT, trio_test
from helpers import frame, open_pipeline
from recorder import config as cfgmod
from recorder.dataset import Dataset
from recorder.supervisor import run_recorder
from test_reliability import fill, small_fs  # noqa: F401 - the tmpfs fixture

MB = 1024 * 1024


def test_held_bytes_count_the_journal_queue_buffered_rows_and_an_uncommitted_flush(tmp_path):
    """held_bytes grows with what is ingested, moves from the buffers to the cut flush, and falls
    to zero once the flush is committed (journal written, rows in Parquet)."""
    p = open_pipeline(tmp_path, batch_rows=100)
    assert p.held_bytes == 0
    for i in range(1, 1001):
        p.ingest(frame(i))
    queued, buffered = p.journal.queued_bytes, p.buffers.held_bytes
    assert queued > 1000 * 60 and buffered > 1000 * 60  # every frame is in the journal queue and in raw rows
    assert p.held_bytes == queued + buffered
    job = p.next_job()
    assert p.buffers.held_bytes == 0 and job.flush.nbytes > 0
    assert p.held_bytes == queued + job.flush.nbytes
    p.commit(job)
    assert p.held_bytes == 0
    p.close()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


FRAMES = 400_000
CAP_MB = 8
OVERHEAD_MB = 40  # stated: allocator slack, the transport's queue, one run, Arrow's working memory


@trio_test(timeout=110)
async def test_memory_cap_holds_through_a_full_disk_and_everything_held_is_written_once(small_fs):  # noqa: F811
    """A flood (the benchmark sender, as fast as the recorder reads) while the disk is full: the
    feed stops reading at the cap (TCP pushes back), RSS stays under what it was before the
    outage plus the cap plus a stated overhead, and once space returns every frame is written
    exactly once."""
    sender = subprocess.Popen([sys.executable, "-m", "bench.sender", "--mix", "small", "--frames", str(FRAMES)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = int(sender.stdout.readline().split()[1])
        cfg = cfgmod.parse({"storage": {"root": str(small_fs / "data"), "max_memory_mb": CAP_MB, "max_age_seconds": 0.5,
                                        "commit_interval_ms": 50, "max_rows": 20_000, "segment_mb": 1},
                            "feeds": [{"name": "flood", "venue": "outpoll", "stream": "chance",
                                       "url": f"ws://127.0.0.1:{port}/ws", "stale_seconds": 60,
                                       "subscriptions": [{"event": "evt-1", "outcomes": ["evt-1-o0"]}]}],
                            "http": {"listen": "127.0.0.1:0"}}, environ={})
        stop = trio.Event()
        seen = {"paused": 0, "held_max": 0, "rss_max": 0.0, "metrics": ""}
        urls: list[str] = []
        async with trio.open_nursery() as nursery:
            pipeline = await nursery.start(lambda task_status: run_recorder(cfg, stop=stop, on_http=urls.append,
                                                                            task_status=task_status))

            def frames() -> int:
                s = pipeline.stats.get("flood")
                return s.frames if s else 0

            while frames() < 40_000:  # recording normally, flushes included
                await trio.sleep(0.02)
            rss_before = max(_rss_mb() for _ in range(3))
            filler = await trio.to_thread.run_sync(fill, small_fs)
            full_until = None
            while full_until is None or time.monotonic() < full_until:
                await trio.sleep(0.01)
                seen["held_max"] = max(seen["held_max"], pipeline.held_bytes)
                seen["rss_max"] = max(seen["rss_max"], _rss_mb())
                if pipeline.memory.paused:
                    seen["paused"] += 1
                    if full_until is None:
                        full_until = time.monotonic() + 2.0  # stay full a while at the cap
                        seen["metrics"] = await trio.to_thread.run_sync(
                            lambda: urllib.request.urlopen(urls[0] + "/metrics", timeout=10).read().decode())
            assert frames() < FRAMES  # the flood was held back, not all read while the disk was full
            filler.unlink()
            while frames() < FRAMES:
                await trio.sleep(0.05)
            stop.set()
        with Dataset.open(small_fs / "data") as ds:
            counts = ds.sql("SELECT count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi FROM raw").to_pylist()
            sessions = ds.sql("SELECT count(*) AS n FROM sessions").to_pylist()
    finally:
        sender.kill()
        sender.wait()
    print(f"memory cap {CAP_MB} MB: RSS before the outage {rss_before:.0f} MB, max during it {seen['rss_max']:.0f} MB;"
          f" held max {seen['held_max'] / MB:.1f} MB; {seen['paused']} samples paused")
    assert seen["paused"] > 0
    # The window shows it: the paused feed, and what is held against the cap.
    assert 'recorder_feed_paused{feed="flood"} 1.0' in seen["metrics"]
    def value(name: str) -> float:
        return float(seen["metrics"].split(f"\n{name} ")[1].split()[0])

    assert 0 < value("recorder_held_bytes") <= (CAP_MB + 1) * MB and value("recorder_memory_limit_bytes") == CAP_MB * MB
    assert seen["held_max"] <= (CAP_MB + 1) * MB  # the cap, passed by at most one run
    assert seen["rss_max"] <= rss_before + CAP_MB + OVERHEAD_MB, seen
    assert counts == [{"n": FRAMES, "d": FRAMES, "lo": 1, "hi": FRAMES}]
    assert sessions == [{"n": 1}]  # the sender kept the connection: no gap


def test_max_memory_mb_is_read_and_checked():
    """storage.max_memory_mb sets the cap in bytes (default 512 MB); zero or less is a clear error."""
    cfg = cfgmod.parse({"storage": {"root": "d"}}, environ={})
    assert cfg.storage.policy.max_memory_bytes == 512 * MB
    assert cfgmod.parse({"storage": {"root": "d", "max_memory_mb": 64}}, environ={}).storage.policy.max_memory_bytes == 64 * MB
    with pytest.raises(cfgmod.ConfigError, match="storage.max_memory_mb must be positive"):
        cfgmod.parse({"storage": {"root": "d", "max_memory_mb": 0}}, environ={})


TRIM_PROBE = r"""
import json, sys
from pathlib import Path
from recorder import storage
from recorder.supervisor import tune_malloc

def rss():
    return next(int(l.split()[1]) // 1024 for l in Path("/proc/self/status").read_text().splitlines()
                if l.startswith("VmRSS:"))

tune_malloc()
base = rss()
big, pins = [], []
for _ in range(200):  # 1 MiB blocks (under the 4 MiB mmap threshold: on the heap), each pinned in place
    big.append(b"\x01" * (1 << 20))  # written: its pages resident
    pins.append(b"\x02" * (128 << 10))  # a block above it (from the top: too big for the free lists), so
    # freeing the big ones leaves holes, not a free top glibc would trim by itself
held = rss()
del big
freed = rss()
storage.release_memory()
print(json.dumps({"base": base, "held": held, "freed": freed, "trimmed": rss()}))
"""


def test_the_daemon_hands_freed_heap_back_after_a_flush(tmp_path):
    """With the daemon's malloc settings (supervisor.tune_malloc), freed blocks under the mmap
    threshold stay in the heap, holes between live blocks included: storage.release_memory, which
    the flusher calls after every flush, gives their pages back (a subprocess: mallopt is global)."""
    import json

    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, timeout=60, check=True)
    m = json.loads(out.stdout)
    assert m["held"] - m["base"] >= 210, m  # 225 MiB really held
    assert m["freed"] - m["base"] >= 150, m  # freed but kept by the heap (the holes cannot be trimmed from the top)
    assert m["trimmed"] - m["base"] <= 25 + 20, m  # handed back: the 25 MiB of pins stay (and some slack)


def test_the_flusher_releases_memory_after_every_flush(tmp_path, monkeypatch):
    """storage.release_memory runs in the flush's worker thread after each flush, failed ones too."""
    import threading

    from helpers import open_pipeline
    from recorder import storage
    from recorder.storage import FlushPolicy, run_storage

    calls: list[tuple[int, int]] = []  # (thread id, committed position) at each call
    p = open_pipeline(tmp_path)
    monkeypatch.setattr(storage, "release_memory", lambda: calls.append((threading.get_ident(), p.committed)))
    policy = FlushPolicy(max_rows=50, max_age=3600, commit_interval=30, retry_interval=30)

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_storage, p, policy)
            with trio.fail_after(5):
                while p.gate is None:
                    await trio.sleep(0.01)
            for round_no in range(3):
                for i in range(1, 61):
                    p.ingest(frame(round_no * 60 + i))
                p.gate.nudge()
                with trio.fail_after(5):
                    while p.committed != p.journal.position or len(calls) <= round_no:
                        await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    p.close()
    assert len(calls) == 3, calls
    assert all(t != threading.get_ident() for t, _ in calls)  # in the worker thread, not the event loop
    assert len({pos for _, pos in calls}) == 3  # once after each of the three flushes
