"""kill -9 a writer recording into a lake at each point of the commit protocol, restart it, and
check the lake: every frame it reported fsynced is there exactly once, each flush is in the
ledger once, every registered file is readable, and no unregistered file is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lakehelp import lake_settings
from pgserver import PASSWORD_ENV, postgres  # noqa: F401 (the fixture)

from recorder.store import crashpoints
from recorder.store.lake import LakeStore

WRITER = Path(__file__).parent / "crash_writer.py"


def writer_args(root: Path, settings, run: int, frames: int, prefix: str = "run", *extra: str) -> list[str]:
    return [sys.executable, str(WRITER), str(root), str(run), f"--frames={frames}", "--catalog", settings.catalog,
            "--data-path", settings.data_path, "--password-env", PASSWORD_ENV, "--conn-prefix", prefix, *extra]


def run_writer(root: Path, settings, run: int, frames: int, crash_at: str | None = None,
               publish_seconds: float = 0.0) -> tuple[int, int]:
    """Run a writer to its end (or its crash point); (exit status, last frame reported fsynced).
    `publish_seconds` 0: every flush is published at once, so the n-th arrival at a lake point is
    the n-th flush's."""
    env = {k: v for k, v in os.environ.items() if k != crashpoints.ENV}
    if crash_at:
        env[crashpoints.ENV] = crash_at
    proc = subprocess.run(writer_args(root, settings, run, frames, "run", f"--publish-seconds={publish_seconds}"),
                          env=env, capture_output=True, text=True, timeout=90)
    durable = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("durable")]
    if proc.returncode not in (0, 137):
        print(proc.stderr[-3000:])  # shown by pytest when the test fails
    return proc.returncode, max(durable, default=0)


def check_lake(settings, durable: dict[str, int]) -> int:
    """Each conn's frames: a gap-free prefix from 1, at least its fsynced count, each exactly once;
    one chance row per frame; each (writer, flush) once in the ledger; files on disk = files
    registered, all readable. Returns the number of frames."""
    with LakeStore(settings).open_dataset() as ds:
        raw = ds.sql("SELECT conn_id, seq, count(*) AS n FROM raw GROUP BY ALL").to_pylist()
        chance = ds.sql("SELECT count(*) AS n FROM chance").to_pylist()[0]["n"]
        ledger = ds.sql("SELECT writer, flush, count(*) AS n FROM lake.recorder_ledger GROUP BY ALL").to_pylist()
        registered = {r["data_file"] for r in ds.sql(
            "SELECT data_file FROM ducklake_list_files('lake', 'raw') UNION ALL "
            "SELECT data_file FROM ducklake_list_files('lake', 'chance') UNION ALL "
            "SELECT data_file FROM ducklake_list_files('lake', 'sessions')").to_pylist()}
        # files of older snapshots, or replaced by a merge and awaiting deletion after the grace period
        meta = "__ducklake_metadata_lake.public"
        known = {r["path"].rsplit("/", 1)[-1] for r in ds.sql(
            f"SELECT path FROM {meta}.ducklake_data_file UNION ALL "
            f"SELECT path FROM {meta}.ducklake_files_scheduled_for_deletion").to_pylist()}
    assert all(r["n"] == 1 for r in raw), "a frame is in the lake twice"
    assert all(r["n"] == 1 for r in ledger), "a flush is in the ledger twice"
    seqs: dict[str, list[int]] = {}
    for r in raw:
        seqs.setdefault(r["conn_id"], []).append(r["seq"])
    for conn, want in durable.items():
        got = sorted(seqs.get(conn, []))
        assert got == list(range(1, len(got) + 1)), f"{conn}: frames missing in the middle"
        assert len(got) >= want, f"{conn}: {want} frames were fsynced but only {len(got)} are in the lake"
    assert chance == len(raw)
    on_disk = {str(p) for p in Path(settings.data_path).rglob("*.parquet")}
    assert registered <= on_disk, "the lake lists a file that is not there"
    unknown = {p for p in on_disk if p.rsplit("/", 1)[-1] not in known}
    assert not unknown, f"files on disk that the lake never registered: {sorted(unknown)[:3]}"
    for f in registered:
        pq.read_table(f)
    return len(raw)


def test_killed_at_every_commit_point_in_turn_each_flush_lands_once(postgres, tmp_path):
    """One writer dies at each point of the commit protocol in turn (its second flush after each
    restart), restarting every time; then a clean run. The lake holds every frame each run
    reported fsynced, exactly once."""
    settings = lake_settings(postgres, tmp_path / "lake")
    durable = {}
    for run, point in enumerate(crashpoints.POINTS, start=1):
        status, durable[f"run{run}"] = run_writer(tmp_path, settings, run, 12_000, crash_at=f"{point}:2")
        assert status == 137, f"the writer did not reach {point}"
    status, _ = run_writer(tmp_path, settings, 99, 2_000)
    assert status == 0
    frames = check_lake(settings, {**durable, "run99": 2_000})
    assert frames >= sum(durable.values()) + 2_000


def test_killed_with_flushes_held_back_each_lands_once(postgres, tmp_path):
    """Publishing held back for a minute: every flush of a run is held in memory (its rows in the
    journal only) and the close writes them as one flush, in one transaction. The writer dies
    with that flush's files written (before its checkpoint), inside its transaction, and just
    after its COMMIT (arrival 2: the first is the restart's publish of what the crashed run's
    checkpoint holds), in turn; a clean run ends it."""
    settings = lake_settings(postgres, tmp_path / "lake")
    durable = {}
    for run, point in enumerate(("files_written:1", "in_transaction:1", "catalog_committed:2"), start=1):
        status, durable[f"run{run}"] = run_writer(tmp_path, settings, run, 12_000, crash_at=point,
                                                  publish_seconds=60.0)
        assert status == 137, f"the writer did not reach {point}"
    status, _ = run_writer(tmp_path, settings, 99, 2_000, publish_seconds=60.0)
    assert status == 0
    frames = check_lake(settings, {**durable, "run99": 2_000})
    assert frames >= sum(durable.values()) + 2_000


@pytest.mark.slow
@pytest.mark.parametrize("point", crashpoints.POINTS)
def test_kill_at_each_commit_point_registers_each_flush_exactly_once(postgres, tmp_path, point):
    """The writer dies (os._exit, as abrupt as kill -9) at `point` of its second flush; a restart
    recovers and records on; the lake holds every fsynced frame exactly once."""
    settings = lake_settings(postgres, tmp_path / "lake")
    status, durable = run_writer(tmp_path, settings, 1, 12_000, crash_at=f"{point}:2")
    assert status == 137, "the writer did not reach the crash point"
    status2, durable2 = run_writer(tmp_path, settings, 2, 3_000)
    assert status2 == 0
    frames = check_lake(settings, {"run1": durable, "run2": 3_000})
    assert frames >= durable + 3_000
