"""Many writers, one lake: four writer processes killed and restarted while a reader counts and
maintenance merges; a catalog outage in the middle of a real recording."""

from __future__ import annotations

import collections
import logging
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import trio

from conftest import trio_test
from e2e import FAST, sent_counter
from figures import report
from lakehelp import lake_settings
from pgserver import postgres  # noqa: F401 (the fixture)
from test_lake_crash import check_lake, writer_args

from recorder import config as cfgmod
from recorder.simulators.fleet import SIM_ENV, start_fleet
from recorder.store.errors import StoreUnavailable
from recorder.store.lake import LakeStore
from recorder.store.maintenance import maintain
from recorder.supervisor import run_recorder


class Reader(threading.Thread):
    """Queries the lake in a loop, each time in one snapshot: raw and chance counts (one chance row
    per raw frame, committed in the same transaction, so they must be equal), duplicates (must be
    none) and whether the count ever went down."""

    def __init__(self, settings) -> None:
        super().__init__(daemon=True)
        self.settings, self.stop, self.reads, self.wrong = settings, threading.Event(), 0, []

    def run(self) -> None:
        last = 0
        sql = ("SELECT (SELECT count(*) FROM raw) AS raw, (SELECT count(*) FROM chance) AS chance, "
               "(SELECT count(*) - count(DISTINCT (conn_id, seq)) FROM raw) AS dup")
        while not self.stop.is_set():
            try:
                with LakeStore(self.settings).open_dataset() as ds:
                    for _ in range(5):
                        r = ds.sql(sql).to_pylist()[0]
                        self.reads += 1
                        if r["raw"] != r["chance"] or r["dup"] or r["raw"] < last:
                            self.wrong.append(r)
                        last = r["raw"]
            except StoreUnavailable:
                pass  # the catalog restarting: not this reader's concern
            time.sleep(0.05)


class Maintainer(threading.Thread):
    """Runs lake maintenance (merge, expiry, cleanup) again and again until stopped."""

    def __init__(self, settings) -> None:
        super().__init__(daemon=True)
        self.settings, self.stop, self.runs, self.merged, self.conflicts = settings, threading.Event(), 0, 0, 0

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                result = maintain(self.settings)
            except StoreUnavailable:  # a writer's commit conflicted with the merge: the next run merges
                self.conflicts += 1
                continue
            self.runs += 1
            self.merged += result.merged


