"""The recorder as a user installs it: a wheel built from this tree, installed into a fresh virtual
environment outside the clone, run from a directory that is not the clone. Nothing here imports
the package from the source tree: every command is the installed `recorder`."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import trio

from conftest import ROOT, trio_test
from e2e import FAST, sent_counter, stop_daemon
from httpclient import get
from recorder.simulators.fleet import SIM_ENV, start_fleet
from test_daemon import write_config

pytestmark = pytest.mark.timeout(300)
BUILD_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                      ".hypothesis", "data", "demo-data", "bench-out", "node_modules", "*.so")


def _env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH pointing back at the source tree."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Build the wheel from a clean copy of the tree and install it into a new venv; the venv's bin/."""
    base = tmp_path_factory.mktemp("install")
    src, wheels, venv = base / "src", base / "wheels", base / "venv"
    shutil.copytree(ROOT, src, ignore=BUILD_IGNORE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "-w", str(wheels), str(src)], check=True, timeout=180, env=_env(), cwd=base)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60, env=_env())
    wheel = next(wheels.glob("recorder-*.whl"))
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=240, env=_env(), cwd=base)
    return venv / "bin"


def run(bin_dir: Path, *args: str, cwd: Path, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / "recorder"), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**_env(), **kw.pop("env", {})}, **kw)


