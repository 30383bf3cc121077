"""Lake figures (issue 13): catalog commit latency for 1, 4 and 8 writers, and one recorder's
ingest rate in lake mode against plain mode, in the same run. Starts its own PostgreSQL
(Debian's binaries, as the tests do). Not part of `make test`.

    python -m bench.lake [--flushes N] [--frames N] [--repeats R] [--writers 1,4,8]

A committer process makes flushes of a few hundred rows over three tables (the shape of a busy
recorder's flush) and times `publish` alone: the ledger check and the one transaction that
registers the files and the ledger row. Ingest runs the bench sender and client (bench/run.py)
with the storage pointed at the plain root or at the lake, and compares the rates with the final
flush included (frames / (receiving + close)): a lake writer holds flushes back for up to
`lake_publish_ms` and writes them together, so the rate while receiving alone would leave up to a
second of its writing outside the measurement (it is printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

OUT = Path("bench-out")


def committer(catalog: str, data_path: str, journal: str, flushes: int, password_env: str) -> None:
    """One writer: `flushes` flushes of 300 synthetic frames; prints publish seconds as JSON. A
    publish that fails (DuckLake gave up retrying a conflict with other writers' commits) is tried
    again, as the storage task does: the time counts every try until it lands."""
    from helpers import SyntheticDecoder, frame

    from recorder.pipeline import Pipeline
    from recorder.store.errors import StoreUnavailable
    from recorder.store.lake import LakeStore
    from recorder.store.settings import LakeSettings

    settings = LakeSettings(catalog=catalog, data_path=data_path, password=os.environ[password_env])
    p = Pipeline(Path(journal) / "unused", Path(journal), lambda f: SyntheticDecoder(), store=LakeStore(settings)).open()
    times = []
    retries = 0
    seq = 0
    for _ in range(flushes):
        for _ in range(300):
            seq += 1
            p.ingest(frame(seq, conn=Path(journal).name))
        job = p.cut()
        p.checkpoint(job)
        t0 = time.perf_counter()
        while True:
            try:
                p.commit(job)  # staged already: publishes only
                break
            except StoreUnavailable:
                retries += 1
                time.sleep(0.05)
        times.append(time.perf_counter() - t0)
    p.close()
    print(json.dumps({"times": times, "retries": retries}), flush=True)


def commit_latency(pg, writers: int, flushes: int, work: Path) -> dict:
    from pgserver import PASSWORD_ENV

    catalog = "ducklake:postgres:" + pg.create_database()
    data = work / f"lake-{writers}"
    data.mkdir(parents=True)
    # one writer first creates the tables, so the measured ones do not race to create them
    subprocess.run([sys.executable, "-m", "bench.lake", "--committer", catalog, str(data), str(work / f"j{writers}-init"),
                    "1", PASSWORD_ENV], check=True, capture_output=True, cwd=ROOT)
    procs = [subprocess.Popen([sys.executable, "-m", "bench.lake", "--committer", catalog, str(data),
                               str(work / f"j{writers}-{w}"), str(flushes), PASSWORD_ENV],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for w in range(writers)]
    times, retries = [], 0
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"committer failed ({proc.returncode})")
        doc = json.loads(out.strip().splitlines()[-1])
        times.extend(doc["times"])
        retries += doc["retries"]
    q = statistics.quantiles(times, n=100, method="inclusive")
    return {"writers": writers, "commits": len(times), "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "max_ms": round(max(times) * 1000, 1), "retried": retries}


def ingest(pg, frames: int, repeats: int, work: Path) -> dict:
    from pgserver import PASSWORD_ENV

    from bench.run import client, sender_running

    catalog = "ducklake:postgres:" + pg.create_database()
    lake = {"catalog": catalog, "password_env": PASSWORD_ENV, "data_path": str(work / "ingest-lake")}
    best: dict = {}
    runs: dict = {"plain": [], "lake": []}
    key = "rate_with_final_flush"
    with sender_running("small", frames) as port:
        for _ in range(repeats):
            for mode, storage in (("plain", {}), ("lake", lake)):
                r = client("recorder", "websockets", "small", port, frames, storage)
                runs[mode].append(round(r[key]))
                if mode not in best or r[key] > best[mode][key]:
                    best[mode] = r
                print(f"  ingest {mode:5} {r[key]:>10,.0f} frames/s with the final flush ({r['rate']:,.0f} while"
                      f" receiving), CPU us/frame loop {r['loop_cpu_us_per_frame']} process"
                      f" {r['process_cpu_us_per_frame_with_close']} with the final flush, visible p50/p99"
                      f" {r['visible_ms_p50']}/{r['visible_ms_p99']} ms", flush=True)
    return {"plain": best["plain"], "lake": best["lake"], "runs": runs, "rate": key,
            "lake_over_plain": round(best["lake"][key] / best["plain"][key], 3),
            "lake_over_plain_receiving": round(best["lake"]["rate"] / best["plain"]["rate"], 3)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--committer":
        catalog, data, journal, flushes, env = sys.argv[2:7]
        committer(catalog, data, journal, int(flushes), env)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--flushes", type=int, default=50, help="flushes per writer")
    ap.add_argument("--writers", default="1,4,8")
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames per ingest run")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from pgserver import PASSWORD, PASSWORD_ENV, PostgresServer, _bindir

    if _bindir() is None:
        sys.exit("PostgreSQL not installed: apt-get install postgresql")
    work = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    os.chmod(work, 0o755)
    pg = PostgresServer(_bindir(), work / "pg")
    (work / "pg").mkdir()
    pg.init()
    os.environ[PASSWORD_ENV] = PASSWORD
    results: dict = {"command": " ".join(["python -m bench.lake"] + sys.argv[1:])}
    try:
        print("catalog commit latency (publish: ledger check + one transaction):", flush=True)
        results["commit_latency"] = []
        for w in (int(x) for x in a.writers.split(",") if x):
            r = commit_latency(pg, w, a.flushes, work)
            results["commit_latency"].append(r)
            print(f"  {w} writers: {r['commits']} commits, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms,"
                  f" max {r['max_ms']} ms, {r['retried']} tried again", flush=True)
        print("ingest, one recorder, lake vs plain (same run, interleaved):", flush=True)
        results["ingest"] = ingest(pg, a.frames, a.repeats, work)
        print(f"  lake / plain: {results['ingest']['lake_over_plain']:.3f} with the final flush"
              f" ({results['ingest']['lake_over_plain_receiving']:.3f} while receiving)", flush=True)
    finally:
        pg.stop()
    OUT.mkdir(exist_ok=True)
    (OUT / "lake.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {OUT / 'lake.json'}")


if __name__ == "__main__":
    main()