def four_writers(postgres, tmp_path: Path, *, cycles: int, seed: int) -> dict:
    """Four writer processes, each with its own journal, record into one lake; in each cycle each
    is SIGKILLed at a seeded moment and restarted, while a reader counts in a loop and maintenance
    runs over and over; then each recovers cleanly. Checks the lake exactly (check_lake)."""
    settings = lake_settings(postgres, tmp_path / "lake", grace_seconds=2.0)
    rng = random.Random(seed)
    reader, maintainer = Reader(settings), Maintainer(settings)
    durable: dict[str, int] = {}
    finished: list[str] = []

    def run_one(w: int, run: int, seconds: float | None) -> None:
        root = tmp_path / f"w{w}"
        # ~20k frames/s each, a flush every 0.5 s: four writers on a small machine, not a flood
        proc = subprocess.Popen(writer_args(root, settings, run, 2_000_000 if seconds else 0, f"w{w}-",
                                            "--pause=0.003", "--max-age=0.5"),
                                stdout=subprocess.PIPE, text=True)
        if seconds:
            proc.stdout.readline()  # ready
            time.sleep(seconds)
            proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=90)
        marks = [int(line.split()[1]) for line in out.splitlines() if line.startswith("durable")]
        if seconds:
            durable[f"w{w}-{run}"] = max(marks, default=0)
        elif proc.returncode == 0 and "closed" in out:
            finished.append(f"w{w}")

    def in_parallel(targets) -> None:
        threads = [threading.Thread(target=run_one, args=args) for args in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    reader.start()
    maintainer.start()
    try:
        for run in range(1, cycles + 1):
            in_parallel([(w, run, rng.uniform(1.5, 3.0)) for w in range(4)])
        in_parallel([(w, 0, None) for w in range(4)])
    finally:
        reader.stop.set()
        maintainer.stop.set()
        reader.join(timeout=30)
        maintainer.join(timeout=60)
    assert sorted(finished) == ["w0", "w1", "w2", "w3"], "a writer did not recover cleanly"
    time.sleep(settings.grace_seconds)
    maintain(settings)  # deletes what merges that lost to a writer's commit left behind
    frames = check_lake(settings, durable)
    with LakeStore(settings).open_dataset() as ds:
        writers = ds.sql("SELECT count(DISTINCT writer) AS n FROM lake.recorder_ledger").to_pylist()[0]["n"]
    assert writers == 4
    assert not reader.wrong, reader.wrong[:3]
    assert reader.reads > 5 and maintainer.runs > 2
    assert frames >= sum(durable.values()) > 0
    return {"writers": writers, "kills": len(durable), "frames": frames, "fsynced": sum(durable.values()),
            "reader_queries": reader.reads, "wrong_reads": len(reader.wrong), "maintenance_runs": maintainer.runs,
            "maintenance_conflicts": maintainer.conflicts,
            "merges": maintainer.merged}


def test_four_writers_killed_and_restarted_into_one_lake(postgres, tmp_path):
    """Four writers into one lake, each killed once and restarted, a reader and maintenance running
    throughout: every fsynced frame exactly once, the reader never saw a wrong count."""
    report("lake_four_writers", **four_writers(postgres, tmp_path, cycles=1, seed=13))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_four_writers_soak(postgres, tmp_path):
    """The same with six kill cycles (make soak)."""
    report("lake_four_writers_soak", **four_writers(postgres, tmp_path, cycles=6, seed=17))


def lake_config(fleet, tmp_path: Path, settings) -> cfgmod.Config:
    storage = {"root": str(tmp_path / "root"), "max_age_seconds": 0.5, "commit_interval_ms": 50,
               "catalog": settings.catalog, "password_env": settings.password_env, "data_path": settings.data_path}
    env = {**SIM_ENV, settings.password_env: settings.password}
    return cfgmod.parse({"storage": storage, "recorder": {"summary_interval_seconds": 1},
                         "feeds": [f for f in fleet.feeds() if f["name"] in {"op-book", "it-trades", "pf-main"}]},
                        environ=env)


@trio_test(timeout=90)
async def test_catalog_outage_mid_run_loses_nothing(postgres, tmp_path, caplog):
    """PostgreSQL stops for three seconds in the middle of a recording: the feeds stay connected,
    the failure is logged once and its end once, and when the catalog is back everything received
    meanwhile is committed: the lake holds exactly the frames the simulators sent."""
    caplog.set_level(logging.WARNING)
    settings = lake_settings(postgres, tmp_path / "lake")

    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, FAST)
        cfg = lake_config(fleet, tmp_path, settings)
        stop = trio.Event()
        async with trio.open_nursery() as rec:
            await rec.start(lambda task_status: run_recorder(cfg, stop=stop, task_status=task_status))
            await trio.sleep(1.5)
            await trio.to_thread.run_sync(postgres.stop)
            try:
                await trio.sleep(3.0)
            finally:
                await trio.to_thread.run_sync(postgres.start)
            await trio.sleep(2.0)
            for sim in fleet.all:
                sim.quiesce()
            await trio.sleep(0.5)
            stop.set()
        sims.cancel_scope.cancel()
    errors = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
    recovered = [r.getMessage() for r in caplog.records if "works again" in r.getMessage()]
    with LakeStore(settings).open_dataset() as ds:
        raw = collections.Counter(ds.sql("SELECT payload FROM raw").column("payload").to_pylist())
        sessions = ds.sql("SELECT feed, count(*) AS n FROM sessions GROUP BY ALL").to_pylist()
    sent = sent_counter(fleet)
    report("lake_catalog_outage", frames_sent=sum(sent.values()), lost=sum((sent - raw).values()),
           duplicated=sum((raw - sent).values()), error_lines=len(errors))
    assert raw == sent
    assert all(s["n"] == 1 for s in sessions), sessions
    assert len(errors) == 1 and len(recovered) == 1, errors
    assert settings.password not in " ".join(r.getMessage() for r in caplog.records)


def test_shutdown_with_the_catalog_down_commits_at_the_next_start(postgres, tmp_path, caplog):
    """The recorder stops while PostgreSQL is down: close() says so once and returns (no traceback),
    the journal keeps everything, and the next start commits it: every frame once."""
    import json as jsonlib

    from helpers import SyntheticDecoder, frame

    from recorder.pipeline import Pipeline

    settings = lake_settings(postgres, tmp_path / "lake")

    def open_pipeline() -> Pipeline:
        return Pipeline(tmp_path / "x", tmp_path / "j", lambda f: SyntheticDecoder(), store=LakeStore(settings)).open()

    p = open_pipeline()
    for i in range(1, 501):
        p.ingest(frame(i))
        if i == 200:
            p.commit(p.cut())
    postgres.stop()
    try:
        caplog.set_level(logging.ERROR)
        p.close()
    finally:
        postgres.start()
    assert any("committed at the next start" in r.getMessage() for r in caplog.records)
    assert jsonlib.loads((tmp_path / "j" / "checkpoint.json").read_text())["flush_seq"] >= 1
    open_pipeline().close()
    with LakeStore(settings).open_dataset() as ds:
        rows = ds.sql("SELECT seq, count(*) AS n FROM raw GROUP BY ALL").to_pylist()
    assert sorted(r["seq"] for r in rows) == list(range(1, 501)) and all(r["n"] == 1 for r in rows)


