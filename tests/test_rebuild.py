"""Rebuild: the normalised tables re-derived from raw with changed decoders, swapped in atomically.

The decoder changes below are the tests' input (a venue's payload changed, a decoder was fixed):
the layer under test, rebuild, runs for real on a real recording."""

from __future__ import annotations

import json
import threading

import attrs
import pytest

from conftest import trio_test
from e2e import FAST, make_config, record
from recorder import cli
from recorder.dataset import Dataset
from recorder.errors import DecodeError, RecorderError
from recorder.rebuild import rebuild, select
from recorder.venues import intots
from replay_helpers import NORMALISED, rerecord, table_rows

ORIGINAL = intots.Decoder.decode


PRICE_RUN = intots.Decoder._price_run


@pytest.fixture(autouse=True)
def checked_path_only(monkeypatch):
    """These tests change what decode() makes (their input); the asset-price fast path (decode_run)
    would go around the change, so it is off and every price frame goes through decode()."""
    monkeypatch.setattr(intots.Decoder, "_price_run", None)


def v1_rejects_odd_prices(self, text, meta):
    """The decoder as it was when recording: it could not read odd prices."""
    if self.spec.stream == "asset_price" and json.loads(text).get("price", 0) % 2:
        raise DecodeError("v1 cannot read an odd price")
    return ORIGINAL(self, text, meta)


def v2_fixed(self, text, meta):
    """The decoder after the fix: prices doubled, prices divisible by 3 no longer produced."""
    out = ORIGINAL(self, text, meta)
    if self.spec.stream != "asset_price":
        return out
    if json.loads(text)["price"] % 3 == 0:
        return []
    return [attrs.evolve(r, price=r.price * 2) for r in out]


def expected_prices(root) -> list[tuple]:
    """What v2 makes of every it-btc frame in raw, with the frame's own lineage."""
    with Dataset.open(root / "data") as ds:
        frames = ds.sql("SELECT conn_id, seq, epoch_us(ts_recv) AS ts, payload FROM raw WHERE feed = 'it-btc'").to_pylist()
    out = []
    for f in frames:
        price = json.loads(f["payload"])["price"]
        if price % 3:
            out.append((f["conn_id"], f["seq"], f["ts"], "BTCUSDT", price * 0.01 * 2))
    return sorted(out)


def prices(root, feed="it-btc") -> list[tuple]:
    with Dataset.open(root / "data") as ds:
        return sorted(tuple(r.values()) for r in ds.sql(
            "SELECT conn_id, seq, epoch_us(ts_recv), symbol, price FROM prices WHERE feed = $f", {"f": feed}).to_pylist())


@trio_test(timeout=90)
async def test_rebuild_equals_a_fresh_record_with_the_changed_decoder(tmp_path, monkeypatch):
    """Record with v1 (rejects odd prices), rebuild intots with v2: prices are v2's, with the raw
    frames' conn_id and seq; rows v2 no longer makes are gone; v1's rejects moved to prices; the
    other venue is untouched; and the table equals a fresh recording (a replay) through v2."""
    first, fresh = tmp_path / "first", tmp_path / "fresh"
    monkeypatch.setattr(intots.Decoder, "decode", v1_rejects_odd_prices)
    fleet = await record(first, 2.0, names={"it-btc", "pf-main"}, settings=FAST)
    before_book = table_rows(first, "book", drop=set())
    with Dataset.open(first / "data") as ds:
        rejected = ds.sql("SELECT count(*) AS n FROM rejects WHERE feed = 'it-btc'").to_pylist()[0]["n"]
    assert rejected > 0
    monkeypatch.setattr(intots.Decoder, "decode", v2_fixed)
    cfg = make_config(fleet, first, names={"it-btc", "pf-main"})
    results = rebuild(first / "data", select(cfg, venue="intots"))
    assert results and all("venue=intots" in r.partition for r in results)
    assert prices(first) == expected_prices(first)
    with Dataset.open(first / "data") as ds:
        assert ds.sql("SELECT count(*) AS n FROM rejects WHERE feed = 'it-btc'").to_pylist() == [{"n": 0}]
    assert table_rows(first, "book", drop=set()) == before_book  # predict.fun: not selected, not touched
    await rerecord(first, fresh, fleet, names={"it-btc"})
    assert table_rows(first, "prices", where="feed = 'it-btc'") == table_rows(fresh, "prices")


