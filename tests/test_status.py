"""What the window makes of the daemon's state, as pure functions: feed states and their
transitions, /healthz, the /status document, `recorder status`'s table and exit code, the metric
families; plus the [http] and log_format config and the JSON log lines."""

from __future__ import annotations

import json
import logging

import pytest

from recorder import config as cfgmod
from recorder.errors import ConfigError
from recorder.feedstate import REASONS, FeedState
from recorder.http import metrics
from recorder.http.status import FeedSnap, Snapshot, StorageSnap, exit_code, health, render_table, status
from recorder.logfmt import JsonFormatter, TEXT_FORMAT
from recorder.storagestats import FLUSH_BUCKETS, FSYNC_BUCKETS, Durations


def feed_state(**kw) -> FeedState:
    return FeedState(name="pf-main", venue="predictfun", stale_seconds=10.0,
                     subscriptions=("kalshiChance/123", "polymarketChance/123"), started_mono=100.0, since=1e9, **kw)


def test_a_feed_goes_connecting_subscribed_backing_off_and_counts_its_gaps():
    """The state follows the connection events; time not connected adds up only while not up."""
    s = feed_state()
    assert s.view(101.0, 1e9, 0.5).state == "connecting"
    s.connecting("c1", 1e9 + 1)
    s.subscribed("c1", 102.0, 1e9 + 2)
    s.watching(dict.fromkeys(s.subscriptions, 102.0), 102.0)
    v = s.view(103.0, 1e9 + 3, 0.1)
    assert (v.state, v.conn_id, v.up, v.gap_seconds) == ("subscribed", "c1", True, 2.0)
    s.ended_connection("dropped", True, 110.0, 1e9 + 10)
    s.backing_off(1.5, 1e9 + 10)
    v = s.view(111.0, 1e9 + 11, 1.0)
    assert (v.state, v.up, v.next_reconnect, v.connections["dropped"]) == ("backing off", False, 1e9 + 11.5, 1)
    assert v.gap_seconds == pytest.approx(3.0)
    with pytest.raises(ValueError):
        s.ended_connection("weird", False, 111.0, 1e9)


def test_a_handover_keeps_the_feed_up():
    """During a venue-requested handover (two connections), the old one closing leaves the feed up."""
    s = feed_state()
    s.subscribed("c1", 101.0, 1e9)
    s.connecting("c2", 1e9 + 1)
    s.subscribed("c2", 102.0, 1e9 + 2)
    s.ended_connection("closed", True, 103.0, 1e9 + 3)
    v = s.view(104.0, 1e9 + 4, 0.1)
    assert (v.state, v.up, v.conn_id, v.gap_seconds) == ("subscribed", True, "c2", 1.0)


def test_subscription_ages_carry_across_reconnects():
    """A subscription silent through a reconnect keeps ageing from its last data; a busy one is fresh;
    a subscribed feed with a silent subscription is "stale"."""
    s = feed_state()
    s.subscribed("c1", 100.0, 1e9)
    live = dict.fromkeys(s.subscriptions, 100.0)
    s.watching(live, 100.0)
    live["kalshiChance/123"] = 105.0  # the read loop saw data
    live["polymarketChance/123"] = 106.0
    s.ended_connection("stale", True, 120.0, 1e9)
    s.subscribed("c2", 121.0, 1e9)
    live2 = dict.fromkeys(s.subscriptions, 121.0)
    s.watching(live2, 121.0)  # the first connection's times are kept
    live2["polymarketChance/123"] = 122.0
    v = s.view(125.0, 1e9, 0.1)
    assert v.subscriptions == {"kalshiChance/123": 20.0, "polymarketChance/123": 3.0}
    assert v.state == "stale"


