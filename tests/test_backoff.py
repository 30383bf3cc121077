"""Reconnect backoff: capped, jittered, exponential; under MockClock so 30-second waits take no time."""

from __future__ import annotations

import random

import attrs
import pytest

import trio
import trio.testing

from conftest import trio_test
from helpers import open_pipeline
from recorder import config as cfgmod
from recorder.feed import Backoff, Feed


def test_backoff_doubles_with_jitter_up_to_the_cap():
    """Delay k lies in [d/2, d] with d = min(cap, initial * 2**k); reset starts over."""
    b = Backoff(1.0, 30.0, random.Random(1))
    for k in range(10):
        d = min(30.0, 2.0 ** k)
        assert d / 2 <= b.next() <= d
    b.reset()
    assert 0.5 <= b.next() <= 1.0


class CountingFeed(Feed):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.attempts: list[float] = []

    async def _connection(self, result, wake):
        self.attempts.append(trio.current_time())
        await super()._connection(result, wake)


@pytest.mark.timeout(20)  # real seconds; the trio deadline below is virtual
@trio_test(timeout=10_000, clock=lambda: trio.testing.MockClock(autojump_threshold=0))
async def test_feed_reconnects_on_the_backoff_schedule(tmp_path):
    """A feed that cannot connect retries after ~1, 2, 4 ... s, never more than 30 s apart (virtual time)."""
    cfg = cfgmod.parse({"storage": {"root": str(tmp_path)}, "feeds": [
        {"name": "x", "venue": "intots", "stream": "trades"}]}, environ={})
    # A URL the config would refuse, so the transport fails before any I/O and virtual time is exact.
    feed_cfg = attrs.evolve(cfg.feeds[0], url="ws://127.0.0.1:notaport/")
    pipeline = open_pipeline(tmp_path)
    feed = CountingFeed(feed_cfg, pipeline, rng=random.Random(3))
    with trio.move_on_after(300):
        await feed.run()
    gaps = [b - a for a, b in zip(feed.attempts, feed.attempts[1:])]
    assert len(gaps) >= 12
    for k, gap in enumerate(gaps):
        d = min(30.0, 2.0 ** k)
        assert d / 2 - 1e-6 <= gap <= d + 1e-6, (k, gap)
    assert max(gaps) <= 30.0 and min(gaps[6:]) >= 15.0
    pipeline.close()
