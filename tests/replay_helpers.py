"""Helpers for replay tests: serve a recorded dataset, record it again, compare tables."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import trio

from recorder import config as cfgmod
from recorder.dataset import Dataset
from recorder.simulators.fleet import SIM_ENV, Fleet
from recorder.simulators.replay import ReplayServer, load_recording
from recorder.supervisor import run_recorder

NORMALISED = ("chance", "trades", "book", "prices", "account", "rejects")
# Columns a replay cannot reproduce: the receive time (a new receipt), the connection (a new one)
# and the frame number within it; and the date partition of rows without a venue time (it is
# the receive time's date).
NOT_COMPARED = {"ts_recv", "conn_id", "seq", "date"}


def replay_config(fleet: Fleet, root: Path, urls: dict[str, str], *, names=None) -> cfgmod.Config:
    """The first recording's feeds, every URL pointing at the replay server."""
    feeds = [{**f, "url": urls[f["name"]]} for f in fleet.feeds() if f["name"] in urls and (names is None or f["name"] in names)]
    return cfgmod.parse({"storage": {"root": str(root / "data"), "max_age_seconds": 0.5, "commit_interval_ms": 50},
                         "recorder": {"summary_interval_seconds": 1}, "feeds": feeds}, environ=SIM_ENV)


async def rerecord(first: Path, second: Path, fleet: Fleet, *, names=None) -> ReplayServer:
    """Replay `first`/data at full speed into a recorder writing `second`/data; return when every
    frame the server sent has been received, and the recorder has stopped."""
    recording = load_recording(first / "data", feeds=tuple(sorted(names or [f["name"] for f in fleet.feeds()])))
    async with trio.open_nursery() as nursery:
        server = await nursery.start(ReplayServer(recording, speed=None).run)
        cfg = replay_config(fleet, second, server.urls(), names=names)
        stop = trio.Event()
        async with trio.open_nursery() as rec:
            pipeline = await rec.start(lambda task_status: run_recorder(cfg, stop=stop, task_status=task_status))
            expected = {f.name for f in recording.feeds}
            deadline = trio.current_time() + 20
            while True:
                if trio.current_time() > deadline:
                    raise AssertionError(f"replay not received in 20 s: finished {server.stats.finished}, sent "
                                         f"{server.stats.sent}, received {({f: s.frames for f, s in pipeline.stats.items()})}")
                done = set(server.stats.finished)
                if done == expected and all(pipeline.stats.get(f) and pipeline.stats[f].frames == server.stats.sent[f] + server.stats.replies[f]
                                            for f in expected):
                    break
                await trio.sleep(0.02)
            stop.set()
        nursery.cancel_scope.cancel()
    return server


def table_rows(root: Path, table: str, *, drop=NOT_COMPARED, where: str = "true") -> collections.Counter:
    with Dataset.open(root / "data") as ds:
        exclude = f" EXCLUDE ({', '.join(sorted(drop))})" if drop else ""
        rows = ds.sql(f"SELECT *{exclude} FROM {table} WHERE {where}").to_pylist()
    return collections.Counter(json.dumps(r, sort_keys=True, default=str) for r in rows)
