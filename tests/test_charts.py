"""`recorder chart`: the data a chart is drawn from, the PNG, and the HTML file in a real Chromium.

The dataset is recorded from the simulators with a disconnect injected on every venue, the
feeds held back by a one-second reconnect backoff, so the gap is wide enough to see and to
check: it must be exactly where the `sessions` table says the feeds were not connected.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from browser import open_browser
from e2e import record
from recorder.charts import chart_data, render
from recorder.charts.data import merge_gaps
from recorder.dataset import Dataset
from recorder.errors import QueryError

MARKET = "evt-1"  # Outpoll: chance (op-chance), book (op-book) and trades (op-activity)
FEEDS = ["op-chance", "op-book", "op-activity"]


async def _drop_once(fleet) -> None:
    await trio.sleep(1.5)
    await fleet.outpoll.drop()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("charts")

    async def main():
        with trio.fail_after(30):
            await record(root, 4.0, names=FEEDS, during=_drop_once, backoff_initial_seconds=1.0,
                         backoff_max_seconds=1.0)

    trio.run(main)
    return root / "data"


@pytest.fixture
def ds(data):
    with Dataset.open(data) as d:
        yield d


def live_start(ds: Dataset) -> str:
    """When the recorder first connected: op-chance also recorded an hour of replayed history."""
    return _iso(ds.sql("SELECT epoch_us(min(connected)) AS t FROM sessions").column("t")[0].as_py())


def expected_gaps(ds: Dataset) -> list[tuple[int, int]]:
    """Gaps computed in Python from the sessions rows: per feed, from one close to the next
    connect; merged where feeds overlap."""
    rows = ds.sql("SELECT feed, epoch_us(connected) AS c, epoch_us(closed) AS e FROM sessions "
                  "WHERE feed IN ('op-chance', 'op-book', 'op-activity') ORDER BY feed, c").to_pylist()
    per_feed: list[tuple[int, int]] = []
    for a, b in zip(rows, rows[1:]):
        if a["feed"] == b["feed"] and b["c"] > a["e"]:
            per_feed.append((a["e"], b["c"]))
    merged: list[list[int]] = []
    for s, e in sorted(per_feed):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [tuple(m) for m in merged]


def test_gap_is_where_the_sessions_say(ds):
    """ChartData's one gap is exactly the interval the sessions table shows the feeds disconnected."""
    want = expected_gaps(ds)
    assert len(want) == 1 and 0.3 < (want[0][1] - want[0][0]) / 1e6 < 1.5
    data = chart_data(ds, MARKET, interval="100ms")
    assert [(g.start, g.end) for g in data.gaps] == want
    assert set(data.gaps[0].feeds) == set(FEEDS)


def test_lines_break_at_the_gap_and_hold_every_bucket(ds):
    """Each line has every bucket chance_series returns, and no segment of it crosses the gap: a
    break (None) stands between the last point before the gap and the next one. (A point can
    fall inside the gap: Outpoll stamps whole seconds, and the gap is in receive time.)"""
    data = chart_data(ds, MARKET, interval="100ms")
    gap = data.gaps[0]
    want = ds.query("chance_series", market=MARKET, interval="100ms").num_rows
    assert data.points == want and want > 20
    assert {s.outcome for s in data.series} == {"evt-1-yes", "evt-1-no"}
    for s in data.series:
        assert None in s.values
        for (t0, v0), (t1, v1) in zip(zip(s.times, s.values), zip(s.times[1:], s.values[1:])):
            if v0 is not None and v1 is not None:  # a drawn segment: the buckets between are not in the gap
                assert not (gap.start < t1 and gap.end > t0 + data.interval), (t0, t1)
    assert data.bands and data.volume is not None and data.volume.unit == "size"


def test_range_and_venue_filters(ds):
    """--start/--end clip the gap; a range before the gap has none; a wrong venue has no data."""
    data = chart_data(ds, MARKET)
    gap = data.gaps[0]
    mid = (gap.start + gap.end) // 2
    clipped = chart_data(ds, MARKET, start=_iso(mid), end=_iso(data.end))
    assert [(g.start, g.end) for g in clipped.gaps] == [(mid, gap.end)]
    assert chart_data(ds, MARKET, end=_iso(gap.start - 100_000)).gaps == ()
    with pytest.raises(QueryError, match="no chance, book or trade rows on venue 'intots'"):
        chart_data(ds, MARKET, venue="intots")
    with pytest.raises(QueryError, match="the range is empty"):
        chart_data(ds, MARKET, start=_iso(mid), end=_iso(mid))
    with pytest.raises(QueryError, match="--interval 1us makes"):
        chart_data(ds, MARKET, interval="1us")


def test_merge_gaps_joins_overlapping_feeds(ds):
    """Gaps of two feeds that overlap become one, naming both; apart they stay two."""
    t = ds.sql("SELECT * FROM (VALUES ('a', TIMESTAMPTZ '2026-01-01 00:00:00Z', TIMESTAMPTZ '2026-01-01 00:00:10Z', 'x'),"
               " ('b', TIMESTAMPTZ '2026-01-01 00:00:05Z', TIMESTAMPTZ '2026-01-01 00:00:20Z', 'y'),"
               " ('a', TIMESTAMPTZ '2026-01-01 00:01:00Z', TIMESTAMPTZ '2026-01-01 00:01:01Z', 'x'))"
               " AS v(feed, start, \"end\", reason)")
    gaps = merge_gaps(t)
    assert [(g.feeds, g.seconds) for g in gaps] == [(("a", "b"), 20.0), (("a",), 1.0)]


