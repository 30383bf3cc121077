"""A writer process for crash tests: ingests numbered frames as fast as it can through the real
pipeline and storage tasks (group commit, small flushes), in runs as socket reads deliver them,
and prints the highest frame id known fsynced after every journal sync. The test kills it with SIGKILL at random moments.

    python crash_writer.py ROOT RUN_NUMBER [--frames N] [--catalog C --data-path D [--password-env V]]

With --catalog the writer records into a DuckLake lake (store/lake.py) instead of ROOT/data.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))
from helpers import SyntheticDecoder  # noqa: E402

from recorder import journal as jr  # noqa: E402
from recorder.pipeline import Pipeline  # noqa: E402
from recorder.storage import FlushPolicy, run_storage  # noqa: E402

BASE_TS = 1_760_000_000_000_000


def make_store(a):
    if not a.catalog:
        return None
    import os

    from recorder.store.lake import LakeStore
    from recorder.store.settings import LakeSettings

    extra = {} if a.publish_seconds is None else {"publish_seconds": a.publish_seconds}
    return LakeStore(LakeSettings(catalog=a.catalog, data_path=a.data_path, password_env=a.password_env,
                                  password=os.environ.get(a.password_env) if a.password_env else None, **extra))


async def main(root: Path, run: int, frames: int, store=None, conn_prefix: str = "run", pause: float = 0.0,
               max_age: float = 0.15) -> None:
    pipeline = Pipeline(root / "data", root / "journal", lambda feed: SyntheticDecoder(), segment_bytes=256 * 1024,
                        store=store)
    pipeline.open()
    print(f"ready replayed={pipeline.replayed}", flush=True)
    policy = FlushPolicy(max_rows=3000, max_age=max_age, commit_interval=0.02, retry_interval=0.05)
    conn = f"{conn_prefix}{run}"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_storage, pipeline, policy)
        if frames == 0:  # recovery only: commit what was replayed and exit cleanly
            nursery.cancel_scope.cancel()
        else:
            pipeline.ingest(jr.Entry(kind=jr.Kind.OPEN, ts_recv=BASE_TS, seq=0, feed="f1", venue="synthetic",
                                     conn_id=conn, text="ws://synthetic"))
            last_durable = 0
            rng = random.Random(run)
            i = 1
            while i <= frames:
                # runs of frames as socket reads deliver them (one FRAMES entry each), and now and
                # then a single FRAME entry, the other kind recovery must read
                n = min(rng.choice((1, 3, 17, 64, 256)), frames - i + 1)
                texts = [json.dumps({"i": k, "m": f"m{k % 7}", "o": "Yes", "p": (k % 100) / 100, "t": BASE_TS + k})
                         for k in range(i, i + n)]
                if n == 1 and rng.random() < 0.5:
                    pipeline.ingest(jr.Entry(kind=jr.Kind.FRAME, ts_recv=BASE_TS + i, seq=i, feed="f1",
                                             venue="synthetic", conn_id=conn, text=texts[0]))
                else:
                    pipeline.ingest_frames("f1", "synthetic", conn, i, BASE_TS + i, texts)
                i += n
                if pause:
                    await trio.sleep(pause)
                if i - 1 - last_durable >= 200:
                    target = i - 1
                    await trio.to_thread.run_sync(pipeline.journal.sync)
                    last_durable = target
                    print(f"durable {target}", flush=True)
            nursery.cancel_scope.cancel()
    pipeline.close()
    print("closed", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("run", type=int)
    ap.add_argument("--frames", type=int, default=2_000_000)
    ap.add_argument("--catalog")
    ap.add_argument("--data-path")
    ap.add_argument("--password-env")
    ap.add_argument("--conn-prefix", default="run")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds between runs of frames (default: none)")
    ap.add_argument("--max-age", type=float, default=0.15, help="seconds between flushes")
    ap.add_argument("--publish-seconds", type=float, help="lake: publish at most this often (default: LakeSettings')")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trio.run(main, a.root, a.run, a.frames, make_store(a), a.conn_prefix, a.pause, a.max_age)
