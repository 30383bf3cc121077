"""The lake store against a real PostgreSQL: same answers as the plain dataset, the commit
protocol's ledger, secrets kept out of errors, maintenance under its lock."""

from __future__ import annotations

import os
import random

import pytest

from lakehelp import lake_config_toml, lake_settings
from pgserver import PASSWORD, postgres  # noqa: F401 (the fixture)

import recorder
from recorder import cli, config
from recorder import journal as jr
from recorder.dataset import Dataset
from recorder.errors import ConfigError
from recorder.pipeline import Pipeline
from recorder.records import Book, Chance, Trade
from recorder.store.errors import StoreUnavailable
from recorder.store.lake import LakeStore
from recorder.store.maintenance import maintain, maintenance_lock
from recorder.store.settings import LakeSettings

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
MIN = 60_000_000


class ListDecoder:
    def __init__(self, records):
        self.records = records

    def decode(self, text, meta):
        return [self.records[int(text)]]

    def state(self):
        return {}

    def restore(self, state):
        pass


def mixed_records(n: int = 3000) -> list:
    rng = random.Random(3)
    out = []
    for i in range(n):
        common = dict(venue=rng.choice(["v", "w"]), feed="f", ts_event=T0 + rng.randrange(0, 2 * 24 * 60) * MIN,
                      ts_recv=T0 + i, conn_id="c", seq=i + 1)
        kind = i % 3
        if kind == 0:
            out.append(Chance(market=rng.choice(["a", "b"]), outcome=rng.choice(["Yes", "No"]),
                              probability=round(rng.random(), 4), origin="v", **common))
        elif kind == 1:
            out.append(Trade(market=rng.choice(["a", "b"]), outcome="Yes", side="BUY", price=round(rng.random(), 3),
                             size=float(rng.randint(1, 100)), notional=None, trade_id=str(i), **common))
        else:
            out.append(Book(market="a", outcome=rng.choice(["Yes", "No"]), best_bid=round(rng.random(), 3),
                            bids=((0.5, float(i)),), asks=(), depth=1, **common))
    return out


def record(pipeline: Pipeline, records: list) -> None:
    """The records as frames, committed in several flushes, with a session opened and closed."""
    pipeline.open()
    pipeline.ingest(jr.Entry(kind=jr.Kind.OPEN, ts_recv=T0, seq=0, feed="f", venue="v", conn_id="c", text="ws://x"))
    for i in range(len(records)):
        pipeline.ingest(jr.Entry(kind=jr.Kind.FRAME, ts_recv=T0 + i, seq=i + 1, feed="f", venue="v", conn_id="c",
                                 text=str(i)))
        if i % 700 == 0:
            pipeline.commit(pipeline.cut())
    pipeline.ingest(jr.Entry(kind=jr.Kind.CLOSE, ts_recv=T0 + len(records), seq=0, feed="f", venue="v",
                             conn_id="c", text="bye"))
    pipeline.close()


def same(rows: list[dict]) -> list[dict]:
    """Rows with floats to 12 significant digits: a sum over rows read in another order may
    differ in its last bit (vwap), nothing else may."""
    return [{k: float(f"{v:.12g}") if isinstance(v, float) else v for k, v in r.items()} for r in rows]


NAMED = [("chance_history", {"market": "a", "interval": "1h"}), ("latest", {}), ("trades", {"market": "b"}),
         ("trade_volume", {"market": "a", "interval": "10m"}), ("book_at", {"market": "a", "at": "2026-01-02T00:00:00Z"}),
         ("coverage", {})]


@pytest.fixture(scope="module")
def recorded(postgres, tmp_path_factory):
    """The same frames recorded into a plain dataset and into a lake (several flushes each)."""
    tmp = tmp_path_factory.mktemp("recorded")
    settings = lake_settings(postgres, tmp / "lake")
    records = mixed_records()
    record(Pipeline(tmp / "plain", tmp / "j1", lambda f: ListDecoder(records), batch_rows=300), records)
    record(Pipeline(tmp / "unused", tmp / "j2", lambda f: ListDecoder(records), batch_rows=300,
                    store=LakeStore(settings)), records)
    assert not list((tmp / "unused").rglob("*.parquet"))  # a lake writes nothing under storage.root
    return tmp / "plain", settings


