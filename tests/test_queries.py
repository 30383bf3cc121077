"""Each named query, on a dataset written by the real writer, against an answer computed in Python."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from recorder import journal as jr
from recorder.dataset import Dataset
from recorder.errors import QueryError
from recorder.pipeline import Pipeline
from recorder.records import Book, Chance, Trade
from recorder.timeutil import UTC, us_to_datetime

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
MIN = 60_000_000


class ListDecoder:
    """Decodes frames by index into pre-built records (the dataset content is chosen by the test)."""

    def __init__(self, records):
        self.records = records

    def decode(self, text, meta):
        return [self.records[int(text)]]

    def state(self):
        return {}

    def restore(self, state):
        pass


def build(tmp_path, records, sessions=()):
    p = Pipeline(tmp_path / "data", tmp_path / "journal", lambda f: ListDecoder(records), batch_rows=500).open()
    for i in range(len(records)):
        p.ingest(jr.Entry(kind=jr.Kind.FRAME, ts_recv=T0, seq=i + 1, feed="f", venue="v", conn_id="c", text=str(i)))
        if i % 3000 == 0:
            p.commit(p.cut())  # several files per partition, as a long run makes
    for feed, conn, start, end in sessions:
        p.ingest(jr.Entry(kind=jr.Kind.OPEN, ts_recv=start, seq=0, feed=feed, venue="v", conn_id=conn, text="ws://x"))
        p.ingest(jr.Entry(kind=jr.Kind.CLOSE, ts_recv=end, seq=0, feed=feed, venue="v", conn_id=conn, text="bye"))
    p.close()
    return Dataset.open(tmp_path / "data")


def common(i, ts_event, ts_recv=None):
    return dict(venue="v", feed="f", ts_event=ts_event, ts_recv=ts_recv if ts_recv is not None else T0 + i, conn_id="c",
                seq=i + 1)


@pytest.fixture(scope="module")
def chance_ds(tmp_path_factory):
    rng = random.Random(5)
    recs = []
    for i in range(12_000):  # two days, two markets, two outcomes, some rows without venue time
        ts = T0 + rng.randrange(0, 2 * 24 * 60) * MIN + rng.randrange(MIN)
        ev = None if i % 10 == 0 else ts
        recs.append(Chance(market=rng.choice(["a", "b"]), outcome=rng.choice(["Yes", "No"]),
                           probability=round(rng.random(), 4), origin="v", **common(i, ev, ts if ev is None else None)))
    return build(tmp_path_factory.mktemp("chance"), recs), recs


def t(rec):
    return rec.ts_event if rec.ts_event is not None else rec.ts_recv


def test_chance_history_matches_python_ohlc(chance_ds):
    """1-hour OHLC buckets over a range equal the ones computed from the records directly."""
    ds, recs = chance_ds
    start, end = T0 + 90 * MIN, T0 + 30 * 60 * MIN
    got = ds.query("chance_history", market="a", start=us_to_datetime(start).isoformat(),
                   end=us_to_datetime(end).isoformat(), interval="1h").to_pylist()
    buckets = defaultdict(list)
    for r in recs:
        if r.market == "a" and start <= t(r) < end:
            buckets[(r.outcome, t(r) - t(r) % (60 * MIN))].append(r)
    want = []
    for (outcome, b), rs in sorted(buckets.items()):
        rs.sort(key=lambda r: (t(r), r.ts_recv, r.seq))
        ps = [r.probability for r in rs]
        want.append({"venue": "v", "outcome": outcome, "bucket": us_to_datetime(b), "open": ps[0], "high": max(ps),
                     "low": min(ps), "close": ps[-1], "count": len(ps)})
    assert [{**g, "bucket": g["bucket"].astimezone(UTC)} for g in got] == want
    assert len(want) > 40


def test_latest_matches_python(chance_ds):
    """The latest probability per market and outcome is the one with the greatest time."""
    ds, recs = chance_ds
    got = {(r["market"], r["outcome"]): r["probability"] for r in ds.query("latest").to_pylist()}
    best = {}
    for r in recs:
        k = (r.market, r.outcome)
        if k not in best or (t(r), r.ts_recv, r.seq) > (t(best[k]), best[k].ts_recv, best[k].seq):
            best[k] = r
    assert got == {k: r.probability for k, r in best.items()}


def test_trades_and_volume_match_python(tmp_path):
    """Trades in a range, oldest first, and volume per 10-minute bucket, as computed in Python."""
    rng = random.Random(9)
    recs = [Trade(market=rng.choice(["x", "y"]), outcome="Yes", side="BUY", price=round(rng.random(), 3),
                  size=float(rng.randint(1, 100)), notional=None, trade_id=str(i),
                  **common(i, T0 + rng.randrange(0, 6 * 60) * MIN)) for i in range(3000)]
    ds = build(tmp_path, recs)
    start, end = T0 + 60 * MIN, T0 + 5 * 60 * MIN
    rng_args = dict(start=us_to_datetime(start).isoformat(), end=us_to_datetime(end).isoformat())
    got = ds.query("trades", market="x", **rng_args).to_pylist()
    want = sorted((r for r in recs if r.market == "x" and start <= r.ts_event < end), key=lambda r: (r.ts_event, r.seq))
    assert [g["trade_id"] for g in got] == [r.trade_id for r in want]
    vol = ds.query("trade_volume", market="x", interval="10m", **rng_args).to_pylist()
    buckets = defaultdict(list)
    for r in want:
        buckets[r.ts_event - r.ts_event % (10 * MIN)].append(r)
    assert len(vol) == len(buckets)
    for row in vol:
        rs = buckets[int(row["bucket"].timestamp() * 1e6)]
        assert row["trades"] == len(rs)
        assert row["size"] == pytest.approx(sum(r.size for r in rs))
        assert row["vwap"] == pytest.approx(sum(r.price * r.size for r in rs) / sum(r.size for r in rs))


def test_book_at_returns_the_last_state_at_or_before_the_instant(tmp_path):
    """book_at gives each outcome's latest book at or before the instant, never a later one."""
    rng = random.Random(2)
    recs = [Book(market="m", outcome=rng.choice(["Yes", "No"]), best_bid=round(rng.random(), 3),
                 bids=((0.5, float(i)),), asks=(), depth=1, **common(i, T0 + i * 1_000_000)) for i in range(2000)]
    ds = build(tmp_path, recs)
    for at_i in (5, 777, 1999):
        at = T0 + at_i * 1_000_000
        got = {r["outcome"]: r["best_bid"] for r in ds.query("book_at", market="m", at=us_to_datetime(at).isoformat()).to_pylist()}
        want = {}
        for r in recs:
            if r.ts_event <= at:
                want[r.outcome] = r.best_bid
        assert got == want


