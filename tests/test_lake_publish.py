"""Publishing a lake at most every `publish_seconds`: flushes cut in between are held back in
memory (their rows in the journal) and written with the next one as one flush, one file per
partition, in one catalog transaction. A crash loses none of them; a failed commit is retried
whole; the flusher keeps to the interval and commits what is held once it is over."""

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


def test_held_back_flushes_are_written_with_the_next_as_one(postgres, tmp_path):
    """Two flushes held back, then a third: one file per partition, one transaction, one ledger
    row (the last flush's number); meanwhile nothing written, the checkpoint behind them, and
    their rows counted as held and shown to the live page."""
    settings = lake_settings(postgres, tmp_path / "lake")
    p = open_pipeline(tmp_path, settings)
    ingest(p, 1, 200)
    p.commit(p.cut(), defer_publish=True)
    ingest(p, 201, 400)
    p.commit(p.cut(), defer_publish=True)
    assert lake_state(settings) == ([], [])
    assert not (tmp_path / "j" / CHECKPOINT).exists() and not list((tmp_path / "lake").rglob("*.parquet"))
    assert [j.flush_seq for j in p.unpublished_jobs()] == [1, 2]  # the live page still sees their rows
    assert p.held_bytes >= sum(j.flush.nbytes for j in p.held) > 0
    ingest(p, 401, 600)
    p.commit(p.cut())
    seqs, ledger = lake_state(settings)
    assert seqs == list(range(1, 601))
    assert [r["flush"] for r in ledger] == [3]
    assert ledger[0]["files"] == 2  # raw and chance: one file each for all three flushes
    checkpoint = json.loads((tmp_path / "j" / CHECKPOINT).read_text())
    assert checkpoint["flush_seq"] == 3 and checkpoint["rows"] == 1200
    assert p.held == [] and p.unpublished_jobs() == [] and p.committed == p.journal.position
    p.close()


@pytest.mark.parametrize("at", ["held", "written"])
def test_a_crash_with_flushes_held_back_loses_nothing(postgres, tmp_path, at):
    """Killed with flushes held back in memory (only the journal has them), or just after they
    were written and checkpointed as one flush but before its commit: the restart has each
    frame once, and records on."""
    settings = lake_settings(postgres, tmp_path / "lake")
    p = open_pipeline(tmp_path, settings)
    ingest(p, 1, 200)
    p.commit(p.cut())  # published: the checkpoint is here
    ingest(p, 201, 400)
    p.commit(p.cut(), defer_publish=True)
    ingest(p, 401, 600)
    if at == "held":
        p.commit(p.cut(), defer_publish=True)
    else:
        from recorder.pipeline import merge_jobs

        p.checkpoint(merge_jobs(p.held + [p.cut()]))
    ingest(p, 601, 650)
    crash(p)
    assert lake_state(settings)[0] == list(range(1, 201))
    p2 = open_pipeline(tmp_path, settings)
    ingest(p2, 651, 700)
    p2.close()
    seqs, ledger = lake_state(settings)
    assert seqs == list(range(1, 701))
    flushes = [r["flush"] for r in ledger]
    assert flushes[0] == 1 and len(flushes) == len(set(flushes))


def test_a_failed_commit_with_flushes_held_back_is_retried_whole(postgres, tmp_path):
    """The catalog goes away while held flushes and a new one are committed together: the merged
    flush stays staged (written, checkpointed), the held rows stay visible to the live page, and
    the retry publishes it once the catalog is back, asking the ledger."""
    settings = lake_settings(postgres, tmp_path / "lake")
    p = open_pipeline(tmp_path, settings)
    ingest(p, 1, 100)
    p.commit(p.next_job(), defer_publish=True)
    ingest(p, 101, 200)
    job = p.next_job()  # as the flusher takes it
    postgres.stop()
    try:
        with pytest.raises(StoreUnavailable):
            p.commit(job)
    finally:
        postgres.start()
    assert p.staged.flush_seq == 2 and p.unfinished is job
    assert [j.flush_seq for j in p.unpublished_jobs()] == [1, 2]
    p.commit(job, defer_publish=True)  # a retry publishes what is staged, whatever the interval
    assert p.held == [] and p.unfinished is None and p.staged is None
    ingest(p, 201, 300)
    p.close()
    seqs, ledger = lake_state(settings)
    assert seqs == list(range(1, 301))
    assert [r["flush"] for r in ledger] == [2, 3]


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
    assert 2 <= len(ledger) <= 9, ledger  # ~2.5 s / 0.5 s, plus the last
    assert len(list((tmp_path / "lake" / "main" / "raw").rglob("*.parquet"))) == len(ledger)  # a file per commit


def test_lake_publish_ms_is_read_from_the_config(tmp_path):
    """storage.lake_publish_ms (default 1000) becomes the store's publish interval; 0 publishes
    every flush at once; a negative value is a ConfigError naming the option."""
    from recorder import config
    from recorder.errors import ConfigError
    from recorder.store import open_store

    raw = {"storage": {"root": str(tmp_path / "r"), "catalog": "ducklake:postgres:host=127.0.0.1 dbname=x",
                       "data_path": str(tmp_path / "d")}}
    assert open_store(config.parse(raw, environ={}).storage).publish_interval == 1.0
    raw["storage"]["lake_publish_ms"] = 0
    assert open_store(config.parse(raw, environ={}).storage).publish_interval == 0.0
    raw["storage"]["lake_publish_ms"] = -5
    with pytest.raises(ConfigError, match="storage.lake_publish_ms"):
        config.parse(raw, environ={})
    del raw["storage"]["catalog"], raw["storage"]["data_path"], raw["storage"]["lake_publish_ms"]
    assert open_store(config.parse(raw, environ={}).storage).publish_interval == 0.0  # the plain dataset
