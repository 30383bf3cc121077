"""Rebuild on a lake (real PostgreSQL): the simulators recorded into a lake, a decoder changed,
the tables re-derived in one catalog transaction while a reader queries in a loop.

One recording (module fixture, the v1 decoder of test_rebuild: odd prices rejected) serves
every test; each test's expectations come from the lake's raw frames, so their order does not
matter."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import attrs
import pyarrow.parquet as pq
import pytest
import trio

from e2e import FAST
from lakehelp import lake_settings
from pgserver import postgres  # noqa: F401 (the fixture)
from test_rebuild import ORIGINAL, PRICE_RUN, checked_path_only, v1_rejects_odd_prices, v2_fixed  # noqa: F401 (fixture)

from recorder import cli, schema
from recorder import config as cfgmod
from recorder.dataset import Dataset
from recorder.errors import RecorderError
from recorder.rebuild import derive, rebuild, select
from recorder.simulators.fleet import SIM_ENV, start_fleet
from recorder.store.lake import LakeStore, connect
from recorder.supervisor import run_recorder
from recorder.venues import intots

NAMES = {"it-btc", "pf-main"}


def lake_config(feeds: list[dict], tmp_path: Path, settings) -> cfgmod.Config:
    storage = {"root": str(tmp_path / "root"), "max_age_seconds": 0.5, "commit_interval_ms": 50,
               "catalog": settings.catalog, "password_env": settings.password_env, "data_path": settings.data_path}
    return cfgmod.parse({"storage": storage, "recorder": {"summary_interval_seconds": 1}, "feeds": feeds},
                        environ={**SIM_ENV, settings.password_env: settings.password})


async def record_into_lake(tmp_path: Path, settings, seconds: float) -> list[dict]:
    """The simulators' it-btc and pf-main feeds recorded into the lake; every frame sent received."""
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, FAST)
        feeds = [f for f in fleet.feeds() if f["name"] in NAMES]
        stop = trio.Event()
        async with trio.open_nursery() as rec:
            cfg = lake_config(feeds, tmp_path, settings)
            await rec.start(lambda task_status: run_recorder(cfg, stop=stop, task_status=task_status))
            await trio.sleep(seconds)
            for sim in fleet.all:
                sim.quiesce()
            await trio.sleep(0.5)
            stop.set()
        sims.cancel_scope.cancel()
    return feeds


@pytest.fixture(scope="module")
def lake(postgres, tmp_path_factory):  # noqa: F811
    """(settings, feeds, tmp): a lake recorded with v1 (odd prices rejected)."""
    tmp = tmp_path_factory.mktemp("rebuild_lake")
    settings = lake_settings(postgres, tmp / "lake")
    intots.Decoder.decode, intots.Decoder._price_run = v1_rejects_odd_prices, None  # see checked_path_only
    try:
        async def main():
            with trio.fail_after(30):
                return await record_into_lake(tmp, settings, 1.5)

        feeds = trio.run(main)
    finally:
        intots.Decoder.decode, intots.Decoder._price_run = ORIGINAL, PRICE_RUN
    return settings, feeds, tmp


def rows(ds, sql: str) -> list[tuple]:
    return [tuple(r.values()) for r in ds.sql(sql).to_pylist()]


@pytest.fixture
def reader(lake):
    """A reader of the lake (attached read-only; each query reads the snapshot current then)."""
    with LakeStore(lake[0]).open_dataset() as ds:
        yield ds


def prices_sql(where: str = "feed = 'it-btc'") -> str:
    return f"SELECT conn_id, seq, epoch_us(ts_recv), symbol, price FROM prices WHERE {where} ORDER BY ALL"


def from_raw(ds, price) -> list[tuple]:
    """What a decoder making `price(frame price)` (None: no row) makes of every it-btc frame in raw."""
    out = []
    for conn_id, seq, ts, payload in rows(ds, "SELECT conn_id, seq, epoch_us(ts_recv), payload FROM raw "
                                              "WHERE feed = 'it-btc'"):
        p = price(json.loads(payload)["price"])
        if p is not None:
            out.append((conn_id, seq, ts, "BTCUSDT", p))
    return sorted(out)


