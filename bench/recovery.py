"""Journal replay rate after a crash: journal N small frames through the real pipeline and Outpoll
decoder, fsync, drop the process state (as kill -9 would), and time the recovery."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from bench.sender import payloads
from recorder import journal as jr
from recorder.pipeline import Pipeline
from recorder.venues import outpoll


def run(work: Path, frames: int = 500_000) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    spec = outpoll.FeedSpec(stream="chance")

    def pipeline() -> Pipeline:
        return Pipeline(work / "data", work / "journal", lambda feed: outpoll.make_decoder(spec)).open()

    p = pipeline()
    texts = [t.decode() for t in payloads("small", frames)]  # times increasing, as a live stream sends them
    p.ingest(jr.Entry(kind=jr.Kind.OPEN, ts_recv=1, seq=0, feed="f", venue="outpoll", conn_id="c", text="ws://x"))
    run_len = 256  # frames per socket read, as the live path journals them (one entry per read)
    for i in range(0, frames, run_len):
        batch = [texts[(i + k) % len(texts)] for k in range(min(run_len, frames - i))]
        p.ingest_frames("f", "outpoll", "c", i + 1, 1_767_225_600_000_000 + i, batch)
    p.journal.sync()
    os.close(p._lock_fd)  # the process "dies" here: nothing committed, everything journaled
    del p
    t = time.perf_counter()
    p2 = pipeline()
    replay = time.perf_counter() - t
    t = time.perf_counter()
    p2.close()
    commit = time.perf_counter() - t
    return {"frames": p2.replayed, "replay_seconds": replay, "replay_rate": p2.replayed / replay,
            "commit_seconds": commit}
