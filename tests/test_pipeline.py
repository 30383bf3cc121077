"""The durable core: journal first, Parquet derived, recovery that neither loses nor duplicates."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from helpers import frame, open_pipeline, session
from recorder import journal as jr
from recorder import layout
from recorder.dataset import Dataset
from recorder.errors import JournalError
from recorder.pipeline import CRASH_REASON
from recorder.writer import write_files


def crash(p) -> None:
    """Simulate kill -9: flush what the OS would have (sync) and drop the object without closing."""
    p.journal.sync()
    os.close(p._lock_fd)
    p._lock_fd = None


def raw_seqs(root):
    with Dataset.open(root / "data") as ds:
        return sorted(ds.sql("SELECT seq FROM raw").column("seq").to_pylist())


def test_everything_is_written_once_on_clean_close(tmp_path):
    """Frames ingested then closed appear once in raw and once in chance."""
    p = open_pipeline(tmp_path)
    for i in range(1, 1001):
        p.ingest(frame(i))
    p.close()
    with Dataset.open(tmp_path / "data") as ds:
        assert ds.sql("SELECT count(*) AS n, count(DISTINCT seq) AS d FROM raw").to_pylist() == [{"n": 1000, "d": 1000}]
        assert ds.sql("SELECT count(*) AS n FROM chance").to_pylist() == [{"n": 1000}]


def test_replay_after_crash_writes_uncommitted_frames_once(tmp_path):
    """Frames committed before a crash are not written again; frames after it are replayed once."""
    p = open_pipeline(tmp_path)
    for i in range(1, 501):
        p.ingest(frame(i))
    p.commit(p.cut())
    for i in range(501, 801):
        p.ingest(frame(i))
    crash(p)
    p2 = open_pipeline(tmp_path)
    assert p2.replayed == 300
    assert p2.decoders["f1"].count == 800  # decoder state restored from the checkpoint, then replayed
    p2.close()
    assert raw_seqs(tmp_path) == list(range(1, 801))


def test_crash_after_checkpoint_before_rename_rolls_forward(tmp_path):
    """Files written and listed in the checkpoint but not yet renamed are published on recovery."""
    p = open_pipeline(tmp_path)
    for i in range(1, 101):
        p.ingest(frame(i))
    p.checkpoint(p.cut())  # the commit up to its commit point, not the renames
    assert not layout.data_files(p.root)
    crash(p)
    p2 = open_pipeline(tmp_path)
    assert p2.replayed == 0
    p2.close()
    assert raw_seqs(tmp_path) == list(range(1, 101))


def test_crash_before_checkpoint_discards_temporary_files_and_replays(tmp_path):
    """Temporary files of a flush that never committed are removed; the frames come back by replay."""
    p = open_pipeline(tmp_path)
    for i in range(1, 101):
        p.ingest(frame(i))
    job = p.cut()
    p.journal.sync()
    pairs = write_files(job.flush, p.root, instance=p.instance, flush_seq=job.flush_seq)
    assert all(t.exists() for t, _ in pairs)
    crash(p)
    p2 = open_pipeline(tmp_path)
    assert not any(t.exists() for t, _ in pairs)
    assert p2.replayed == 100
    p2.close()
    assert raw_seqs(tmp_path) == list(range(1, 101))


def test_unsynced_frames_are_lost_but_nothing_is_half_written(tmp_path):
    """Frames appended but never fsynced (killed before group commit) are absent, not corrupt."""
    p = open_pipeline(tmp_path)
    for i in range(1, 51):
        p.ingest(frame(i))
    p.journal.sync()
    for i in range(51, 61):
        p.ingest(frame(i))
    os.close(p._lock_fd)  # no sync: the last 10 frames only ever lived in memory
    p2 = open_pipeline(tmp_path)
    p2.close()
    assert raw_seqs(tmp_path) == list(range(1, 51))


def test_open_sessions_are_closed_after_a_crash(tmp_path):
    """A connection open at a crash gets a sessions row ending at its last frame, with a clear reason."""
    p = open_pipeline(tmp_path)
    p.ingest(session(jr.Kind.OPEN, "c1", 1_760_000_000_000_000, "ws://x"))
    for i in range(1, 11):
        p.ingest(frame(i))
    crash(p)
    open_pipeline(tmp_path).close()
    with Dataset.open(tmp_path / "data") as ds:
        (row,) = ds.sql("SELECT * FROM sessions").to_pylist()
    assert row["close_reason"] == CRASH_REASON
    assert row["frames"] == 10
    assert row["closed"] == row["last_frame"]


def test_committed_journal_segments_are_removed(tmp_path):
    """Segments whose frames are all in Parquet are deleted, so the disk does not fill."""
    p = open_pipeline(tmp_path, segment_bytes=4096)
    for i in range(1, 2001):
        p.ingest(frame(i))
    p.journal.sync()
    assert len(jr.segments(p.journal_dir)) > 10
    p.commit(p.cut())
    assert len(jr.segments(p.journal_dir)) <= 1
    p.close()


def test_a_second_recorder_on_the_same_journal_is_refused(tmp_path):
    """Two processes on one journal would corrupt it: the second gets a clear error."""
    p = open_pipeline(tmp_path)
    with pytest.raises(JournalError, match="in use by another recorder"):
        open_pipeline(tmp_path)
    p.close()


def test_two_recorders_share_one_root_without_collisions(tmp_path):
    """Recorders with their own journals write into one dataset root; file names never collide."""
    a = open_pipeline(tmp_path, tmp_path / "ja")
    b = open_pipeline(tmp_path, tmp_path / "jb")
    assert a.instance != b.instance
    for i in range(1, 101):
        a.ingest(frame(i, conn="a"))
        b.ingest(frame(i, conn="b"))
    a.close()
    b.close()
    with Dataset.open(tmp_path / "data") as ds:
        assert ds.sql("SELECT conn_id, count(*) AS n FROM raw GROUP BY ALL ORDER BY 1").to_pylist() == [
            {"conn_id": "a", "n": 100}, {"conn_id": "b", "n": 100}]


def test_files_are_partitioned_sorted_and_complete(tmp_path):
    """Rows land under venue=/date= of their event time, sorted by market then time within a file."""
    p = open_pipeline(tmp_path)
    day = 86_400_000_000
    base = 1_760_000_000_000_000 - 1_760_000_000_000_000 % day
    for i in range(1, 201):
        p.ingest(frame(i, ts=base + (day - 100_000 if i % 2 else day), market=f"m{i % 3}"))
    p.close()
    files = layout.data_files(tmp_path / "data", "chance")
    assert {f.parent.name for f in files} == {"date=2025-10-09", "date=2025-10-10"}
    assert all(f.parent.parent.name == "venue=synthetic" for f in files)
    for f in files:
        t = pq.read_table(f)
        keys = list(zip(t.column("market").to_pylist(), t.column("ts_event").to_pylist()))
        assert keys == sorted(keys)
        assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"
    assert not list((tmp_path / "data").rglob("*.tmp"))


def test_runs_of_frames_replay_once_beside_single_frames(tmp_path):
    """Runs of frames (the live path: one journal entry per socket read) and single frames, some
    committed and some not, come back after a crash exactly once each, in raw and decoded, a
    malformed frame inside a run going to rejects without losing its neighbours."""
    p = open_pipeline(tmp_path)
    texts = [frame(i).text for i in range(1, 301)]
    p.ingest_frames("f1", "synthetic", "c1", 1, 1_760_000_000_000_000, texts[:100])
    p.commit(p.cut())
    p.ingest(frame(101))
    run = texts[101:200]
    run[10] = "{not json"  # seq 112
    p.ingest_frames("f1", "synthetic", "c1", 102, 1_760_000_000_100_000, run)
    p.ingest_frames("f1", "synthetic", "c1", 201, 1_760_000_000_200_000, texts[200:])
    crash(p)
    p2 = open_pipeline(tmp_path)
    assert p2.replayed == 200
    p2.close()
    assert raw_seqs(tmp_path) == list(range(1, 301))
    with Dataset.open(tmp_path / "data") as ds:
        assert ds.sql("SELECT count(*) AS n, count(DISTINCT seq) AS d FROM chance").to_pylist() == [{"n": 299, "d": 299}]
        assert ds.sql("SELECT seq FROM rejects").to_pylist() == [{"seq": 112}]


def test_raw_rows_of_runs_keep_every_frame_exactly(tmp_path):
    """The raw table built from the journal's bytes (the live path): payloads byte for byte,
    non-ASCII and empty frames included, runs of one, two connections interleaved, and runs that
    cross the raw batch size, each row with its run's receive time and its own seq."""
    p = open_pipeline(tmp_path, batch_rows=5)
    runs = [("c1", 1, ['{"a":1}', '{"é":"日本"}', ""]), ("c2", 1, ["x" * 300]), ("c1", 4, ["solo"]),
            ("c2", 2, [f'{{"n":{i}}}' for i in range(7)]), ("c1", 5, ["naïve", "ascii"])]
    want = []
    for i, (conn, first, texts) in enumerate(runs):
        ts = 1_760_000_000_000_000 + i
        p.ingest_frames("f1", "synthetic", conn, first, ts, texts)
        want += [("f1", conn, first + k, ts, t) for k, t in enumerate(texts)]
    p.close()
    with Dataset.open(tmp_path / "data") as ds:
        got = ds.sql("SELECT feed, conn_id, seq, epoch_us(ts_recv) AS ts, payload FROM raw ORDER BY conn_id, seq")
    assert [tuple(r.values()) for r in got.to_pylist()] == sorted(want, key=lambda r: (r[1], r[2]))


