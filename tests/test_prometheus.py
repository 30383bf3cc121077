"""End to end with a real Prometheus: `recorder run` (JSON logs, [http] on a free port) records the
simulators; Prometheus (Debian's package, 1 s scrape and rule intervals, the shipped alerts.yml with
its `for:` shortened to 1 s) scrapes it. Through Prometheus' own HTTP API: recorder_frames_total
rises; after the predict.fun simulator silences one topic, RecorderSubscriptionStale fires for it,
and `recorder status` exits 1 naming it (0 before)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

from conftest import trio_test
from e2e import FAST
from httpclient import get
from recorder.simulators.fleet import SIM_ENV, start_fleet
from test_daemon import write_config

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed: apt-get install prometheus")
SILENCED = "kalshiChance/123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def poll(what: str, timeout: float, check, every: float = 0.25):
    """Call async `check` until it returns something truthy (returned), or fail naming `what`."""
    with trio.move_on_after(timeout):
        while True:
            value = await check()
            if value:
                return value
            await trio.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def rules_with_short_for(out: Path) -> Path:
    text = (resources.files("recorder.prometheus") / "alerts.yml").read_text()
    short = re.sub(r"^(\s+)for: \S+$", r"\1for: 1s", text, flags=re.M)
    assert short != text
    out.write_text(short)
    return out


async def start_prometheus(nursery, tmp_path: Path, target: str):
    """Prometheus on a free loopback port; retried on another port if that one was taken meanwhile."""
    rules = rules_with_short_for(tmp_path / "alerts.yml")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: recorder
    static_configs:
      - targets: ["{target}"]
""")
    for attempt in range(3):
        port = free_port()
        log = open(tmp_path / f"prometheus-{attempt}.log", "wb")
        proc = await nursery.start(lambda task_status: trio.run_process(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log, check=False,
            task_status=task_status))
        url = f"http://127.0.0.1:{port}"

        async def ready():
            if proc.returncode is not None:
                return "exited"
            try:
                code, _, _ = await get(url, "/-/ready")
            except OSError:
                return None
            return "ready" if code == 200 else None

        if await poll("prometheus ready", 20, ready) == "ready":
            return proc, url
    raise AssertionError(f"prometheus did not start: {(tmp_path / 'prometheus-2.log').read_text()[-2000:]}")


async def api(url: str, path: str) -> dict:
    code, _, body = await get(url, path)
    assert code == 200, body
    doc = json.loads(body)
    assert doc["status"] == "success", doc
    return doc["data"]


async def frames_of(prom: str, feed: str) -> float | None:
    data = await api(prom, "/api/v1/query?query=" + quote(f'recorder_frames_total{{feed="{feed}"}}'))
    return float(data["result"][0]["value"][1]) if data["result"] else None


def recorder_status(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recorder.cli", "status", "--url", url], capture_output=True,
                          text=True, timeout=30)


@trio_test(timeout=60)
async def test_prometheus_scrapes_the_recorder_and_the_stale_subscription_alert_fires(tmp_path):
    log_path = tmp_path / "recorder.log"
    async with trio.open_nursery() as nursery:
        fleet = await start_fleet(nursery, FAST)
        feeds = [f for f in fleet.feeds() if f["name"] in ("pf-main", "it-btc", "op-book")]
        for f in feeds:
            if f["name"] == "pf-main":
                f["stale_seconds"] = 1.0
        cfg = tmp_path / "config.toml"
        write_config(cfg, tmp_path / "data", feeds)
        cfg.write_text(cfg.read_text().replace("[recorder]\n", '[recorder]\nlog_format = "json"\n')
                       + '\n[http]\nlisten = "127.0.0.1:0"\n')
        with open(log_path, "wb") as log:
            daemon = await trio.lowlevel.open_process([sys.executable, "-m", "recorder.cli", "run", "--config", str(cfg)],
                                                      stdout=log, stderr=log, env={**os.environ, **SIM_ENV})
        try:
            async def serving():
                for line in log_path.read_text().splitlines():
                    event = json.loads(line)["event"]
                    if event.startswith("serving /metrics"):
                        return event.rsplit(" ", 1)[1]
                return None

            url = await poll("the recorder to serve its window", 15, serving)
            async def all_fresh():  # every feed subscribed and fresh: exit 0 (polled: they connect first)
                r = await trio.to_thread.run_sync(recorder_status, url)
                return r if r.returncode == 0 else None

            status_ok = await poll("recorder status to exit 0", 20, all_fresh)
            t0 = trio.current_time()
            prom_proc, prom = await start_prometheus(nursery, tmp_path, url.removeprefix("http://"))
            t_ready = trio.current_time()
            first = await poll("a first sample of recorder_frames_total in Prometheus", 20,
                               lambda: frames_of(prom, "pf-main"))
            await poll("recorder_frames_total to rise", 10, lambda: _above(prom, first))
            t_rise = trio.current_time()
            fleet.predictfun.silence(SILENCED)

            async def firing():
                data = await api(prom, "/api/v1/alerts")
                return [a for a in data["alerts"] if a["labels"]["alertname"] == "RecorderSubscriptionStale"
                        and a["state"] == "firing"]

            alerts = await poll("RecorderSubscriptionStale firing", 20, firing)
            print(f"prometheus ready {t_ready - t0:.1f} s, frames seen rising {t_rise - t0:.1f} s after start;"
                  f" alert firing {trio.current_time() - t_rise:.1f} s after the silence")
            status_stale = await trio.to_thread.run_sync(recorder_status, url)
        finally:
            daemon.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                code = await daemon.wait()
            nursery.cancel_scope.cancel()
    lines = log_path.read_text().splitlines()
    assert code == 0, lines[-20:]
    assert status_ok.returncode == 0, status_ok.stdout + status_ok.stderr
    assert [a["labels"]["subscription"] for a in alerts] == [SILENCED]
    assert alerts[0]["labels"]["feed"] == "pf-main"
    assert status_stale.returncode == 1, status_stale.stdout + status_stale.stderr
    assert SILENCED in status_stale.stdout and "pf-main" in status_stale.stdout
    # the daemon's log: one JSON object per line, every line
    for line in lines:
        assert set(json.loads(line)) == {"time", "level", "logger", "feed", "event", "fields"}, line
    assert any(json.loads(line)["event"].startswith("stale: no data for kalshiChance/123") for line in lines)


async def _above(prom: str, first: float):
    value = await frames_of(prom, "pf-main")
    return value is not None and value > first