@trio_test(timeout=60)
async def test_a_reader_during_rebuild_sees_old_or_new_rows_never_both_never_neither(tmp_path, monkeypatch):
    """A query running again and again while the partition is swapped counts every row once, all old or all new."""
    fleet = await record(tmp_path, 1.5, names={"it-btc"}, settings=FAST)
    n = len(prices(tmp_path))
    monkeypatch.setattr(intots.Decoder, "decode",
                        lambda self, text, meta: [attrs.evolve(r, price=r.price * 2) for r in ORIGINAL(self, text, meta)])
    seen, stop, reading = [], threading.Event(), threading.Event()

    def reader() -> None:
        with Dataset.open(tmp_path / "data") as ds:
            while not stop.is_set():
                seen.append(tuple(ds.sql("""SELECT count(*) FILTER (WHERE price < 120000) AS old,
                                                   count(*) FILTER (WHERE price >= 120000) AS new FROM prices""")
                                  .to_pylist()[0].values()))
                ds.refresh()
                reading.set()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        reading.wait(10)
        rebuild(tmp_path / "data", select(make_config(fleet, tmp_path)), before_swap=lambda: reading.clear() or reading.wait(10))
        reading.clear()
        reading.wait(10)
    finally:
        stop.set()
        thread.join(10)
    assert set(seen) == {(n, 0), (0, n)}, set(seen)
    assert seen[0] == (n, 0) and seen[-1] == (0, n)


@trio_test(timeout=90)
async def test_rebuild_with_the_same_decoders_gives_back_exactly_what_was_recorded(tmp_path):
    """Every venue, with faults and reconnects: a rebuild with unchanged decoders reproduces every
    table on every column (lineage included), so it dedupes exactly as live recording did."""
    from test_replay import faults

    fleet = await record(tmp_path, 2.5, during=faults, settings=FAST)
    before = {t: table_rows(tmp_path, t, drop=set()) for t in NORMALISED}
    results = rebuild(tmp_path / "data", select(make_config(fleet, tmp_path)))
    assert {r.partition.split("/")[0] for r in results} == set(NORMALISED)
    assert all(r.rows_before == r.rows_after for r in results), results
    for t in NORMALISED:
        assert table_rows(tmp_path, t, drop=set()) == before[t], t


@trio_test(timeout=60)
async def test_a_partition_compacted_meanwhile_is_left_alone_with_a_clear_error(tmp_path, monkeypatch):
    """If compaction rewrites a partition between the rebuild reading it and swapping it, the rebuild
    stops with an error naming it, and the partition keeps the compacted rows (nothing lost, nothing twice)."""
    from recorder.compact import compact_partition

    fleet = await record(tmp_path, 1.5, names={"it-btc"}, settings=FAST)
    before = prices(tmp_path)
    live = next((tmp_path / "data" / "prices").glob("venue=intots/date=*"))
    assert len(list(live.glob("*.parquet"))) >= 2
    monkeypatch.setattr(intots.Decoder, "decode", v2_fixed)
    with pytest.raises(RecorderError, match="was rewritten while rebuilding"):
        rebuild(tmp_path / "data", select(make_config(fleet, tmp_path), tables=("prices",)),
                before_swap=lambda: compact_partition(tmp_path / "data", "prices", live))
    assert prices(tmp_path) == before and len(list(live.glob("*.parquet"))) == 1


def test_rebuild_cli_checks_its_options(tmp_path, capsys):
    """A table that is not derived from raw, or a venue with no feed: one line, exit 2."""
    config = tmp_path / "c.toml"
    config.write_text(f'[storage]\nroot = "{tmp_path}"\n[[feeds]]\nname = "b"\nvenue = "intots"\nstream = "asset_price"\n'
                      'symbol = "BTCUSDT"\n')
    assert cli.main(["rebuild", "--config", str(config), "--table", "raw"]) == 2
    assert "--table 'raw' cannot be rebuilt" in capsys.readouterr().err
    assert cli.main(["rebuild", "--config", str(config), "--venue", "outpoll"]) == 2
    assert "no feed of venue 'outpoll'" in capsys.readouterr().err
    with pytest.raises(RecorderError):
        select(cli.cfgmod.load(config), start_us=2, end_us=1)
