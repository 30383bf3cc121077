"""Replay: a recorded dataset served back over each venue's protocol, recorded again."""

from __future__ import annotations

import json
import sys
import time

import pytest
import trio
import trio_websocket as tw

from conftest import trio_test
from e2e import FAST, record
from recorder import cli
from recorder.dataset import Dataset
from recorder.errors import RecorderError
from recorder.simulators.fleet import SECRETS
from recorder.simulators.replay import ReplayServer, load_recording
from replay_helpers import NORMALISED, rerecord, table_rows

ALL_FEEDS = ("op-book", "op-chance", "op-activity", "op-last-trades", "op-orders", "op-balances", "op-order-feed",
             "it-trades", "it-chart", "it-btc", "pf-main", "pf-wallet")


async def faults(fleet) -> None:
    """A fixed schedule: bad frames, a drop of everything, a predict.fun handover, a stall."""
    await trio.sleep(0.4)
    for sim in fleet.all:
        await sim.inject("malformed")
    await fleet.intots.inject("truncated")
    await trio.sleep(0.4)
    for sim in fleet.all:
        await sim.drop()
    await trio.sleep(0.5)
    await fleet.predictfun.reconnect_notice(grace_ms=300)
    await trio.sleep(0.2)
    fleet.outpoll.stall(0.3)


@trio_test(timeout=90)
async def test_round_trip_every_venue_equal_but_receive_times_and_connections(tmp_path):
    """Record with faults, replay at max speed into a second recorder: every normalised table is equal
    on every column but ts_recv, conn_id, seq (and the date of rows without a venue time)."""
    first, second = tmp_path / "first", tmp_path / "second"
    t0 = time.monotonic()
    fleet = await record(first, 2.5, during=faults, settings=FAST)
    t1 = time.monotonic()
    server = await rerecord(first, second, fleet)
    t2 = time.monotonic()
    print(f"\nround trip: recorded {t1 - t0:.2f} s, replayed and re-recorded {t2 - t1:.2f} s "
          f"({sum(server.stats.sent.values())} frames)")
    with Dataset.open(first / "data") as ds:
        per_feed = {r["feed"]: r["n"] for r in ds.sql("SELECT feed, count(*) AS n FROM sessions GROUP BY ALL").to_pylist()}
        rejects = ds.sql("SELECT count(*) AS n FROM rejects").to_pylist()[0]["n"]
    assert all(per_feed[f] >= 2 for f in ALL_FEEDS), per_feed  # every feed reconnected at least once
    assert rejects >= 4
    for table in NORMALISED:
        a, b = table_rows(first, table), table_rows(second, table)
        assert sum(a.values()) > 0, table
        assert a == b, f"{table}: only in the first {list((a - b).items())[:3]}, only in the replay {list((b - a).items())[:3]}"
    with Dataset.open(second / "data") as ds:
        conns = ds.sql("SELECT feed, count(*) AS n FROM sessions GROUP BY ALL").to_pylist()
    assert all(c["n"] == 1 for c in conns), conns  # one replay connection per feed: all of it on one
    public = {f.name for f in load_recording(first / "data").feeds}
    assert public == set(ALL_FEEDS) - {"op-orders", "op-balances", "op-order-feed", "pf-wallet"}  # private: only by name
    assert {f.name for f in load_recording(first / "data", feeds=("pf-wallet",)).feeds} == {"pf-wallet"}
    with pytest.raises(RecorderError, match="--feeds nope: no such feed"):
        load_recording(first / "data", feeds=("nope",))
    with Dataset.open(second / "data") as ds:
        stored = "".join(ds.sql("SELECT payload FROM raw").column("payload").to_pylist())
    assert all(secret not in stored for secret in SECRETS)


@trio_test(timeout=60)
async def test_a_plain_websockets_client_gets_what_it_subscribes_to(tmp_path):
    """A venue user's asyncio `websockets` client (predict.fun): subscribe, get its topic's frames in
    recorded order with the right R reply, heartbeats to echo, and nothing of other topics."""
    await record(tmp_path, 1.5, names={"pf-main"}, settings=FAST)
    with Dataset.open(tmp_path / "data") as ds:
        recorded = ds.sql("""SELECT payload FROM raw WHERE payload LIKE '%"topic":"kalshiChance/123"%'
                             ORDER BY ts_recv, conn_id, seq""").column("payload").to_pylist()
    assert recorded
    recording = load_recording(tmp_path / "data")
    async with trio.open_nursery() as nursery:
        server = await nursery.start(ReplayServer(recording, speed=None).run)
        url = server.urls()["pf-main"]
        got = await trio.to_thread.run_sync(_venue_user_client, url, len(recorded))
        nursery.cancel_scope.cancel()
    reply, frames = got
    cli_run = await trio.run_process([sys.executable, "-m", "recorder.cli", "replay", "--data", str(tmp_path / "data"),
                                      "--speed", "max", "--seconds", "0.5"], capture_stdout=True, capture_stderr=True)
    lines = cli_run.stdout.decode().splitlines()
    assert lines[0].startswith("pf-main") and lines[0].split()[1].startswith("ws://127.0.0.1:"), lines
    assert lines[0].endswith("/ws")
    assert reply == {"type": "R", "requestId": 7, "success": True, "data": None}
    chances = [f for f in frames if '"kalshiChance/123"' in f]
    assert chances == recorded  # every recorded frame of the topic, in order, exactly as received
    topics = {json.loads(f).get("topic") for f in frames}
    assert topics <= {"kalshiChance/123", "heartbeat"}, topics


def _venue_user_client(url: str, wanted: int):
    """Written as a predict.fun user would, with asyncio and `websockets`."""
    import asyncio

    import websockets

    async def main():
        async with websockets.connect(url, additional_headers={"x-api-key": "any-key"}) as ws:
            await ws.send(json.dumps({"method": "subscribe", "requestId": 7, "params": ["kalshiChance/123"]}))
            reply = json.loads(await ws.recv())
            frames = []
            while sum('"kalshiChance/123"' in f for f in frames) < wanted:
                msg = await asyncio.wait_for(ws.recv(), 10)
                frames.append(msg)
                data = json.loads(msg)
                if data.get("topic") == "heartbeat":
                    await ws.send(json.dumps({"method": "heartbeat", "data": data["data"]}))
            return reply, frames

    return asyncio.run(main())


def test_replay_cli_errors_are_one_line(tmp_path, capsys):
    """Bad options end in one line naming the problem and exit 2."""
    assert cli.main(["replay", "--data", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["replay", "--data", str(tmp_path), "--speed", "fast"]) == 2
    assert "--speed 'fast'" in capsys.readouterr().err


@trio_test(timeout=60)
async def test_replay_is_paced_by_recorded_receive_times(tmp_path):
    """At --speed 10, the recording's span takes a tenth of it to replay (not less, not much more)."""
    speed = 10.0
    await record(tmp_path, 1.5, names={"it-btc"}, settings=FAST)
    recording = load_recording(tmp_path / "data")
    with Dataset.open(tmp_path / "data") as ds:
        span, frames = ds.sql("SELECT (epoch_us(max(ts_recv)) - epoch_us(min(ts_recv))) / 1e6 AS s, count(*) AS n "
                              "FROM raw").to_pylist()[0].values()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(ReplayServer(recording, speed=speed).run)
        start = trio.current_time()
        async with tw.open_websocket_url(server.urls()["it-btc"]) as ws:
            for _ in range(frames):
                await ws.get_message()
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert frames > 10
    assert span / speed * 0.8 <= elapsed <= span / speed + 0.5, (span, elapsed)