def test_coverage_merges_sessions_and_finds_gaps(tmp_path):
    """Overlapping connections merge into one recorded interval; the gaps between are listed."""
    s = 1_000_000
    sessions = [("f", "c1", T0, T0 + 10 * s), ("f", "c2", T0 + 8 * s, T0 + 20 * s),  # overlap (a handover)
                ("f", "c3", T0 + 25 * s, T0 + 30 * s), ("g", "c4", T0, T0 + 5 * s)]
    ds = build(tmp_path, [], sessions)
    got = [(r["feed"], r["state"], int(r["start"].timestamp() * 1e6) - T0, int(r["end"].timestamp() * 1e6) - T0,
            r["sessions"]) for r in ds.query("coverage").to_pylist()]
    assert got == [("f", "recorded", 0, 20 * s, 2), ("f", "gap", 20 * s, 25 * s, 0), ("f", "recorded", 25 * s, 30 * s, 1),
                   ("g", "recorded", 0, 5 * s, 1)]
    assert [r["feed"] for r in ds.query("coverage", feed="g").to_pylist()] == ["g"]


def test_bad_parameters_are_named(chance_ds):
    """Unknown query, missing, unknown or malformed parameters each get a clear QueryError."""
    ds, _ = chance_ds
    with pytest.raises(QueryError, match="unknown query 'nope'"):
        ds.query("nope")
    with pytest.raises(QueryError, match="needs --param market"):
        ds.query("chance_history")
    with pytest.raises(QueryError, match="no parameter 'markt'"):
        ds.query("chance_history", markt="a")
    with pytest.raises(QueryError, match="start='yesterday' is not a valid timestamp"):
        ds.query("chance_history", market="a", start="yesterday")
    with pytest.raises(QueryError, match="interval='5 parsecs' is not a valid interval"):
        ds.query("chance_history", market="a", interval="5 parsecs")


def test_views_exist_for_tables_with_no_files(chance_ds):
    """A table with no files yet is an empty view with its columns, not an error."""
    ds, _ = chance_ds
    assert ds.sql("SELECT count(*) AS n FROM account").to_pylist() == [{"n": 0}]
    assert "order_id" in ds.sql("SELECT * FROM account").column_names