def test_a_frame_with_an_impossible_time_is_rejected_and_the_rest_recorded(tmp_path):
    """A venue frame whose time overflows the timestamp column goes to rejects; the frames around it
    are recorded, the flush succeeds, and replaying the journal does not trip on it either."""
    from recorder.pipeline import Pipeline
    from recorder.venues import outpoll

    def pipeline():
        return Pipeline(tmp_path / "data", tmp_path / "journal",
                        lambda feed: outpoll.make_decoder(outpoll.FeedSpec(stream="chance")), batch_rows=2).open()

    point = '{{"t":"UPDATE_HISTORY","e":"ev","o":["y"],"d":{{"t":{t},"p":0.5}}}}'
    p = pipeline()
    p.ingest_frames("f", "outpoll", "c", 1, 1_767_225_600_000_000,
                    [point.format(t=1_712_160_300), point.format(t="1e300"), point.format(t=1_712_160_301)])
    crash(p)
    p2 = pipeline()
    assert p2.replayed == 3
    p2.close()
    with Dataset.open(tmp_path / "data") as ds:
        assert ds.sql("SELECT seq FROM chance ORDER BY seq").to_pylist() == [{"seq": 1}, {"seq": 3}]
        assert ds.sql("SELECT seq, error FROM rejects").to_pylist() == [{"seq": 2, "error": "time 1e+300 s is out of range"}]


def test_a_feed_at_max_rows_gets_a_flush_without_waiting_for_the_flushers_clock(tmp_path):
    """At max_rows buffered a feed nudges the flusher (storage.FlushGate.nudge), which cuts as soon
    as it is free: at full rate flushes stay near max_rows rows instead of growing to the gate's
    limit (2 x max_rows) while the flusher sleeps until its next look at the clock."""
    import trio

    from recorder.storage import FlushPolicy, run_storage

    p = open_pipeline(tmp_path)
    policy = FlushPolicy(max_rows=50, max_age=3600, commit_interval=30, retry_interval=30)

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_storage, p, policy)
            await trio.sleep(0.05)
            for i in range(1, 61):  # 60 frames: 60 raw + 60 chance rows, past max_rows
                p.ingest(frame(i))
            assert p.buffers.rows >= p.gate.soft_limit == 50 and p.gate.limit == 100
            p.gate.nudge()
            with trio.fail_after(5):  # the flusher's own clock would take 30 s
                while p.committed != p.journal.position:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert p.buffers.rows == 0
    p.close()
    assert raw_seqs(tmp_path) == list(range(1, 61))