def test_png_renders(ds, tmp_path):
    """A valid PNG of the chart's size, drawn in well under the test's budget."""
    out = tmp_path / "evt-1.png"
    data = chart_data(ds, MARKET, start=live_start(ds), interval="100ms")
    started = time.perf_counter()
    render(data, out)
    elapsed = time.perf_counter() - started
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    assert struct.unpack(">II", head[16:24]) == (1200, 650)
    assert out.stat().st_size > 20_000 and elapsed < 10


def recorder_cli(*args):
    return subprocess.run([sys.executable, "-m", "recorder.cli", *args], capture_output=True, text=True, timeout=60)


def test_cli_chart_and_its_errors(data, tmp_path):
    """`recorder chart` writes the file named by -o; bad suffix, unknown market, empty range: one line, exit 2."""
    r = recorder_cli("chart", "--market", MARKET, "--data", str(data), "-o", str(tmp_path / "c.png"))
    assert r.returncode == 0, r.stderr
    assert "c.png: evt-1 · outpoll · " in r.stdout and "1 gaps" in r.stdout
    for args, message in [
        (["--market", MARKET, "-o", str(tmp_path / "c.svg")], "the suffix picks the format; use .png or .html"),
        (["--market", "nope", "-o", str(tmp_path / "c.png")], "market 'nope' has no chance, book or trade rows"),
        (["--market", MARKET, "--start", "tuesday", "-o", str(tmp_path / "c.png")], "start='tuesday' is not a valid"),
    ]:
        r = recorder_cli("chart", "--data", str(data), *args)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "c.svg").exists()


def test_html_is_self_contained(ds, tmp_path):
    """One file: the library and the drawing code inlined, nothing loaded from the network."""
    out = tmp_path / "c.html"
    render(chart_data(ds, MARKET, start=live_start(ds), interval="100ms"), out)
    text = out.read_text()
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"<(?:link|img|iframe)\b", text, re.I)
    assert "TradingView Lightweight Charts™ v5.2.1" in text and "window.RecorderChart" in text
    assert "attributionLogo: true" in text
    assert 150_000 < len(text.encode()) < 600_000


def test_html_draws_in_chromium(ds, tmp_path):
    """In headless Chromium the chart draws every point of every line, breaks them at the gap,
    shades the gap where its times fall, and the tooltip over it names the gap."""
    data = chart_data(ds, MARKET, start=live_start(ds), interval="100ms")
    out = tmp_path / "c.html"
    render(data, out)
    with open_browser() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 700})
        external, errors = [], []
        page.route(re.compile(r"^(?!file:|data:|about:).*"), lambda route: (external.append(route.request.url),
                                                                            route.abort()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_function("window.recorderChart && window.recorderChart.stats().width > 0", timeout=10_000)
        page.wait_for_timeout(100)  # one animation frame for the canvas
        stats = page.evaluate("window.recorderChart.stats()")
        shot = page.screenshot()
        box = page.locator("#chart").bounding_box()
        gap = stats["gaps"][0]
        page.mouse.move(box["x"] + (gap["x0"] + gap["x1"]) / 2, box["y"] + 150)
        tooltip = page.locator(".recorder-tooltip").inner_text(timeout=5_000)
    assert errors == [] and external == []
    assert {s["label"]: s["points"] for s in stats["series"]} == {s.label: s.points for s in data.series}
    assert {s["label"]: s["breaks"] for s in stats["series"]} == {s.label: s.values.count(None) for s in data.series}
    assert all(s["breaks"] >= 1 for s in stats["series"])
    assert [(g["start"], g["end"]) for g in stats["gaps"]] == [(g.start, g.end) for g in data.gaps]
    assert 0.1 * stats["width"] < gap["x0"] < gap["x1"] < 0.9 * stats["width"]
    assert stats["grid"] == -(-(data.end - data.to_json()["grid_start"]) // data.interval)
    assert stats["volume"] == len(data.volume.times)
    _assert_gap_shaded(shot, box, gap)
    assert "gap " in tooltip and "op-chance" in tooltip


def _assert_gap_shaded(png: bytes, box: dict, gap: dict) -> None:
    """The screenshot is the gap's grey in the middle of the gap, high and low in the price pane
    (no line or band crosses a gap: both are broken there). Each height is read as a strip of 9
    pixels, most of which must be that grey: the price scale's 1-pixel grid lines (#eee, lighter
    through the shading) fall where the data puts them, and one may cross the strip."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    x = int(box["x"] + (gap["x0"] + gap["x1"]) / 2)
    for y in (box["y"] + 30, box["y"] + box["height"] * 0.4):
        strip = [img.getpixel((x, int(y) + dy)) for dy in range(-4, 5)]
        grey = [(r, g, b) for r, g, b in strip if 200 < r < 235 and abs(r - g) < 6 and abs(r - b) < 6]
        assert len(grey) >= 6, (x, y, strip)


def _iso(us: int) -> str:
    from recorder.timeutil import us_to_datetime

    return us_to_datetime(us).isoformat()


def test_vendored_library_is_recorded():
    """The vendored file is the one VENDORED.md names (version and sha256), with its licence."""
    import hashlib
    from importlib import resources

    assets = resources.files("recorder.charts").joinpath("assets")
    lib = assets.joinpath("lightweight-charts.standalone.production.js").read_bytes()
    notes = assets.joinpath("VENDORED.md").read_text()
    assert hashlib.sha256(lib).hexdigest() in notes and "5.2.1" in notes and b"v5.2.1" in lib[:200]
    assert "Apache License" in assets.joinpath("lightweight-charts.LICENSE.txt").read_text()