def assert_same_answers(plain_root, settings) -> None:
    with Dataset.open(plain_root) as plain, LakeStore(settings).open_dataset() as lk:
        for name, params in NAMED:
            want = plain.query(name, **params)
            got = lk.query(name, **params)
            assert got.num_rows > 0, name
            assert same(got.to_pylist()) == same(want.to_pylist()), name
        for table in ("chance", "trades", "book", "raw", "sessions"):
            sql = f"SELECT * FROM {table} ORDER BY ALL"
            want, got = plain.sql(sql), lk.sql(sql)
            assert got.column_names == want.column_names, table
            assert got.to_pylist() == want.to_pylist(), table


def test_lake_answers_every_query_like_the_plain_dataset(recorded):
    """Every named query and every table's full content are equal on both, column for column;
    the ledger holds each flush of the one writer once."""
    plain_root, settings = recorded
    assert_same_answers(plain_root, settings)
    with LakeStore(settings).open_dataset() as lk:
        ledger = lk.sql("SELECT writer, flush, count(*) AS n FROM lake.recorder_ledger GROUP BY ALL").to_pylist()
    assert len(ledger) > 3 and all(r["n"] == 1 for r in ledger)
    assert len({r["writer"] for r in ledger}) == 1 and len(ledger[0]["writer"]) == 32


def test_cli_query_and_sql_read_the_lake(recorded, tmp_path, capsys):
    """`recorder sql` and `recorder query` with a lake config read the lake, read-only; time
    travel (AT (VERSION => n)) works from `recorder sql`."""
    _, settings = recorded
    cfg = tmp_path / "config.toml"
    cfg.write_text(lake_config_toml(settings, tmp_path / "root"))
    assert cli.main(["sql", "--config", str(cfg), "--format", "csv", "SELECT count(*) AS n FROM raw"]) == 0
    assert capsys.readouterr().out.split() == ["n", "3000"]
    assert cli.main(["query", "latest", "--config", str(cfg), "--format", "csv"]) == 0
    assert "probability" in capsys.readouterr().out
    assert cli.main(["sql", "--config", str(cfg), "--format", "csv",
                     "SELECT count(*) AS n FROM lake.raw AT (VERSION => 1)"]) == 0  # the tables, no flush yet
    assert capsys.readouterr().out.split() == ["n", "0"]
    assert cli.main(["sql", "--config", str(cfg), "INSERT INTO lake.recorder_ledger VALUES ('x', 1, 0, 0, now())"]) == 2
    assert "read-only" in capsys.readouterr().err
    with recorder.open_dataset(config=cfg) as ds:  # the Python API, from the same config
        assert ds.sql("SELECT count(*) AS n FROM chance").to_pylist() == [{"n": 1000}]


def test_lake_config_names_the_missing_password_variable(tmp_path):
    """A lake whose password variable is unset is a ConfigError naming the variable; a password
    written into the catalog string is refused."""
    raw = {"storage": {"root": "r", "catalog": "ducklake:postgres:host=127.0.0.1 dbname=x", "data_path": "d",
                       "password_env": "NO_SUCH_LAKE_PW"}}
    with pytest.raises(ConfigError, match="NO_SUCH_LAKE_PW"):
        config.parse(raw, environ={})
    raw["storage"]["catalog"] += " password=hunter2"
    with pytest.raises(ConfigError, match="password_env") as err:
        config.parse(raw, environ={"NO_SUCH_LAKE_PW": "hunter2"})
    assert "hunter2" not in str(err.value)
    del raw["storage"]["catalog"]
    with pytest.raises(ConfigError, match="only for a lake"):
        config.parse(raw, environ={"NO_SUCH_LAKE_PW": "x"})


def test_a_wrong_password_or_a_dead_catalog_never_shows_the_password(postgres, tmp_path):
    """The attach failing (wrong password, nothing listening) raises StoreUnavailable whose message
    holds neither the password nor the wrong one."""
    good = lake_settings(postgres, tmp_path / "lake")
    wrong = LakeSettings(catalog=good.catalog, data_path=good.data_path, password="wrong-pw-271828")
    with pytest.raises(StoreUnavailable) as err:
        LakeStore(wrong).open_dataset()
    assert "wrong-pw-271828" not in str(err.value) and "password authentication failed" in str(err.value)
    dead = LakeSettings(catalog=good.catalog.replace(f"port={postgres.port}", "port=1"), data_path=good.data_path,
                        password=PASSWORD)
    with pytest.raises(StoreUnavailable) as err:
        LakeStore(dead).open_dataset()
    assert PASSWORD not in str(err.value)