def snapshot(*, state="subscribed", flush_busy=0.0, fsync_busy=0.0, sub_age=1.0) -> Snapshot:
    s = feed_state()
    if state != "connecting":
        s.subscribed("c1", 100.0, 1e9)
        s.watching({"kalshiChance/123": 100.0 + 99 - sub_age, "polymarketChance/123": 198.0}, 100.0)
    view = s.view(199.0, 1e9 + 99, 0.5)
    feed = FeedSnap(view=view, frames=1234, rejects=2, rows=2000, last_frame_age=0.5,
                    rows_written={"raw": 1200, "chance": 1900})
    storage = StorageSnap(root="/data", buffered_rows=34, journal_backlog_bytes=5678, last_flush=1e9 + 98,
                          flushes=9, disk_errors=0, flush_busy=flush_busy, fsync_busy=fsync_busy, deadline=120.0,
                          flush_max_age=60.0, flush_durations=Durations(FLUSH_BUCKETS),
                          fsync_durations=Durations(FSYNC_BUCKETS), held_bytes=9000, memory_limit_bytes=512 * 2**20)
    return Snapshot(time=1e9 + 99, started=1e9, feeds=(feed,), storage=storage)


def test_healthz_is_ok_until_a_storage_worker_passes_its_deadline():
    """Busy up to the deadline is healthy; past it, the reason names the worker and the times."""
    assert health(snapshot(flush_busy=119.0)) == (True, "ok")
    ok, reason = health(snapshot(fsync_busy=130.4))
    assert not ok and reason == "storage wedged: a journal fsync has been running for 130 s (deadline 120 s)"


def test_status_document_and_exit_code():
    """/status holds each feed's state and counts and the storage figures; `recorder status` exits 0
    when all are subscribed and fresh, 1 otherwise."""
    doc = json.loads(json.dumps(status(snapshot())))
    f = doc["feeds"][0]
    assert (f["state"], f["frames"], f["rejects"], f["conn_id"]) == ("subscribed", 1234, 2, "c1")
    assert set(f["subscriptions"]) == {"kalshiChance/123", "polymarketChance/123"}
    assert set(f["connections_ended"]) == set(REASONS)
    assert doc["storage"] == {"root": "/data", "buffered_rows": 34, "journal_backlog_bytes": 5678,
                              "last_flush": "2001-09-09T01:48:18.000Z", "last_flush_age_seconds": 1.0,
                              "flushes": 9, "disk_errors": 0, "held_bytes": 9000, "memory_limit_bytes": 512 * 2**20}
    assert exit_code(doc) == 0
    stale = status(snapshot(sub_age=30.0))
    assert stale["feeds"][0]["state"] == "stale" and exit_code(stale) == 1
    assert exit_code(status(snapshot(state="connecting"))) == 1


def test_the_status_table_names_a_stale_subscription():
    """The table has a row per feed; a stale subscription is named with its age."""
    table = render_table(status(snapshot(sub_age=30.0)))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["FEED", "STATE", "FRAMES"]
    assert lines[1].startswith("pf-main") and "stale: kalshiChance/123 30.0s" in lines[1]
    assert "34 rows buffered" in table and "health: ok" in table


def test_metric_families_hold_the_contract_names_and_labels():
    """Every contract metric is there, with its type and labels."""
    fams = {f.name: f for f in metrics.families(snapshot())}
    want = {"recorder_frames": ("counter", {"feed", "venue"}), "recorder_rows": ("counter", {"feed", "table"}),
            "recorder_rejects": ("counter", {"feed"}), "recorder_connections": ("counter", {"feed", "reason"}),
            "recorder_feed_up": ("gauge", {"feed"}), "recorder_last_frame_age_seconds": ("gauge", {"feed"}),
            "recorder_subscription_age_seconds": ("gauge", {"feed", "subscription"}),
            "recorder_buffered_rows": ("gauge", set()), "recorder_journal_backlog_bytes": ("gauge", set()),
            "recorder_flush_duration_seconds": ("histogram", set()),
            "recorder_last_flush_timestamp_seconds": ("gauge", set()),
            "recorder_journal_fsync_duration_seconds": ("histogram", set()),
            "recorder_disk_errors": ("counter", set()), "recorder_gap_seconds": ("counter", {"feed"})}
    for name, (kind, labels) in want.items():
        assert fams[name].type == kind, name
        assert all(set(s.labels) - {"le"} == labels for s in fams[name].samples), name
    assert {s.labels["reason"] for s in fams["recorder_connections"].samples} == set(REASONS)


def test_durations_histogram_is_cumulative():
    d = Durations((0.1, 1.0))
    for x in (0.05, 0.5, 0.5, 3.0):
        d.observe(x)
    assert d.counts == [1, 3, 4] and d.count == 4 and d.total == pytest.approx(4.05)