def test_the_wheel_carries_every_package_and_file_the_recorder_reads(installed, tmp_path):
    """Every subpackage of recorder/ and every schema and named query is in the installed package, which
    is imported from the venv, not from the clone; --version answers."""
    code = ("import importlib.resources as r, json, recorder; from recorder import schema, queries; "
            "print(json.dumps({'file': recorder.__file__, 'tables': [schema.load(t).name for t in schema.TABLES], "
            "'queries': sorted(queries.catalog())}))")
    out = json.loads(subprocess.run([str(installed / "python"), "-c", code], capture_output=True, text=True, check=True,
                                    cwd=tmp_path, env=_env(), timeout=60).stdout)
    assert not Path(out["file"]).resolve().is_relative_to(ROOT)
    assert out["queries"] == sorted(p.stem for p in (ROOT / "queries").glob("*.sql"))
    assert sorted(out["tables"]) == sorted(p.stem for p in (ROOT / "schemas").glob("*.toml"))
    site = Path(out["file"]).parent
    source_packages = {p.parent.relative_to(ROOT / "recorder") for p in (ROOT / "recorder").rglob("__init__.py")}
    assert all((site / p / "__init__.py").is_file() for p in source_packages), source_packages
    version = run(installed, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("recorder ")
    assert "(compiled part: built)" in version.stdout, version.stdout


def test_the_wheel_carries_the_compiled_book_reader_and_the_recorder_uses_it(installed, tmp_path):
    """The wheel is built with recorder/_speedups.c (setup.py), installed outside the clone, and the
    predict.fun decoder reads books with it: the bench payloads go through it whole, with the
    values the checked path reads."""
    code = ("import json, recorder._speedups as s; from recorder.venues import predictfun as p; "
            "d = p.make_decoder(p.FeedSpec(topics=('predictOrderbook/1',))); "
            "t = ['{\"type\":\"M\",\"topic\":\"predictOrderbook/7\",\"data\":{\"bids\":[[0.5,10]],\"asks\":[[0.6,2.5]]}}']; "
            "r = s.predictfun_books(t); "
            "print(json.dumps({'file': s.__file__, 'compiled': d.compiled, 'declined': r[1], 'markets': r[3], "
            "'best': [r[10][0], r[11][0]]}))")
    out = json.loads(subprocess.run([str(installed / "python"), "-c", code], capture_output=True, text=True, check=True,
                                    cwd=tmp_path, env=_env(), timeout=60).stdout)
    assert not Path(out["file"]).resolve().is_relative_to(ROOT) and out["file"].endswith(".so")
    assert out == {**out, "compiled": True, "declined": [], "markets": ["7"], "best": [0.5, 0.6]}


def test_demo_from_the_installed_command(installed, tmp_path):
    """`recorder demo --seconds 5` from a directory that is not the clone records and queries every venue."""
    r = run(installed, "demo", "--seconds", "5", "--data", str(tmp_path / "demo"), cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "recorder query coverage" in r.stdout and "gap" in r.stdout
    for venue in ("outpoll", "intots", "predictfun"):
        assert venue in r.stdout


@trio_test(timeout=200)
async def test_run_query_sql_compact_from_the_installed_command(installed, tmp_path):
    """`recorder run` (as the shipped systemd unit starts it) records the simulators until SIGTERM and
    exits 0; then `query`, `sql` and `compact` from the installed command read what it wrote."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "deploy" / "systemd" / "recorder.service")
    service = unit["Service"]
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    exec_start = shlex.split(service["ExecStart"])
    assert Path(exec_start[0]).name == "recorder" and exec_start[1:3] == ["run", "--config"]
    data, cfg = tmp_path / "data", tmp_path / "config.toml"
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, FAST)
        write_config(cfg, data, [f for f in fleet.feeds() if f["name"] in ("it-chart", "op-chance", "pf-main")])
        argv = [str(installed / "recorder"), *exec_start[1:-1], str(cfg)]  # the unit's command, this venv's paths
        with open(tmp_path / "recorder.log", "wb") as log:
            proc = await trio.lowlevel.open_process(argv, stdout=log, stderr=log, cwd=tmp_path,
                                                    env={**_env(), **SIM_ENV})
            code = await stop_daemon(proc, fleet, after=3.0, timeout=float(service["TimeoutStopSec"]),
                                      log=tmp_path / "recorder.log")
        sims.cancel_scope.cancel()
    assert code == 0, (tmp_path / "recorder.log").read_text()[-2000:]
    sql = run(installed, "sql", "--data", str(data), "--format", "json", "SELECT payload FROM raw", cwd=tmp_path)
    assert sql.returncode == 0, sql.stderr
    assert sorted(r["payload"] for r in json.loads(sql.stdout)) == sorted(sent_counter(fleet).elements())
    q = run(installed, "query", "chance_history", "--data", str(data), "--param", "market=42", "--format", "json",
            cwd=tmp_path)
    assert q.returncode == 0 and {r["outcome"] for r in json.loads(q.stdout)} == {"Yes", "No"}, q.stderr
    compact = run(installed, "compact", "--data", str(data), cwd=tmp_path)
    assert compact.returncode == 0 and "compacted" in compact.stdout, compact.stderr
    after = run(installed, "sql", "--data", str(data), "--format", "json", "SELECT count(*) AS n FROM raw", cwd=tmp_path)
    assert json.loads(after.stdout)[0]["n"] == sum(sent_counter(fleet).values())
    bad = run(installed, "run", "--config", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert bad.returncode == 2 == int(service["RestartPreventExitStatus"]) and "missing.toml" in bad.stderr


@trio_test(timeout=120)
async def test_the_window_status_and_alert_rules_from_the_installed_command(installed, tmp_path):
    """The installed `recorder run` with [http] serves /metrics, /status and the live page (JSON log lines),
    `recorder status` reads it (exit 0, every feed subscribed), and `recorder prometheus DIR` writes
    the alert rules from the package, which promtool accepts when it is installed."""
    data, cfg, log_path = tmp_path / "data", tmp_path / "config.toml", tmp_path / "recorder.log"
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, FAST)
        write_config(cfg, data, [f for f in fleet.feeds() if f["name"] in ("it-btc", "pf-main")])
        cfg.write_text(cfg.read_text().replace("[recorder]\n", '[recorder]\nlog_format = "json"\n')
                       + '\n[http]\nlisten = "127.0.0.1:0"\n')
        with open(log_path, "wb") as log:
            proc = await trio.lowlevel.open_process([str(installed / "recorder"), "run", "--config", str(cfg)],
                                                    stdout=log, stderr=log, cwd=tmp_path, env={**_env(), **SIM_ENV})
        url, status = None, None
        with trio.move_on_after(20):
            while status is None or status.returncode != 0:
                await trio.sleep(0.2)
                events = [json.loads(line)["event"] for line in log_path.read_text().splitlines()]
                url = url or next((e.rsplit(" ", 1)[1] for e in events if e.startswith("serving /metrics")), None)
                if url:
                    status = await trio.to_thread.run_sync(lambda: run(installed, "status", "--url", url, cwd=tmp_path))
        page = await get(url, "/") if url else None  # the live page, its assets read from the wheel
        chart = await get(url, "/api/chart?market=123&venue=predictfun") if url else None
        code = await stop_daemon(proc, fleet, after=0, timeout=30)
        sims.cancel_scope.cancel()
    assert code == 0 and url is not None, log_path.read_text()[-2000:]
    assert status.returncode == 0, status.stdout + status.stderr
    assert "it-btc" in status.stdout and "pf-main" in status.stdout
    assert page[0] == 200 and b"window.recorderLive" in page[2] and b"Lightweight Charts" in page[2]
    assert chart[0] == 200 and json.loads(chart[2])["market"] == "123"
    prom = run(installed, "prometheus", str(tmp_path / "prom"), cwd=tmp_path)
    assert prom.returncode == 0, prom.stderr
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], capture_output=True, text=True,
                               cwd=tmp_path / "prom", timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