def rounded(value):
    """attrs records, tuples and floats to 12 significant digits (see `same`), recursively."""
    import attrs

    if attrs.has(type(value)):
        return {k: rounded(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, (tuple, list)):
        return [rounded(v) for v in value]
    return float(f"{value:.12g}") if isinstance(value, float) else value


def test_chart_reads_the_lake_like_the_plain_dataset(recorded, tmp_path, capsys):
    """chart_data over the lake equals chart_data over the plain dataset (lines, bands, volume,
    gaps); `recorder chart --config <lake config>` draws the same chart as `--data <plain root>`."""
    from recorder.charts import chart_data

    plain_root, settings = recorded
    with Dataset.open(plain_root) as plain, LakeStore(settings).open_dataset() as lk:
        for market, kwargs in (("a", {}), ("b", {"venue": "w", "interval": "10m"})):
            want = chart_data(plain, market, **kwargs)
            got = chart_data(lk, market, **kwargs)
            assert want.series and want.volume, market
            assert rounded(got) == rounded(want), market
    cfg = tmp_path / "config.toml"
    cfg.write_text(lake_config_toml(settings, tmp_path / "root"))
    assert cli.main(["chart", "--config", str(cfg), "--market", "a", "-o", str(tmp_path / "lake.png")]) == 0
    lake_line = capsys.readouterr().out
    assert cli.main(["chart", "--data", str(plain_root), "--market", "a", "-o", str(tmp_path / "plain.png")]) == 0
    plain_line = capsys.readouterr().out
    assert (tmp_path / "lake.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same title and gap count; the byte counts and times may differ only by the file name
    assert lake_line.split(";")[:2] == [x.replace("plain.png", "lake.png") for x in plain_line.split(";")[:2]]


def test_maintenance_merges_under_a_lock_one_process_at_a_time(recorded, tmp_path, capsys):
    """`maintain` merges the lake's small files into fewer and every answer stays the same; while
    another session holds the maintenance lock it does nothing and says so. (Runs last: it
    changes the module's lake.)"""
    plain_root, settings = recorded

    def chance_files() -> int:
        with LakeStore(settings).open_dataset() as ds:
            return ds.sql("SELECT count(*) AS n FROM ducklake_list_files('lake', 'chance')").to_pylist()[0]["n"]

    before = chance_files()
    with maintenance_lock(settings) as got:
        assert got
        assert maintain(settings).skipped
    cfg = tmp_path / "config.toml"
    cfg.write_text(lake_config_toml(settings, tmp_path / "root"))
    assert cli.main(["compact", "--config", str(cfg)]) == 0
    assert "merges" in capsys.readouterr().out
    assert chance_files() < before
    assert_same_answers(plain_root, settings)


def test_a_checkpoint_older_than_the_lake_never_reuses_a_flush_number(postgres, tmp_path):
    """The checkpoint moved away (as its error message suggests for a damaged one): the writer
    replays its whole journal and numbers its flushes after the ledger's, so nothing is taken
    for an already committed flush and no registered file is deleted as a stray."""
    settings = lake_settings(postgres, tmp_path / "lake")
    records = mixed_records(600)
    p = Pipeline(tmp_path / "x", tmp_path / "j", lambda f: ListDecoder(records), store=LakeStore(settings)).open()
    for i in range(600):
        p.ingest(jr.Entry(kind=jr.Kind.FRAME, ts_recv=T0 + i, seq=i + 1, feed="f", venue="v", conn_id="c", text=str(i)))
        if i in (199, 399):
            p.commit(p.cut())
    p.journal.sync()
    os.close(p._lock_fd)  # a crash: frames 401-600 only in the journal
    p.store.close()
    (tmp_path / "j" / "checkpoint.json").rename(tmp_path / "checkpoint.moved")
    p2 = Pipeline(tmp_path / "x", tmp_path / "j", lambda f: ListDecoder(records), store=LakeStore(settings)).open()
    assert p2.flush_seq == 2
    p2.close()
    with LakeStore(settings).open_dataset() as ds:
        raw = ds.sql("SELECT seq, count(*) AS n FROM raw GROUP BY ALL").to_pylist()
        flushes = ds.sql("SELECT flush FROM lake.recorder_ledger ORDER BY flush").column("flush").to_pylist()
    assert flushes[:2] == [1, 2] and len(flushes) == len(set(flushes)) > 2  # the new ones numbered 3, 4...
    # committed flushes (1-400) are there once each; the whole journal was replayed on top of them,
    # so what it still held (it had dropped segments before the first commit) appears again:
    # the checkpoint is what says where the journal's committed part ends, and it was moved away.
    assert {r["seq"] for r in raw} == set(range(1, 601))
