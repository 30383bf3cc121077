"""End to end over real sockets: the simulators, the daemon, the dataset."""

from __future__ import annotations

import collections

import pytest
import trio

from conftest import trio_test
from e2e import raw_counter, record, sent_counter
from recorder.dataset import Dataset
from recorder.timeutil import iso_to_us
from recorder.simulators.base import SimSettings

TRANSPORTS = ["websockets", "trio-websocket"]
# feed -> (table, SQL condition its rows must meet)
EXPECTED = {
    "op-book": ("book", "venue = 'outpoll' AND best_bid IS NOT NULL"),
    "op-chance": ("chance", "source = 'live'"),
    "op-activity": ("trades", "trade_id IS NOT NULL"),
    "op-last-trades": ("trades", "price IS NOT NULL"),
    "op-orders": ("account", "kind IN ('ORDER_UPDATE', 'TPSL_UPDATE')"),
    "op-balances": ("account", "kind = 'balance_delta'"),
    "op-order-feed": ("account", "kind = 'ORDER_FILLED'"),
    "it-trades": ("trades", "notional_minor IS NOT NULL"),
    "it-chart": ("chance", "origin = 'intots'"),
    "it-btc": ("prices", "symbol = 'BTCUSDT' AND price > 1000"),
    "pf-main": ("book", "depth = 6"),
    "pf-wallet": ("account", "stream = 'wallet'"),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test(timeout=60)
async def test_every_stream_of_every_venue_is_recorded_exactly(tmp_path, transport):
    """Each feed yields rows in its table, no rejects, and every frame sent is in raw exactly once."""
    fleet = await record(tmp_path, 2.5, transport=transport)
    with Dataset.open(tmp_path / "data") as ds:
        for feed, (table, cond) in EXPECTED.items():
            n = ds.sql(f"SELECT count(*) AS n FROM {table} WHERE feed = $f AND {cond}", {"f": feed}).to_pylist()[0]["n"]
            assert n > 0, f"{feed}: no {table} rows with {cond}"
        assert ds.sql("SELECT count(*) AS n FROM rejects").to_pylist() == [{"n": 0}]
        origins = {r["origin"] for r in ds.sql("SELECT DISTINCT origin FROM chance").to_pylist()}
        assert {"polymarket", "kalshi", "outpoll", "intots"} <= origins
        sessions = ds.sql("SELECT feed, subscribed IS NOT NULL AS sub, close_reason FROM sessions").to_pylist()
    assert {s["feed"] for s in sessions} == set(EXPECTED)
    assert all(s["sub"] for s in sessions), sessions
    assert raw_counter(tmp_path) == sent_counter(fleet)


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test(timeout=60)
async def test_after_a_drop_feeds_reauth_resubscribe_and_lose_nothing(tmp_path, transport):
    """An abrupt drop of every connection: each feed reconnects, re-auths, re-subscribes; nothing sent is lost."""
    async def drop(fleet):
        await trio.sleep(1.0)
        for sim in fleet.all:
            await sim.drop()

    fleet = await record(tmp_path, 3.0, transport=transport, during=drop)
    op, pf = fleet.outpoll, fleet.predictfun
    auths = collections.Counter(n for n, t in op.received if '"AUTH"' in t)
    assert len(auths) >= 6  # three private feeds, each authenticated on two connections
    subs = [n for n, t in op.received if '"SUBSCRIBE"' in t]
    assert len(set(subs)) >= 6  # book, chance, activity subscribed again on their new connections
    pf_subs = {n for n, t in pf.received if '"subscribe"' in t}
    assert len(pf_subs) >= 4
    with Dataset.open(tmp_path / "data") as ds:
        per_feed = {r["feed"]: r["n"] for r in ds.sql("SELECT feed, count(*) AS n FROM sessions GROUP BY ALL").to_pylist()}
        gaps = ds.query("coverage").to_pylist()
    assert all(n >= 2 for n in per_feed.values()), per_feed
    assert any(g["state"] == "gap" for g in gaps)
    # The simulator closes between whole frames and the kernel delivers what was sent before the
    # close, so every frame sent is recorded, exactly once.
    assert raw_counter(tmp_path) == sent_counter(fleet)


@trio_test(timeout=60)
async def test_history_replayed_after_reconnect_is_not_recorded_twice(tmp_path):
    """InTots trades and chart, and Outpoll chance, replay history on connect: no duplicate rows."""
    async def drops(fleet):
        for _ in range(2):
            await trio.sleep(0.8)
            await fleet.intots.drop()
            await fleet.outpoll.drop()

    fleet = await record(tmp_path, 2.6, names={"it-trades", "it-chart", "op-chance"}, during=drops)
    # The simulator spells the Yes token "YES" now and then: recorded as Yes, one name per outcome.
    made = collections.Counter((t["market"], {"YES": "Yes"}.get(t["token"], t["token"]), t["amount"], t["name"])
                               for t in fleet.intots.all_trades)
    with Dataset.open(tmp_path / "data") as ds:
        got = collections.Counter((r["market"], r["outcome"], r["notional_minor"], r["trader"]) for r in ds.sql(
            "SELECT market, outcome, notional_minor, trader FROM trades WHERE venue = 'intots'").to_pylist())
        dup = ds.sql("""SELECT venue, market, outcome, ts_event, probability, count(*) AS n FROM chance
                        WHERE ts_event IS NOT NULL GROUP BY ALL HAVING n > 1""").to_pylist()
        sessions = ds.sql("SELECT count(*) AS n FROM sessions WHERE feed = 'it-trades'").to_pylist()[0]["n"]
        chart = ds.sql("""SELECT outcome, epoch_us(ts_event) AS ts, probability FROM chance
                          WHERE feed = 'it-chart' AND ts_event IS NOT NULL""").to_pylist()
        names = {r["outcome"] for r in ds.sql("SELECT DISTINCT outcome FROM chance WHERE feed = 'it-chart'").to_pylist()}
    assert sessions == 3
    assert got == made  # every trade made once, none twice, although each connect replayed up to 20
    assert dup == []
    # The chart's points came live in three forms and again as value lists in each connect's history:
    # each timed point is recorded once, under its outcome's one name.
    assert names == {"Yes", "No"}
    timed = collections.Counter((r["outcome"], r["ts"], r["probability"]) for r in chart)
    made_points = {(name, iso_to_us(p["timestamp"]), v) for p in fleet.intots.chart_history["42"]
                   for name, v in zip(("Yes", "No"), p["values"])}
    assert set(timed) == made_points and max(timed.values()) == 1


@trio_test(timeout=60)
async def test_reconnect_notice_hands_over_without_duplicates(tmp_path):
    """predict.fun's notice: a new connection opens before the old closes (1001); the overlap is deduplicated."""
    async def notice(fleet):
        await trio.sleep(1.0)
        await fleet.predictfun.reconnect_notice(grace_ms=600)

    await record(tmp_path, 2.5, names={"pf-main"}, during=notice)
    with Dataset.open(tmp_path / "data") as ds:
        s = ds.sql("SELECT connected, closed, close_reason FROM sessions ORDER BY connected").to_pylist()
        dup_books = ds.sql("SELECT count(*) - count(DISTINCT (market, ts_event, bids, asks)) AS d FROM book").to_pylist()
        dup_trades = ds.sql("SELECT count(*) - count(DISTINCT trade_id) AS d FROM trades").to_pylist()
        conns = ds.sql("SELECT count(DISTINCT conn_id) AS n FROM raw").to_pylist()
    assert len(s) == 2 and s[1]["connected"] < s[0]["closed"], s  # overlap: the new one opened first
    assert "1001" in s[0]["close_reason"]
    assert dup_books == [{"d": 0}] and dup_trades == [{"d": 0}]
    assert conns == [{"n": 2}]


@trio_test(timeout=60)
async def test_a_stalled_feed_is_detected_and_reconnected(tmp_path):
    """A simulator that keeps the socket open but sends nothing trips the staleness deadline."""
    async def stall(fleet):
        await trio.sleep(0.5)
        fleet.intots.stall(2.0)

    await record(tmp_path, 3.5, names={"it-btc"}, during=stall, stale_seconds=0.8)
    with Dataset.open(tmp_path / "data") as ds:
        reasons = [r["close_reason"] for r in ds.sql("SELECT close_reason FROM sessions ORDER BY connected").to_pylist()]
        gaps = [g for g in ds.query("coverage").to_pylist() if g["state"] == "gap"]
    assert reasons[0].startswith("stale: no frame for 0.8 s"), reasons
    assert len(reasons) >= 2 and gaps


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test(timeout=60)
async def test_heartbeats_and_pings_keep_connections_alive(tmp_path, transport):
    """With heartbeats and pings every 0.2 s, enforced by the simulators, one connection per feed lasts 2.5 s."""
    settings = SimSettings(interval=0.05, heartbeat_interval=0.2, ping_interval=0.2, read_deadline=0.4)
    fleet = await record(tmp_path, 2.5, settings=settings, names={"pf-main", "it-btc", "it-trades"}, transport=transport)
    assert fleet.predictfun.heartbeats_missed == 0 and fleet.intots.pings_unanswered == 0
    echoes = [t for _, t in fleet.predictfun.received if '"heartbeat"' in t]
    assert len(echoes) >= 8
    with Dataset.open(tmp_path / "data") as ds:
        per_feed = ds.sql("SELECT feed, count(*) AS n FROM sessions GROUP BY ALL ORDER BY 1").to_pylist()
    assert per_feed == [{"feed": f, "n": 1} for f in ("it-btc", "it-trades", "pf-main")]


@trio_test(timeout=60)
async def test_rejected_auth_backs_off_instead_of_storming(tmp_path):
    """Credentials refused: the feed waits backoff_max between attempts, and the sessions say why."""
    async def reject(fleet):
        fleet.outpoll.reject_auth = True

    # ready=False: the refusal must be in place before the first connection authenticates.
    fleet = await record(tmp_path, 2.5, names={"op-orders"}, during=reject, ready=False, backoff_max_seconds=1.0)
    assert 1 <= fleet.outpoll.auth_attempts <= 4
    with Dataset.open(tmp_path / "data") as ds:
        reasons = {r["close_reason"] for r in ds.sql("SELECT close_reason FROM sessions").to_pylist()}
    assert any("auth rejected" in r for r in reasons), reasons


@trio_test(timeout=60)
async def test_malformed_truncated_oversized_frames_never_stop_a_feed(tmp_path):
    """Bad frames become rejects (oversized ones close the connection, which reconnects); data flows on."""
    async def inject(fleet):
        await trio.sleep(0.5)
        for kind in ("malformed", "truncated"):
            await fleet.predictfun.inject(kind)
        await trio.sleep(0.3)
        await fleet.predictfun.inject("oversized")

    await record(tmp_path, 2.5, names={"pf-main"}, during=inject, max_message_kb=64)
    with Dataset.open(tmp_path / "data") as ds:
        rejects = ds.sql("SELECT error FROM rejects").to_pylist()
        sessions = ds.sql("SELECT close_reason FROM sessions ORDER BY connected").to_pylist()
        late = ds.sql("""SELECT count(*) AS n FROM book WHERE ts_recv >
                         (SELECT min(closed) FROM sessions)""").to_pylist()[0]["n"]
    assert len(rejects) == 2 and all("not JSON" in r["error"] for r in rejects)
    assert len(sessions) == 2 and "1009" in sessions[0]["close_reason"], sessions
    assert late > 0