@pytest.mark.parametrize("http, message", [
    ({"listen": "9464"}, "http.listen must be an IP address and a port"),
    ({"listen": "example.com:9464"}, "http.listen must be an IP address and a port"),
    ({"listen": "127.0.0.1:99999"}, "http.listen must be an IP address and a port"),
    ({"listen": "127.0.0.1:9464", "max_connections": 0}, "http.max_connections must be at least 1"),
    ({"listen": "127.0.0.1:9464", "request_timeout_seconds": 0}, "http.request_timeout_seconds must be positive"),
    ({"port": 9464}, "http.port: unknown key"),
])
def test_bad_http_config_names_the_key(http, message):
    with pytest.raises(ConfigError, match=message):
        cfgmod.parse({"storage": {"root": "d"}, "http": http})


def test_http_is_off_unless_configured_and_listen_defaults_to_loopback():
    assert cfgmod.parse({"storage": {"root": "d"}}).http is None
    h = cfgmod.parse({"storage": {"root": "d"}, "http": {}}).http
    assert (h.host, h.port) == ("127.0.0.1", 9464)
    assert cfgmod.parse({"storage": {"root": "d"}, "http": {"listen": "[::1]:0"}}).http.host == "::1"


def test_log_format_must_be_text_or_json():
    with pytest.raises(ConfigError, match="recorder.log_format must be text or json, got 'xml'"):
        cfgmod.parse({"storage": {"root": "d"}, "recorder": {"log_format": "xml"}})


def test_json_log_lines_carry_the_same_content_as_text():
    """One JSON object per line: time, level, logger, feed, event, fields; the event is the text
    line's message after "feed NAME: "."""
    record = logging.LogRecord("recorder.feed", logging.WARNING, __file__, 1, "feed %s: disconnected: %s",
                               ("pf-main", "closed by peer: code 1006"), None)
    record.fields = {"conn_id": "c1", "reason": "dropped"}
    line = json.loads(JsonFormatter().format(record))
    assert set(line) == {"time", "level", "logger", "feed", "event", "fields"}
    assert (line["level"], line["logger"], line["feed"]) == ("warning", "recorder.feed", "pf-main")
    assert line["event"] == "disconnected: closed by peer: code 1006"
    assert line["fields"] == {"conn_id": "c1", "reason": "dropped", "template": "feed %s: disconnected: %s"}
    assert line["time"].endswith("Z")
    text = logging.Formatter(TEXT_FORMAT).format(record)
    assert text.endswith("recorder.feed: feed pf-main: " + line["event"])
    plain = logging.LogRecord("recorder", logging.INFO, __file__, 1, "recording %d feeds", (3,), None)
    assert json.loads(JsonFormatter().format(plain))["feed"] is None


def test_recorder_status_unreachable_is_one_line_and_exit_2(tmp_path):
    """Nothing listening: exit 2 and one line naming the URL; a config without [http] says so; the
    address comes from the config's [http] alone (the feeds' secret variables need not be set)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port that was free a moment ago and now has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def status(*args):
        return subprocess.run([sys.executable, "-m", "recorder.cli", "status", *args], capture_output=True, text=True,
                              timeout=60, env={k: v for k, v in __import__("os").environ.items()
                                               if k != "PREDICTFUN_API_KEY"})

    r = status("--url", f"http://127.0.0.1:{port}")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"recorder: error: cannot reach the recorder at http://127.0.0.1:{port}/status: ")
    assert r.stderr.count("\n") == 1
    cfg = tmp_path / "config.toml"
    cfg.write_text('[storage]\nroot = "d"\n[[feeds]]\nname = "pf"\nvenue = "predictfun"\n'
                   'api_key_env = "PREDICTFUN_API_KEY"\ntopics = ["kalshiChance/1"]\n')
    r = status("--config", str(cfg))
    assert r.returncode == 2 and "has no [http] section" in r.stderr
    cfg.write_text(cfg.read_text() + f'[http]\nlisten = "0.0.0.0:{port}"\n')
    r = status("--config", str(cfg))
    assert r.returncode == 2 and f"http://127.0.0.1:{port}/status" in r.stderr
