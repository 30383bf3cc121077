"""The lake store against a real PostgreSQL: same answers as the plain dataset, the commit
protocol's ledger, secrets kept out of errors, maintenance under its lock."""

from __future__ import annotations

import random

import pytest

from lakehelp import lake_config_toml, lake_settings
from pgserver import PASSWORD, PASSWORD_ENV, postgres  # noqa: F401 (the fixture)

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


@pytest.fixture
def lake(postgres, tmp_path) -> LakeSettings:
    return lake_settings(postgres, tmp_path / "lake")


NAMED = [("chance_history", {"market": "a", "interval": "1h"}), ("latest", {}), ("trades", {"market": "b"}),
         ("trade_volume", {"market": "a", "interval": "10m"}), ("book_at", {"market": "a", "at": "2026-01-02T00:00:00Z"}),
         ("coverage", {})]


def test_lake_answers_every_query_like_the_plain_dataset(lake, tmp_path):
    """The same frames recorded into a plain dataset and into a lake: every named query and every
    table's full content are equal, column for column."""
    records = mixed_records()
    record(Pipeline(tmp_path / "plain", tmp_path / "j1", lambda f: ListDecoder(records), batch_rows=300), records)
    record(Pipeline(tmp_path / "unused", tmp_path / "j2", lambda f: ListDecoder(records), batch_rows=300,
                    store=LakeStore(lake)), records)
    assert not (tmp_path / "unused").exists() or not list((tmp_path / "unused").rglob("*.parquet"))
    with Dataset.open(tmp_path / "plain") as plain, LakeStore(lake).open_dataset() as lk:
        for name, params in NAMED:
            want = plain.query(name, **params)
            got = lk.query(name, **params)
            assert got.num_rows > 0 or name == "coverage", name
            assert same(got.to_pylist()) == same(want.to_pylist()), name
        for table in ("chance", "trades", "book", "raw", "sessions"):
            sql = f"SELECT * FROM {table} ORDER BY ALL"
            want, got = plain.sql(sql), lk.sql(sql)
            assert got.column_names == want.column_names, table
            assert got.to_pylist() == want.to_pylist(), table
        ledger = lk.sql("SELECT writer, flush, count(*) AS n FROM lake.recorder_ledger GROUP BY ALL").to_pylist()
    assert ledger and all(r["n"] == 1 for r in ledger)
    assert len({r["writer"] for r in ledger}) == 1 and len(ledger[0]["writer"]) == 32


def test_publish_again_registers_nothing_twice(lake, tmp_path):
    """Publishing a flush the ledger already holds (a crash after COMMIT) adds no rows."""
    records = mixed_records(300)
    store = LakeStore(lake)
    p = Pipeline(tmp_path / "x", tmp_path / "j", lambda f: ListDecoder(records), store=store).open()
    for i in range(300):
        p.ingest(jr.Entry(kind=jr.Kind.FRAME, ts_recv=T0 + i, seq=i + 1, feed="f", venue="v", conn_id="c", text=str(i)))
    job = p.cut()
    pending = p.checkpoint(job)
    store.publish(job.flush_seq, pending)
    store.publish(job.flush_seq, pending)  # as recovery would after a kill -9 just after COMMIT
    p.close()
    with LakeStore(lake).open_dataset() as ds:
        assert ds.sql("SELECT count(*) AS n FROM raw").to_pylist() == [{"n": 300}]


def test_cli_query_and_sql_read_the_lake(lake, tmp_path, capsys):
    """`recorder sql` and `recorder query` with a lake config read the lake (read-only), and the
    lake's time travel works from `recorder sql`."""
    records = mixed_records(600)
    record(Pipeline(tmp_path / "x", tmp_path / "j", lambda f: ListDecoder(records), store=LakeStore(lake)), records)
    cfg = tmp_path / "config.toml"
    cfg.write_text(lake_config_toml(lake, tmp_path / "root"))
    assert cli.main(["sql", "--config", str(cfg), "--format", "csv", "SELECT count(*) AS n FROM raw"]) == 0
    assert capsys.readouterr().out.split() == ["n", "600"]
    assert cli.main(["query", "latest", "--config", str(cfg), "--format", "csv"]) == 0
    assert "probability" in capsys.readouterr().out
    assert cli.main(["sql", "--config", str(cfg), "--format", "csv",
                     "SELECT count(*) AS n FROM lake.raw AT (VERSION => 1)"]) == 0  # before any flush
    assert capsys.readouterr().out.split() == ["n", "0"]
    assert cli.main(["sql", "--config", str(cfg), "INSERT INTO lake.recorder_ledger VALUES ('x', 1, 0, 0, now())"]) == 2
    assert "read-only" in capsys.readouterr().err


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


def test_maintenance_merges_under_a_lock_one_process_at_a_time(lake, tmp_path):
    """`maintain` merges a lake's many small files into fewer, same rows; while another session
    holds the maintenance lock it does nothing and says so."""
    records = mixed_records(3000)
    record(Pipeline(tmp_path / "x", tmp_path / "j", lambda f: ListDecoder(records), batch_rows=300,
                    store=LakeStore(lake)), records)

    def files_and_rows():
        with LakeStore(lake).open_dataset() as ds:
            files = ds.sql("SELECT count(*) AS n FROM ducklake_list_files('lake', 'chance')").to_pylist()[0]["n"]
            return files, ds.sql("SELECT count(*) AS n FROM chance").to_pylist()[0]["n"]

    before = files_and_rows()
    with maintenance_lock(lake) as got:
        assert got
        assert maintain(lake).skipped
    result = maintain(lake)
    assert not result.skipped
    after = files_and_rows()
    assert after[1] == before[1] == 1000
    assert after[0] < before[0]
