"""The `recorder` command as a user runs it: real subprocesses, real files, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import frame, open_pipeline


def recorder(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "recorder.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    p = open_pipeline(root)
    for i in range(1, 301):
        p.ingest(frame(i, ts=1_767_225_600_000_000))
    p.close()
    return root / "data"


def test_query_json_is_usable_for_a_chart(data):
    """--format json prints an array of row objects with ISO 8601 UTC times."""
    r = recorder("query", "chance_history", "--data", str(data), "--param", "market=m1", "--param", "interval=1s",
                 "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows and set(rows[0]) == {"venue", "outcome", "bucket", "open", "high", "low", "close", "count"}
    assert rows[0]["bucket"].endswith("Z")
    assert sum(row["count"] for row in rows) == 300


def test_query_csv_and_table(data):
    """CSV has a header and one line per row; the table format ends with a row count."""
    r = recorder("query", "latest", "--data", str(data), "--format", "csv")
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("venue,market,outcome")
    r = recorder("query", "latest", "--data", str(data))
    assert r.returncode == 0 and r.stdout.strip().endswith("(1 rows)")


def test_sql_has_the_views(data):
    """`recorder sql` runs any SQL with a view per table defined."""
    r = recorder("sql", "SELECT count(*) AS n FROM raw", "--data", str(data), "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == [{"n": 300}]


@pytest.mark.parametrize("args, message", [
    (["query", "nope"], "unknown query 'nope'"),
    (["query", "chance_history"], "needs --param market"),
    (["query", "chance_history", "--param", "market"], "must be written NAME=VALUE"),
    (["query", "chance_history", "--param", "market=a", "--param", "start=tuesday"], "start='tuesday' is not a valid timestamp"),
    (["query", "trades", "--param", "market=a", "--param", "limit=many"], "limit='many' is not a valid integer"),
    (["sql", "SELECT * FROM nowhere"], "SQL failed"),
])
def test_bad_input_gets_one_line_and_exit_2(data, args, message):
    """Each mistake is named on one stderr line and the exit status is 2."""
    r = recorder(*args, "--data", str(data))
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_and_empty_datasets(tmp_path):
    """A missing root and a root without Parquet files are both clear errors."""
    r = recorder("sql", "SELECT 1", "--data", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = recorder("sql", "SELECT 1", "--data", str(tmp_path))
    assert r.returncode == 2 and "holds no Parquet files" in r.stderr


def test_data_root_comes_from_the_config(data, tmp_path):
    """Without --data, the dataset root is storage.root of --config."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[storage]\nroot = "{data}"\n')
    r = recorder("sql", "SELECT count(*) AS n FROM chance", "--config", str(cfg), "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == [{"n": 300}]
    r = recorder("sql", "SELECT 1", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "cannot read config" in r.stderr


def test_every_command_has_help():
    """--help works for the top command and each subcommand."""
    for args in ([], ["run"], ["demo"], ["simulate"], ["query"], ["sql"], ["queries"]):
        r = recorder(*args, "--help")
        assert r.returncode == 0 and "usage: recorder" in r.stdout


def test_queries_lists_every_named_query():
    """`recorder queries` lists each query with its parameters."""
    r = recorder("queries")
    for name in ("chance_history", "trades", "trade_volume", "book_at", "latest", "coverage"):
        assert f"{name}:" in r.stdout


def test_the_command_puts_arrow_on_the_system_allocator_before_pyarrow_loads():
    """The Parquet writer allocates from Arrow's C++ default pool, fixed when pyarrow loads: the
    `recorder` command makes it the C library's malloc (mimalloc kept 30-40 MB of freed pages)."""
    code = "import recorder.cli, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "system", out.stderr


def test_simulate_prints_every_simulator_url_and_its_test_credentials():
    """`recorder simulate --seconds 1`: one line per simulated feed (name, ws:// URL on loopback),
    the simulators' own credentials as export lines, then a clean exit when the time is up."""
    r = recorder("simulate", "--seconds", "1")
    assert r.returncode == 0, r.stderr
    urls = [line.rsplit(None, 1) for line in r.stdout.splitlines() if "ws://" in line]
    assert urls and all(url.startswith("ws://127.0.0.1:") for _, url in urls)
    assert {name.split()[0] for name, _ in urls} == {"outpoll", "intots", "predictfun"}
    assert any(line.startswith("  export PREDICTFUN_API_KEY=") for line in r.stdout.splitlines())
