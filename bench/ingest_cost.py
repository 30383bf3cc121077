"""The recorder's own CPU per frame for one mix, in process and without a transport: the journal,
decoding, column buffers and Parquet commits, all on this thread. Steadier than a full client run
on a shared machine (no socket, no scheduling between threads). Prints one JSON line.

    python -m bench.ingest_cost [--mix books] [--frames 300000] [--run 514]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as the `recorder` command does (cli.py)

from bench.client import feed_for  # noqa: E402
from bench.sender import payloads  # noqa: E402
from recorder import config as cfgmod  # noqa: E402
from recorder.supervisor import make_pipeline, tune_process  # noqa: E402

US_0 = 1_760_000_000_000_000


def measure(mix: str, frames: int, run: int) -> dict:
    texts = [p.decode() for p in payloads(mix, min(frames, 100_000))]
    root = Path(tempfile.mkdtemp(prefix="bench-")) / "data"
    cfg = cfgmod.parse({"storage": {"root": str(root)}, "feeds": [feed_for(mix, "ws://127.0.0.1:1/", "websockets")]})
    venue, max_rows = cfg.feeds[0].venue, cfg.storage.policy.max_rows
    p = make_pipeline(cfg).open()
    tune_process()
    ingest = commit = 0.0
    start = time.process_time()
    for i in range(0, frames, run):
        batch = [texts[k % len(texts)] for k in range(i, min(i + run, frames))]
        a = time.process_time()
        p.ingest_frames("bench", venue, "c1", i + 1, US_0 + i, batch)
        b = time.process_time()
        ingest += b - a
        if p.buffers.rows >= max_rows:
            p.commit(p.next_job())
            commit += time.process_time() - b
    a = time.process_time()
    p.close()
    commit += time.process_time() - a
    total = time.process_time() - start
    return {"mix": mix, "frames": frames, "ingest_us_per_frame": round(ingest / frames * 1e6, 2),
            "commit_us_per_frame": round(commit / frames * 1e6, 2), "total_us_per_frame": round(total / frames * 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mix", default="books")
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--run", type=int, default=514, help="frames per run (514: what one 256 KB read brings of books)")
    a = ap.parse_args()
    print(json.dumps(measure(a.mix, a.frames, a.run)), flush=True)


if __name__ == "__main__":
    main()
