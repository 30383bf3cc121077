"""Compaction: one sorted file per partition, the same rows, safe for concurrent readers and
writers and under kill -9."""

from __future__ import annotations

import collections
import random
import signal
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq

from helpers import frame, open_pipeline
from recorder import compact, layout, schema
from recorder.dataset import Dataset

DAY = 86_400_000_000
T0 = 1_767_225_600_000_000


def build(root, files=12, per_file=400, days=2):
    """A dataset with `files` small files per partition, as a long run with frequent flushes makes."""
    p = open_pipeline(root, root / "journal")
    i = 0
    for _ in range(files):
        for _ in range(per_file):
            i += 1
            p.ingest(frame(i, ts=T0 + (i % days) * DAY, market=f"m{i % 5}"))
        p.commit(p.cut())
    return p, i


def contents(root):
    with Dataset.open(root / "data") as ds:
        rows = ds.sql("SELECT seq, market, probability, ts_event FROM chance").to_pylist()
    return collections.Counter(tuple(r.values()) for r in rows)


def test_compaction_merges_sorts_and_keeps_every_row(tmp_path):
    """Each partition becomes one file sorted by the sort keys, holding exactly the same rows."""
    p, n = build(tmp_path)
    p.close()
    before = contents(tmp_path)
    results = compact.compact(tmp_path / "data")
    assert {r.files_before for r in results} == {12} and all(r.files_after == 1 for r in results)
    assert contents(tmp_path) == before and sum(before.values()) == n
    for part in compact.partitions(tmp_path / "data", "chance"):
        (f,) = part.glob("*.parquet")
        t = pq.read_table(f)
        keys = list(zip(*(t.column(c).to_pylist() for c in schema.load("chance").sort_by)))
        assert keys == sorted(keys)
    assert not (tmp_path / "data" / compact.STAGING).exists()


def test_readers_never_see_a_row_twice_or_miss_one(tmp_path):
    """A reader querying in a loop while every partition is compacted always counts exactly n rows."""
    p, n = build(tmp_path, files=20, per_file=300, days=4)
    p.close()
    counts, errors, stop = [], [], threading.Event()

    def reader():
        try:
            with Dataset.open(tmp_path / "data") as ds:
                while not stop.is_set():
                    counts.append(ds.sql("SELECT count(*) AS n, count(DISTINCT seq) AS d FROM raw").to_pylist()[0])
        except Exception as exc:  # noqa: BLE001 - reported below: a reader must never fail
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.2)
    compact.compact(tmp_path / "data")
    time.sleep(0.2)
    stop.set()
    thread.join()
    assert errors == []
    assert len(counts) > 10
    assert all(c == {"n": n, "d": n} for c in counts), [c for c in counts if c != {"n": n, "d": n}][:3]


def test_a_file_published_during_compaction_is_kept(tmp_path):
    """A recorder publishing into the partition while it is compacted: its file survives the swap."""
    p, n = build(tmp_path, files=5, days=1)
    (live,) = compact.partitions(tmp_path / "data", "raw")

    def publish_meanwhile():
        for i in range(n + 1, n + 101):
            p.ingest(frame(i, ts=T0))
        p.commit(p.cut())  # renames into the live partition under the shared lock

    result = compact.compact_partition(tmp_path / "data", "raw", live, before_swap=publish_meanwhile)
    assert result.files_after == 2
    p.close()
    with Dataset.open(tmp_path / "data") as ds:
        assert ds.sql("SELECT count(*) AS n, count(DISTINCT seq) AS d FROM raw").to_pylist() == [{"n": n + 100, "d": n + 100}]


def test_kill_9_during_compaction_loses_nothing(tmp_path):
    """SIGKILL `recorder compact` at random moments, then finish: same rows, no staging left, all readable."""
    p, _ = build(tmp_path, files=30, per_file=300, days=3)
    p.close()
    before = contents(tmp_path)
    rng = random.Random(4)
    cmd = [sys.executable, "-m", "recorder.cli", "compact", "--data", str(tmp_path / "data")]
    for _ in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert contents(tmp_path) == before  # whatever the moment, readers see every row once
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert contents(tmp_path) == before
    assert all(len(list(part.glob("*.parquet"))) == 1 for t in ("chance", "raw")
               for part in compact.partitions(tmp_path / "data", t))
    for f in layout.data_files(tmp_path / "data"):
        pq.read_table(f)
    assert not (tmp_path / "data" / compact.STAGING).exists()