def write_lake_config(path: Path, root: Path, settings, feeds: list[dict]) -> None:
    from test_daemon import toml_value

    lines = ["[storage]", f'root = "{root}"', "max_age_seconds = 0.5", f'catalog = "{settings.catalog}"',
             f'password_env = "{settings.password_env}"', f'data_path = "{settings.data_path}"', "",
             "[recorder]", "summary_interval_seconds = 5", ""]
    for f in feeds:
        lines.append("[[feeds]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in f.items()]
        lines.append("")
    path.write_text("\n".join(lines))


@pytest.mark.slow
@trio_test(timeout=300)
async def test_four_recorder_daemons_share_the_simulators_into_one_lake(postgres, tmp_path):
    """Four `recorder run` processes, the simulators' feeds sharded between them (each its own
    journal), record into one lake; each is SIGKILLed once at a seeded moment and restarted, then
    all stop with SIGTERM. What test_crash.py asserts of one writer, here of four daemons: every
    frame in a killed daemon's journal on disk (read just after the kill, before the restart) is in
    the lake exactly once; nothing is recorded twice or invented; every crash shows in `sessions`.
    (A kill -9 can lose only frames no journal had received yet: no loss bound is needed.)"""
    import sys

    from e2e import stop_daemon
    from recorder.pipeline import CRASH_REASON
    from recorder.simulators.base import SimSettings

    settings = lake_settings(postgres, tmp_path / "lake")
    rng = random.Random(21)
    env = {**os.environ, **SIM_ENV}
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, SimSettings(interval=0.02, heartbeat_interval=0.5, ping_interval=0.5,
                                                    read_deadline=1.0))
        feeds = fleet.feeds()
        commands = []
        for w in range(4):
            cfg = tmp_path / f"r{w}.toml"
            write_lake_config(cfg, tmp_path / f"r{w}", settings, feeds[w::4])
            commands.append([sys.executable, "-m", "recorder.cli", "run", "--config", str(cfg)])
        logs = [open(tmp_path / f"r{w}.log", "ab") for w in range(4)]
        journaled: set[tuple[str, int]] = set()  # (conn_id, seq) of every frame in a killed daemon's journal
        try:
            procs = [await trio.lowlevel.open_process(c, stdout=log, stderr=log, env=env)
                     for c, log in zip(commands, logs)]
            for w in rng.sample(range(4), 4):
                await trio.sleep(rng.uniform(2.0, 4.0))
                procs[w].kill()
                await procs[w].wait()
                journaled |= journal_frames(tmp_path / f"r{w}" / "_journal")
                procs[w] = await trio.lowlevel.open_process(commands[w], stdout=logs[w], stderr=logs[w], env=env)
            await trio.sleep(3.0)
            codes = []
            for i, proc in enumerate(procs):
                codes.append(await stop_daemon(proc, fleet, after=0.0 if i else 1.0, timeout=60))
        finally:
            for log in logs:
                log.close()
        sims.cancel_scope.cancel()
    assert codes == [0, 0, 0, 0], [(tmp_path / f"r{w}.log").read_text()[-1500:] for w in range(4)]
    with LakeStore(settings).open_dataset() as ds:
        raw = collections.Counter(ds.sql("SELECT payload FROM raw").column("payload").to_pylist())
        keys = collections.Counter((r["conn_id"], r["seq"]) for r in ds.sql("SELECT conn_id, seq FROM raw").to_pylist())
        crashed = ds.sql("SELECT count(*) AS n FROM sessions WHERE close_reason = $r", {"r": CRASH_REASON}).to_pylist()
        writers = ds.sql("SELECT count(DISTINCT writer) AS n FROM lake.recorder_ledger").to_pylist()[0]["n"]
    from e2e import redact

    sent = collections.Counter(redact(t) for sim in fleet.all for _, t in sim.sent)
    report("lake_four_daemons", frames_sent=sum(sent.values()), frames_recorded=sum(raw.values()),
           lost=sum((sent - raw).values()), duplicated=sum((raw - sent).values()), crashes=4,
           sessions_closed_by_crash=crashed[0]["n"], writers=writers, journaled_at_kills=len(journaled),
           journaled_missing=sum(1 for k in journaled if k not in keys),
           journaled_twice=sum(1 for k in journaled if keys[k] > 1))
    assert writers == 4
    assert journaled, "the kills found nothing in the journals: the test proves nothing"
    assert [k for k in journaled if keys[k] != 1] == []  # every journaled frame exactly once
    assert [k for k, n in keys.items() if n > 1] == []  # nothing recorded twice
    assert not (raw - sent)  # nothing twice, nothing invented
    assert crashed[0]["n"] >= 3  # most kills leave open connections (one may land between connections)


def journal_frames(directory: Path) -> set[tuple[str, int]]:
    """(conn_id, seq) of every frame in a journal directory, as recovery will read it."""
    from recorder import journal as jr

    return {(e.conn_id, e.seq) for _, e in jr.read_from(directory, (0, 0)) if e.kind == jr.Kind.FRAME}
