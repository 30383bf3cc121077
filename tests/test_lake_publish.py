"""Publishing a lake at most every `publish_seconds`: flushes in between are held back (durable,
in the checkpoint) and published with the next one, in one catalog transaction. Held-back
flushes survive a crash exactly once; a flush whose publish was tried is never taken in by a
later one (it may have committed with its reply lost); the flusher keeps to the interval."""

from __future__ import annotations

import json
import os

import attrs
import pytest
import trio

from conftest import trio_test
from helpers import SyntheticDecoder, frame
from lakehelp import lake_settings
from pgserver import postgres  # noqa: F401 (the fixture)

from recorder.pipeline import CHECKPOINT, Pipeline
from recorder.storage import FlushPolicy, run_storage
from recorder.store.errors import StoreUnavailable
from recorder.store.lake import LakeStore


def open_pipeline(tmp_path, settings) -> Pipeline:
    return Pipeline(tmp_path / "x", tmp_path / "j", lambda f: SyntheticDecoder(), store=LakeStore(settings)).open()


def ingest(p: Pipeline, first: int, last: int) -> None:
    for i in range(first, last + 1):
        p.ingest(frame(i))


def crash(p: Pipeline) -> None:
    """Stop as a kill -9 would: the journal synced (what was fsynced), nothing closed or published."""
    p.journal.sync()
    os.close(p._lock_fd)
    p.store.close()


def lake_state(settings) -> tuple[list[int], list[dict]]:
    """The raw frames' seqs and the ledger's rows, read in one snapshot."""
    with LakeStore(settings).open_dataset() as ds:
        seqs = ds.sql("SELECT seq FROM raw ORDER BY seq").column("seq").to_pylist()
        ledger = ds.sql("SELECT flush, files FROM lake.recorder_ledger ORDER BY flush").to_pylist()
    return seqs, ledger


def test_a_held_back_flush_is_published_with_the_next_in_one_transaction(postgres, tmp_path):
    settings = lake_settings(postgres, tmp_path / "lake")
    p = open_pipeline(tmp_path, settings)
    ingest(p, 1, 200)
    p.commit(p.cut(), defer_publish=True)
    assert lake_state(settings) == ([], [])  # durable and in the checkpoint, not yet visible
    checkpoint = json.loads((tmp_path / "j" / CHECKPOINT).read_text())
    assert checkpoint["flush_seq"] == 1 and checkpoint["pending"]
    assert [j.flush_seq for j in p.unpublished_jobs()] == [1]  # the live page still sees its rows
    assert p.held_bytes >= p.unpublished_jobs()[0].flush.nbytes > 0
    ingest(p, 201, 400)
    p.commit(p.cut())
    seqs, ledger = lake_state(settings)
    assert seqs == list(range(1, 401))
    assert [r["flush"] for r in ledger] == [2]  # one transaction, one ledger row for both
    assert ledger[0]["files"] == len(checkpoint["pending"]) * 2
    assert p.staged is None and p.unpublished_jobs() == [] and p.committed == p.journal.position
    p.close()


@pytest.mark.parametrize("second", ["held", "checkpointed"])
def test_a_crash_with_flushes_held_back_publishes_each_once(postgres, tmp_path, second):
    """Killed while flush 1 is held back, and flush 2 either held back too or checkpointed (taking
    flush 1's files into its own list) but not published: the restart publishes them, each frame
    once, and records on."""
    settings = lake_settings(postgres, tmp_path / "lake")
    p = open_pipeline(tmp_path, settings)
    ingest(p, 1, 200)
    p.commit(p.cut(), defer_publish=True)
    ingest(p, 201, 400)
    if second == "held":
        p.commit(p.cut(), defer_publish=True)
    else:
        p.checkpoint(p.cut())
    ingest(p, 401, 450)  # fsynced into the journal only
    crash(p)
    assert lake_state(settings) == ([], [])
    p2 = open_pipeline(tmp_path, settings)
    assert lake_state(settings)[0] == list(range(1, 401))  # the checkpoint's flushes, published at open
    ingest(p2, 451, 500)
    p2.close()
    seqs, ledger = lake_state(settings)
    assert seqs == list(range(1, 501))
    flushes = [r["flush"] for r in ledger]
    assert flushes[0] == 2 and len(flushes) == len(set(flushes))


def test_a_flush_whose_publish_failed_is_never_taken_into_a_later_one(postgres, tmp_path):
    """The catalog goes away during flush 1's publish: the flush stays staged and, once the
    catalog is back, is published alone (after asking the ledger) before flush 2 is written;
    flush 2, held back, goes with flush 3."""
    settings = lake_settings(postgres, tmp_path / "lake")
    p = open_pipeline(tmp_path, settings)
    ingest(p, 1, 100)
    job1 = p.next_job()  # as the flusher takes it
    postgres.stop()
    try:
        with pytest.raises(StoreUnavailable):
            p.commit(job1)
    finally:
        postgres.start()
    assert p.staged.flush_seq == 1 and not p.staged.foldable and p.unfinished is job1
    p.commit(job1)
    ingest(p, 101, 200)
    p.commit(p.cut(), defer_publish=True)
    assert p.staged.flush_seq == 2 and p.staged.foldable
    ingest(p, 201, 300)
    p.commit(p.cut())
    seqs, ledger = lake_state(settings)
    assert seqs == list(range(1, 301))
    assert [r["flush"] for r in ledger] == [1, 3]
    p.close()


def test_a_staged_flush_that_was_tried_goes_alone_before_the_next(postgres, tmp_path):
    """A staged flush marked tried (as after a failed publish) is published by itself, never
    folded: the next commit publishes it first, then writes its own flush."""
    settings = lake_settings(postgres, tmp_path / "lake")
    p = open_pipeline(tmp_path, settings)
    ingest(p, 1, 100)
    p.commit(p.cut(), defer_publish=True)
    p.staged = attrs.evolve(p.staged, foldable=False)
    ingest(p, 101, 200)
    p.commit(p.cut(), defer_publish=True)
    assert lake_state(settings)[0] == list(range(1, 101))
    p.close()
    seqs, ledger = lake_state(settings)
    assert seqs == list(range(1, 201)) and [r["flush"] for r in ledger] == [1, 3]


@trio_test(timeout=30)
async def test_the_flusher_publishes_at_most_every_interval(postgres, tmp_path):
    """Flushes every 50 ms, publish_seconds 0.5: over ~2.5 s about five catalog commits, not fifty,
    and every frame visible once after close; a held-back flush does not wait for new rows."""
    settings = attrs.evolve(lake_settings(postgres, tmp_path / "lake"), publish_seconds=0.5)
    p = open_pipeline(tmp_path, settings)
    policy = FlushPolicy(max_rows=100_000, max_age=0.05, commit_interval=0.02)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_storage, p, policy)
        for i in range(1, 2501):
            p.ingest(frame(i))
            if i % 25 == 0:
                await trio.sleep(0.025)
        flushes_while_ingesting = p.storage_stats.flushes
        with trio.fail_after(5):  # the last flush, held back, is published without new rows
            while p.committed != p.journal.position:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    p.close()
    seqs, ledger = lake_state(settings)
    assert seqs == list(range(1, 2501))
    assert flushes_while_ingesting >= 20
    assert 2 <= len(ledger) <= 9, ledger  # ~2.5 s / 0.5 s, plus the first and the last
