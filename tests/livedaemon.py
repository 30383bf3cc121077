"""The simulators and the real daemon (with its [http] window on 127.0.0.1:0) in one Trio run on a
background thread, for tests that drive it from synchronous code (Playwright's sync API)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Callable

import attrs
import trio

from e2e import FAST
from recorder import config as cfgmod
from recorder.simulators.base import SimSettings
from recorder.simulators.fleet import SIM_ENV, Fleet, start_fleet
from recorder.supervisor import run_recorder


@attrs.frozen(kw_only=True)
class Daemon:
    url: str
    fleet: Fleet
    pipeline: Any
    token: trio.lowlevel.TrioToken

    def call(self, fn: Callable, *args):
        """Run an async function in the daemon's Trio run and return its result."""
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def call_sync(self, fn: Callable, *args):
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    def wait_rows(self, feed: str, rows: int, timeout: float = 30.0) -> None:
        """Block until `feed` has decoded at least `rows` rows (the daemon is 'ready' once it runs,
        before any feed has connected: on a loaded machine that can take seconds)."""
        deadline = time.monotonic() + timeout
        while (s := self.pipeline.stats.get(feed)) is None or s.rows < rows:
            if time.monotonic() > deadline:
                raise AssertionError(f"feed {feed} decoded {s.rows if s else 0} rows in {timeout:g} s, not {rows}")
            time.sleep(0.05)


@contextlib.contextmanager
def live_daemon(root: Path, *, settings: SimSettings = FAST, backoff: float = 3.0, max_age: float = 0.5,
                names: tuple[str, ...] | None = None):
    """Yield a Daemon recording every simulated feed (a reconnect waits `backoff`/2..`backoff` s)."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as sims:
            fleet = await start_fleet(sims, settings)
            feeds = [f for f in fleet.feeds(backoff_initial=backoff, backoff_max=backoff)
                     if names is None or f["name"] in names]
            cfg = cfgmod.parse({"storage": {"root": str(root / "data"), "max_age_seconds": max_age,
                                            "commit_interval_ms": 50},
                                "http": {"listen": "127.0.0.1:0"}, "feeds": feeds}, environ=SIM_ENV)
            stop = trio.Event()
            urls: list[str] = []
            async with trio.open_nursery() as rec:
                pipeline = await rec.start(lambda task_status: run_recorder(cfg, stop=stop, on_http=urls.append,
                                                                            task_status=task_status))
                box.update(daemon=Daemon(url=urls[0], fleet=fleet, pipeline=pipeline,
                                         token=trio.lowlevel.current_trio_token()), stop=stop)
                ready.set()
            sims.cancel_scope.cancel()

    def thread_main() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread below
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=thread_main, name="live-daemon", daemon=True)
    thread.start()
    if not ready.wait(30) or "error" in box:
        raise RuntimeError(f"the daemon did not start: {box.get('error')!r}")
    daemon = box["daemon"]
    try:
        yield daemon
    finally:
        with contextlib.suppress(trio.RunFinishedError):
            daemon.call_sync(box["stop"].set)
        thread.join(30)
        if "error" in box:
            raise box["error"]
