"""`recorder run` as a real process: SIGTERM flushes everything and exits 0; no secret is written
anywhere; a config error exits non-zero before connecting."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import trio

from conftest import trio_test
from e2e import FAST, raw_counter, sent_counter, stop_daemon
from recorder.simulators.fleet import SECRETS, SIM_ENV, start_fleet


def toml_value(v):
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def write_config(path, root, feeds):
    lines = ["[storage]", f'root = "{root}"', "max_age_seconds = 0.5", "", "[recorder]", "summary_interval_seconds = 0.5", ""]
    for f in feeds:
        lines.append("[[feeds]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in f.items()]
        lines.append("")
    path.write_text("\n".join(lines))


@trio_test(timeout=90)
async def test_sigterm_flushes_everything_and_no_secret_is_written(tmp_path):
    """A real daemon with every feed, SIGTERM: exit 0, every frame sent is in raw, no secret in any byte."""
    log = tmp_path / "recorder.log"
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, FAST)
        cfg = tmp_path / "config.toml"
        write_config(cfg, tmp_path / "data", fleet.feeds())
        env = {**os.environ, **SIM_ENV}
        with open(log, "wb") as out:
            proc = await trio.lowlevel.open_process([sys.executable, "-m", "recorder.cli", "run", "--config", str(cfg)],
                                                    stdout=out, stderr=out, env=env)
            code = await stop_daemon(proc, fleet, after=3.0, timeout=20, log=log)
        sims.cancel_scope.cancel()
    text = log.read_text()
    assert code == 0, text
    assert "received SIGTERM" in text and "connected to" in text and "frames," in text
    assert raw_counter(tmp_path) == sent_counter(fleet)
    # No secret in any byte the recorder wrote: log, journal, checkpoint, Parquet (decoded too).
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "config.toml":
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, f"{secret[:4]}... found in {path}"
    con = duckdb.connect()
    for table in ("raw", "account", "sessions", "rejects"):
        if not list((tmp_path / "data" / table).glob("*/*/*.parquet")):
            continue
        rows = con.sql(f"SELECT * FROM read_parquet('{tmp_path}/data/{table}/*/*/*.parquet')").to_arrow_table().to_pylist()
        blob = repr(rows)
        assert not any(s in blob for s in SECRETS), table
    assert "predictWalletEvents/***" in repr(con.sql(
        f"SELECT payload FROM read_parquet('{tmp_path}/data/raw/*/*/*.parquet') WHERE payload LIKE '%Wallet%' LIMIT 1").fetchall())


def test_config_error_exits_before_connecting(tmp_path):
    """An unknown key stops `recorder run` at once with the key's path and exit status 2."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[storage]\nroot = "d"\n\n[[feeds]]\nname = "x"\nvenue = "intots"\nstream = "trades"\nspeed = 3\n')
    r = subprocess.run([sys.executable, "-m", "recorder.cli", "run", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "feeds[0].speed: unknown key" in r.stderr
    assert not (tmp_path / "d").exists()


def test_missing_secret_is_a_startup_error(tmp_path):
    """A feed whose secret variable is unset fails at startup naming the variable, not a value."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[storage]\nroot = "d"\n\n[[feeds]]\nname = "w"\nvenue = "predictfun"\ntopics = ["predictWalletEvents"]\n'
                   'jwt_env = "SOME_JWT_VAR"\n')
    env = {k: v for k, v in os.environ.items() if k != "SOME_JWT_VAR"}
    r = subprocess.run([sys.executable, "-m", "recorder.cli", "run", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=30, env=env)
    assert r.returncode == 2 and "SOME_JWT_VAR is not set" in r.stderr
