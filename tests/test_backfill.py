"""Gap-aware backfill: an Outpoll chance feed that reconnects asks for history from the last point it
recorded, per outcome, and the chart has no hole where the venue could fill it."""

from __future__ import annotations

import json

import trio

from conftest import trio_test
from e2e import record
from recorder import config as cfgmod
from recorder.dataset import Dataset
from recorder.venues import outpoll


async def outage(fleet) -> None:
    await trio.sleep(0.6)
    await fleet.outpoll.outage(1.5)


def chart(root) -> set[tuple]:
    with Dataset.open(root / "data") as ds:
        return {tuple(r.values()) for r in ds.sql("""
            SELECT market, outcome, epoch_us(ts_event) // 1000000 AS t, probability FROM chance
            WHERE feed = 'op-chance'""").to_pylist()}


def made(fleet) -> set[tuple]:
    return {(e, o, t, p) for (e, o), points in fleet.outpoll.charts.items() for t, p in points}


@trio_test(timeout=60)
async def test_an_outage_leaves_no_hole_in_the_chart(tmp_path):
    """Every point the venue made, during the outage too, is recorded once; the outage's points are
    tagged backfill; coverage reports the gap as filled."""
    fleet = await record(tmp_path, 3.0, names={"op-chance"}, during=outage)
    assert len(made(fleet)) > 50
    assert made(fleet) - chart(tmp_path) == set()
    with Dataset.open(tmp_path / "data") as ds:
        dup = ds.sql("""SELECT market, outcome, ts_event, probability, count(*) AS n FROM chance
                        GROUP BY ALL HAVING n > 1""").to_pylist()
        backfill = ds.sql("SELECT count(*) AS n FROM chance WHERE source = 'backfill'").to_pylist()[0]["n"]
        gaps = [g for g in ds.query("coverage").to_pylist() if g["state"] == "gap"]
        recorded = [g for g in ds.query("coverage").to_pylist() if g["state"] == "recorded"]
    assert dup == []
    assert backfill >= 20  # 1.5 s of points at one per 20 ms, less what the venue said live
    assert len(gaps) == 1 and gaps[0]["seconds"] >= 1.0
    assert gaps[0]["filled"] is True and gaps[0]["backfill_rows"] == backfill
    assert all(r["filled"] is None for r in recorded)
    requests = [json.loads(t) for _, t in fleet.outpoll.received if '"HISTORY"' in t]
    per_outcome = [r for r in requests if len(r["o"]) == 1]
    assert len(per_outcome) == 2  # after the outage: one request per outcome, from its own last point
    assert all(r["d"]["to"] - r["d"]["from"] < 10 for r in per_outcome)  # not the fixed 3,600 s window


@trio_test(timeout=60)
async def test_without_backfill_the_outage_is_a_hole(tmp_path):
    """The same outage with backfill off (and no history window): the venue's points of the outage are missing."""
    fleet = await record(tmp_path, 3.0, names={"op-chance"}, during=outage, backfill_max_seconds=0, history_seconds=0)
    missing = made(fleet) - chart(tmp_path)
    assert len(missing) >= 20
    with Dataset.open(tmp_path / "data") as ds:
        gaps = [g for g in ds.query("coverage").to_pylist() if g["state"] == "gap"]
    assert gaps and not any(g["filled"] for g in gaps)


def test_backfill_requests_start_at_each_outcomes_last_point_bounded_by_the_maximum():
    """The protocol's requests: from the last point per outcome, at most backfill_max_seconds back;
    outcomes never recorded get the history_seconds window."""
    cfg = cfgmod.parse({"storage": {"root": "/tmp/x"}, "feeds": [
        {"name": "c", "venue": "outpoll", "stream": "chance", "history_seconds": 600, "backfill_max_seconds": 300,
         "subscriptions": [{"event": "e", "outcomes": ["yes", "no", "maybe"]}]}]})
    feed = cfg.feeds[0]
    decoder = outpoll.make_decoder(feed.spec)
    decoder.points.add_new(("e", "yes", 9_950.0, 0.5))
    decoder.points.add_new(("e", "no", 9_000.0, 0.5))
    protocol = outpoll.make_protocol(feed.spec, (), feed.url)
    protocol.resume(decoder)
    frames, _ = protocol.on_open(10_000.0)
    history = [json.loads(f) for f in frames if '"HISTORY"' in f]
    assert history == [{"t": "HISTORY", "e": "e", "o": ["yes"], "d": {"from": 9_950, "to": 10_000}},
                       {"t": "HISTORY", "e": "e", "o": ["no"], "d": {"from": 9_700, "to": 10_000}},
                       {"t": "HISTORY", "e": "e", "o": ["maybe"], "d": {"from": 9_400, "to": 10_000}}]


@trio_test(timeout=60)
async def test_a_restarted_recorder_backfills_what_it_missed_while_stopped(tmp_path):
    """The recorder stops, the venue's chart moves on, the recorder starts again (its dedupe state
    restored from the checkpoint): it asks from its last points and the chart has no hole."""
    from e2e import FAST, make_config
    from recorder.simulators.fleet import start_fleet
    from recorder.supervisor import run_recorder

    async def run_for(cfg, seconds: float, fleet=None) -> None:
        stop = trio.Event()
        async with trio.open_nursery() as rec:
            await rec.start(lambda task_status: run_recorder(cfg, stop=stop, task_status=task_status))
            await trio.sleep(seconds)
            if fleet is not None:
                fleet.outpoll.quiesce()
                await trio.sleep(0.5)
            stop.set()

    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, FAST)
        cfg = make_config(fleet, tmp_path, names={"op-chance"})
        await run_for(cfg, 1.0)
        await fleet.outpoll.outage(1.0)  # nobody connected: the chart moves on
        await run_for(cfg, 1.0, fleet)
        sims.cancel_scope.cancel()
    assert made(fleet) - chart(tmp_path) == set()
    with Dataset.open(tmp_path / "data") as ds:
        gaps = [g for g in ds.query("coverage").to_pylist() if g["state"] == "gap"]
    assert len(gaps) == 1 and gaps[0]["filled"] and gaps[0]["backfill_rows"] >= 20
