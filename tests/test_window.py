"""The daemon's window while it records the simulators: /metrics, /healthz and /status served from
the supervisor's nursery, hostile HTTP clients that must not slow the feeds, secrets that must
never be served, counters that agree with the dataset, and a wedged storage worker."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path

import trio

from conftest import trio_test
from e2e import FAST
from httpclient import get
from recorder import config as cfgmod
from recorder.dataset import Dataset
from recorder.simulators.base import SimSettings
from recorder.simulators.fleet import SECRETS, SIM_ENV, start_fleet
from recorder.supervisor import run_recorder

QUICK = SimSettings(interval=0.02, heartbeat_interval=0.2, ping_interval=0.2, read_deadline=0.4)


@contextlib.asynccontextmanager
async def recording(tmp_path, *, names=None, settings=FAST, http=None, feed=None, storage=None):
    """The simulators and a recorder serving its window on 127.0.0.1 port 0: yields (fleet, pipeline, url).
    On exit the simulators are quiesced and the recorder stopped (it commits everything)."""
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, settings)
        feeds = [{**f, **(feed or {})} for f in fleet.feeds() if names is None or f["name"] in names]
        cfg = cfgmod.parse({"storage": {"root": str(tmp_path / "data"), "max_age_seconds": 0.5,
                                        "commit_interval_ms": 50, **(storage or {})},
                            "http": {"listen": "127.0.0.1:0", **(http or {})}, "feeds": feeds}, environ=SIM_ENV)
        stop, urls = trio.Event(), []
        async with trio.open_nursery() as rec:
            pipeline = await rec.start(lambda task_status: run_recorder(cfg, stop=stop, on_http=urls.append,
                                                                        task_status=task_status))
            yield fleet, pipeline, urls[0]
            for sim in fleet.all:
                sim.quiesce()
            await trio.sleep(0.3)
            stop.set()
        sims.cancel_scope.cancel()


async def status_of(url: str) -> dict:
    code, _, body = await get(url, "/status")
    assert code == 200, body
    return json.loads(body)


async def wait_for(predicate, what: str, timeout: float = 10.0, every: float = 0.05):
    """Poll an async predicate until it returns something truthy (returned), or fail naming `what`."""
    with trio.move_on_after(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await trio.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def samples(text: str, name: str) -> dict[tuple, float]:
    """{labels as sorted (key, value) pairs: value} of one metric in a text exposition."""
    out = {}
    for m in re.finditer(rf"^{name}(?:\{{(.*?)\}})? (\S+)$", text, re.M):
        labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or "")))
        out[labels] = float(m.group(2))
    return out


@trio_test(timeout=60)
async def test_hostile_http_clients_do_not_delay_frames_or_heartbeats(tmp_path):
    """While three feeds record, another process attacks the window (tests/http_attack.py):
    slowloris clients (a byte every 0.3 s) take every connection slot and a flood of 400 concurrent
    connections is refused with 503 meanwhile; the slowloris clients are cut at the deadline, never
    answered; then a flood of 200 mixed with 1 MB requests is served (or refused), and a 1 MB
    request alone gets 431. Throughout, every heartbeat and ping is answered in time (0.2 s), no
    feed reconnects, frames keep arriving, and /healthz answers after."""
    names = {"pf-main", "it-btc", "op-book"}
    http = {"max_connections": 8, "request_timeout_seconds": 1.5}
    async with recording(tmp_path, names=names, settings=QUICK, http=http) as (fleet, _, url):
        await wait_for(lambda: _all_subscribed(url, names), "every feed subscribed")
        before = {f["name"]: f["frames"] for f in (await status_of(url))["feeds"]}
        t0 = trio.current_time()
        done = await trio.run_process([sys.executable, str(Path(__file__).with_name("http_attack.py")), url, "8"],
                                      capture_stdout=True, capture_stderr=True, check=False)
        assert done.returncode == 0, done.stderr.decode()
        result = json.loads(done.stdout)
        attack_seconds = trio.current_time() - t0
        after = await status_of(url)
        code, _, body = await get(url, "/healthz")
        assert (code, body) == (200, b"ok\n")
    print(f"attack {attack_seconds:.1f} s: {result}; frames during it "
          f"{ {f['name']: f['frames'] - before[f['name']] for f in after['feeds']} }")
    assert fleet.predictfun.heartbeats_missed == 0 and fleet.intots.pings_unanswered == 0
    for f in after["feeds"]:
        assert f["state"] == "subscribed" and sum(f["connections_ended"].values()) == 0, f
        # frames kept arriving during the attack (one every 0.02 s per connection: at least a fifth of that)
        assert f["frames"] - before[f["name"]] >= attack_seconds / 0.02 / 5, (f, before, attack_seconds)
    assert result["served_while_held"] == 0 and result["held"].get("503", 0) > 0, result  # none served meanwhile
    assert all(got == "" and 1.4 <= seconds < 5.0 for got, seconds in result["cut"]), result  # cut, unanswered
    assert set(result["mixed"]) <= {"200", "431", "503", "-1"} and result["mixed"].get("200", 0) > 0, result
    assert result["alone"] == {"431": 1}, result


async def _all_subscribed(url, names):
    doc = await status_of(url)
    return {f["name"] for f in doc["feeds"] if f["state"] == "subscribed"} == names


@trio_test(timeout=60)
async def test_no_secret_is_ever_served(tmp_path):
    """Recording the private streams (API keys, secrets, JWTs in the handshake and frames), every
    byte served by /metrics, /status, /healthz, a 404 and a HEAD holds none of the secret values."""
    private = {"op-orders", "op-balances", "op-order-feed", "pf-wallet", "pf-main"}
    async with recording(tmp_path, names=private) as (fleet, _, url):
        await wait_for(lambda: _all_subscribed(url, private), "the private feeds subscribed")
        await wait_for(lambda: _frames_everywhere(url), "frames on every private feed")
        served = b""
        for path, method in (("/metrics", "GET"), ("/status", "GET"), ("/healthz", "GET"), ("/nothing", "GET"),
                             ("/status", "HEAD"), ("/metrics?x=1", "GET")):
            code, headers, body = await get(url, path, method)
            served += json.dumps(headers).encode() + body
        assert b"recorder_frames_total" in served and b'"op-orders"' in served  # the real documents were served
    # the recorder did send the credentials to the venues (so they were there to leak)
    sent_by_recorder = " ".join(t for sim in fleet.all for _, t in sim.received)
    sent_by_recorder += " ".join(json.dumps(c.headers) for sim in fleet.all for c in sim.connections)
    assert sum(secret in sent_by_recorder for secret in SECRETS) >= 2
    for secret in SECRETS:
        assert secret.encode() not in served, "a secret was served"
        # nor any long piece of one (e.g. a JWT's payload part)
        for piece in (secret[i:i + 12] for i in range(0, max(1, len(secret) - 12), 6)):
            assert piece.encode() not in served


async def _frames_everywhere(url):
    return all(f["frames"] > 3 for f in (await status_of(url))["feeds"])


@trio_test(timeout=60)
async def test_metrics_agree_with_the_dataset_and_see_a_drop(tmp_path):
    """recorder_frames_total equals the raw rows written per feed once flushed, rows_total{table}
    equals each table's rows; a dropped connection counts as reason="dropped", time not connected
    grows by at least the backoff, and the feed is up again after."""
    names = {"op-book", "it-trades"}
    async with recording(tmp_path, names=names) as (fleet, pipeline, url):
        await wait_for(lambda: _all_subscribed(url, names), "both feeds subscribed")
        await trio.sleep(0.3)
        gap_before = next(f for f in (await status_of(url))["feeds"] if f["name"] == "it-trades")["seconds_not_connected"]
        await fleet.intots.drop()
        await wait_for(lambda: _reconnected(url, "it-trades"), "it-trades reconnected after the drop")
        await trio.sleep(0.3)
        for sim in fleet.all:
            sim.quiesce()
        await wait_for(lambda: _flushed(pipeline), "everything received flushed", every=0.1)
        code, headers, body = await get(url, "/metrics")
        assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
    frames = samples(text, "recorder_frames_total")
    rows = samples(text, "recorder_rows_total")
    conns = samples(text, "recorder_connections_total")
    gaps = samples(text, "recorder_gap_seconds_total")
    up = samples(text, "recorder_feed_up")
    with Dataset.open(tmp_path / "data") as ds:
        for feed, venue in (("op-book", "outpoll"), ("it-trades", "intots")):
            raw = ds.sql(f"SELECT count(*) AS n FROM raw WHERE feed = '{feed}'").to_pylist()[0]["n"]
            assert frames[(("feed", feed), ("venue", venue))] == raw > 10
            assert rows[(("feed", feed), ("table", "raw"))] == raw
        book = ds.sql("SELECT count(*) AS n FROM book WHERE feed = 'op-book'").to_pylist()[0]["n"]
        trades = ds.sql("SELECT count(*) AS n FROM trades WHERE feed = 'it-trades'").to_pylist()[0]["n"]
    assert rows[(("feed", "op-book"), ("table", "book"))] == book > 0
    assert rows[(("feed", "it-trades"), ("table", "trades"))] == trades > 0
    assert conns[(("feed", "it-trades"), ("reason", "dropped"))] == 1
    assert sum(v for k, v in conns.items() if ("feed", "op-book") in k) == 0
    # not connected while it backed off: at least half its first backoff (0.1 s, jittered down to 0.05)
    assert gaps[(("feed", "it-trades"),)] >= gap_before + 0.05
    assert up == {(("feed", "op-book"),): 1.0, (("feed", "it-trades"),): 1.0}
    for name in ("recorder_buffered_rows", "recorder_journal_backlog_bytes", "recorder_disk_errors_total",
                 "recorder_last_flush_timestamp_seconds", "recorder_flush_duration_seconds_count",
                 "recorder_journal_fsync_duration_seconds_count"):
        assert samples(text, name), name
    assert samples(text, "recorder_flush_duration_seconds_count")[()] >= 1
    assert abs(samples(text, "recorder_last_flush_timestamp_seconds")[()] - time.time()) < 10


async def _reconnected(url, name):
    f = next(f for f in (await status_of(url))["feeds"] if f["name"] == name)
    return f["state"] == "subscribed" and f["connections_ended"]["dropped"] == 1


async def _flushed(pipeline):
    journal = pipeline.journal
    return pipeline.buffers.rows == 0 and journal is not None and journal.position == pipeline.committed


@trio_test(timeout=60)
async def test_healthz_says_503_while_the_storage_worker_is_wedged(tmp_path, monkeypatch):
    """Every fsync takes 1.5 s against a 0.5 s deadline: /healthz answers 503 naming the wedged
    worker (and /status says so); with normal fsyncs it is 200 "ok"."""
    real_fsync, slow = os.fsync, {"on": False}

    def fsync(fd):
        if slow["on"]:
            time.sleep(1.5)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    async with recording(tmp_path, names={"it-btc"}, http={"storage_deadline_seconds": 0.5}) as (_, _, url):
        code, headers, body = await get(url, "/healthz")
        assert (code, body, headers["content-type"]) == (200, b"ok\n", "text/plain; charset=utf-8")
        slow["on"] = True

        async def wedged():
            code, _, body = await get(url, "/healthz")
            return (code, body) if code == 503 else None

        code, body = await wait_for(wedged, "/healthz to say 503", timeout=10)
        assert re.fullmatch(rb"storage wedged: a (journal fsync|Parquet flush) has been running for \d+ s "
                            rb"\(deadline 0.5 s\)\n", body), body
        doc = await status_of(url)
        slow["on"] = False
        assert doc["healthy"] is False and doc["health"].startswith("storage wedged")


def test_a_taken_port_is_one_line_and_exit_2_before_anything_connects(tmp_path):
    """`recorder run` with [http] listen on a port another socket holds: exit 2, one line naming it."""
    import socket
    import subprocess

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg = tmp_path / "config.toml"
        cfg.write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n[http]\nlisten = "127.0.0.1:{port}"\n')
        r = subprocess.run([sys.executable, "-m", "recorder.cli", "run", "--config", str(cfg)], capture_output=True,
                           text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr == f"recorder: error: http.listen: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert not (tmp_path / "data").exists()  # nothing was opened


@trio_test(timeout=60)
async def test_disk_errors_are_counted_and_healthz_stays_ok(tmp_path, monkeypatch):
    """While every fsync fails with ENOSPC, recorder_disk_errors_total and /status count the failed
    attempts (each retried), /healthz stays 200 (failing is not wedged), and once the disk works
    again the last flush moves on."""
    import errno

    real_fsync, failing = os.fsync, {"on": False}

    def fsync(fd):
        if failing["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    async with recording(tmp_path, names={"it-btc"}, storage={"max_age_seconds": 0.2}) as (_, _, url):
        await wait_for(lambda: _all_subscribed(url, {"it-btc"}), "it-btc subscribed")
        failing["on"] = True

        async def errors():
            code, _, body = await get(url, "/metrics")
            n = samples(body.decode(), "recorder_disk_errors_total")[()]
            return n if n >= 2 else None

        counted = await wait_for(errors, "disk errors counted", timeout=15)
        assert (await get(url, "/healthz"))[0] == 200
        doc = await status_of(url)
        assert doc["storage"]["disk_errors"] >= counted
        failing["on"] = False
        before = doc["storage"]["last_flush"]

        async def flushed_again():
            return (await status_of(url))["storage"]["last_flush"] != before

        await wait_for(flushed_again, "a flush after the disk came back", timeout=15)