def raw_as_plain_dataset(ds, root: Path) -> None:
    """The lake's raw table written out as a plain dataset (same frames, same partitions)."""
    file_schema = schema.load("raw").file_schema
    parts = ds.sql("SELECT DISTINCT venue, CAST(date AS VARCHAR) AS d FROM raw").to_pylist()
    for p in parts:
        frames = ds.sql(f"SELECT {', '.join(file_schema.names)} FROM raw WHERE venue = $v AND date = CAST($d AS DATE)",
                        {"v": p["venue"], "d": p["d"]})
        out = root / "raw" / f"venue={p['venue']}" / f"date={p['d']}"
        out.mkdir(parents=True)
        pq.write_table(frames.cast(file_schema), out / "x-0000000001-0000.parquet")


def test_lake_rebuild_replaces_every_table_in_one_snapshot_under_a_reader(lake, reader, tmp_path, monkeypatch):
    """Rebuild intots with v2 (prices doubled, some no longer produced, v1's rejects now decode):
    a reader querying prices and rejects together in a loop sees the old state or the new one,
    never a mix (the move from rejects to prices is one snapshot); the lake then equals the plain
    rebuild of the same raw frames, row for row with lineage, and v2's output frame by frame;
    predict.fun's rows are untouched."""
    settings, feeds, _ = lake
    state_sql = ("SELECT (SELECT count(*) FROM prices WHERE feed = 'it-btc') AS prices, "
                 "(SELECT count(*) FROM rejects WHERE feed = 'it-btc') AS rejects, "
                 "(SELECT count(*) FROM prices WHERE feed = 'it-btc' AND price * 100 % 2 > 0.5) AS odd")
    before = rows(reader, state_sql)[0]
    book = rows(reader, "SELECT * FROM book ORDER BY ALL")
    assert before[1] > 0 and before[2] == 0 and book  # v1 rejected every odd price
    monkeypatch.setattr(intots.Decoder, "decode", v2_fixed)
    cfg = lake_config(feeds, tmp_path, settings)

    seen, stop, reading = [], threading.Event(), threading.Event()

    def read_in_a_loop() -> None:
        with LakeStore(settings).open_dataset() as ds:
            while not stop.is_set():
                seen.append(tuple(ds.sql(state_sql).to_pylist()[0].values()))
                reading.set()

    thread = threading.Thread(target=read_in_a_loop)
    thread.start()
    try:
        assert reading.wait(10)
        # the seam runs inside the open transaction, every partition replaced but not committed
        results = rebuild(LakeStore(settings), select(cfg, venue="intots"),
                          before_swap=lambda: reading.clear() or reading.wait(10))
        reading.clear()
        assert reading.wait(10)
    finally:
        stop.set()
        thread.join(10)
    after = rows(reader, state_sql)[0]
    assert after[1] == 0 and after != before
    assert set(seen) == {before, after}, set(seen)
    assert seen[0] == before and seen[-1] == after
    assert {r.partition.split("/")[0] for r in results} == {"prices", "rejects"}
    assert all("venue=intots" in r.partition for r in results)

    want = from_raw(reader, lambda p: None if p % 3 == 0 else p * 0.01 * 2)
    assert rows(reader, prices_sql()) == want
    assert rows(reader, "SELECT * FROM book ORDER BY ALL") == book

    plain = tmp_path / "plain"
    raw_as_plain_dataset(reader, plain)
    rebuild(plain, select(cfg, venue="intots"))
    with Dataset.open(plain) as ds:
        for table in ("prices", "rejects"):
            sql = f"SELECT * FROM {table} WHERE venue = 'intots' ORDER BY ALL"
            assert [tuple(r.values()) for r in ds.sql(sql).to_pylist()] == rows(reader, sql), table


def test_a_recorder_committing_frames_meanwhile_stops_the_rebuild_with_nothing_changed(lake, reader, tmp_path):
    """Frames of the selected feed committed between the rebuild reading raw and replacing the
    partitions (a live recorder): the rebuild stops with a clear error, the lake as it was."""
    settings, feeds, _ = lake
    sel = select(lake_config(feeds, tmp_path, settings), venue="intots", tables=("prices",))
    before = rows(reader, prices_sql())
    raw_before = rows(reader, "SELECT count(*) FROM raw")
    with LakeStore(settings).rebuild_session() as session:
        derived = derive(session.con, sel)
        with contextlib.closing(connect(settings, read_only=False)) as con:
            con.execute("INSERT INTO lake.raw SELECT * FROM lake.raw WHERE feed = 'it-btc' ORDER BY seq DESC LIMIT 1")
            with pytest.raises(RecorderError, match="a recorder is writing them. Nothing was changed"):
                session.replace_partitions(sel, derived)
            con.execute("DELETE FROM lake.raw WHERE rowid IN (SELECT max(rowid) FROM lake.raw)")
    assert rows(reader, prices_sql()) == before
    assert rows(reader, "SELECT count(*) FROM raw") == raw_before  # the test's extra frame removed again


def test_a_recorder_of_another_feed_committing_meanwhile_makes_the_rebuild_try_again(lake, reader, tmp_path,
                                                                                    monkeypatch, caplog):
    """A flush of another feed into the same table commits while the rebuild's transaction is open:
    DuckLake refuses the rebuild's commit (a conflict), the rebuild runs its transaction again and
    commits; the other feed's row is kept, the rebuilt rows are there once."""
    settings, feeds, _ = lake
    monkeypatch.setattr(intots.Decoder, "decode", lambda self, text, meta: [
        attrs.evolve(r, price=r.price * 3) for r in ORIGINAL(self, text, meta)])
    sel = select(lake_config(feeds, tmp_path, settings), venue="intots", tables=("prices",))
    other = ("INSERT INTO lake.prices SELECT * REPLACE ('it-other' AS feed) FROM lake.prices "
             "WHERE feed = 'it-btc' ORDER BY seq LIMIT 1")
    calls = []

    def another_recorder_flushes() -> None:
        calls.append(1)
        if len(calls) == 1:
            with contextlib.closing(connect(settings, read_only=False)) as con:
                con.execute(other)

    results = rebuild(LakeStore(settings), sel, before_swap=another_recorder_flushes)
    assert len(calls) == 2 and "trying again (1/5)" in caplog.text
    assert [r.partition.split("/")[0] for r in results] == ["prices"]
    assert rows(reader, prices_sql()) == from_raw(reader, lambda p: p * 0.01 * 3)
    assert rows(reader, "SELECT count(*) FROM prices WHERE feed = 'it-other'") == [(1,)]
    with contextlib.closing(connect(settings, read_only=False)) as con:
        con.execute("DELETE FROM lake.prices WHERE feed = 'it-other'")


def test_cli_rebuild_on_a_lake_with_a_changed_decoder_option(lake, reader, tmp_path, capsys):
    """`recorder rebuild --config <lake config> --table prices` with the feed's price_scale changed:
    every it-btc price re-derived at the new scale, lineage kept, one line per partition."""
    from lakehelp import lake_config_toml
    from test_daemon import toml_value

    settings, feeds, _ = lake
    lines = [lake_config_toml(settings, tmp_path / "root")]
    for f in feeds:
        f = {**f, "price_scale": 0.02} if f["name"] == "it-btc" else f
        lines += ["[[feeds]]"] + [f"{k} = {toml_value(v)}" for k, v in f.items()] + [""]
    cfg = tmp_path / "config.toml"
    cfg.write_text("\n".join(lines))
    assert cli.main(["rebuild", "--config", str(cfg), "--table", "prices", "--venue", "intots"]) == 0
    out = capsys.readouterr().out
    assert "prices/venue=intots/date=" in out and "rebuilt 1 partitions" in out
    assert rows(reader, prices_sql()) == from_raw(reader, lambda p: p * 0.02)
