"""Helpers for end-to-end tests: the simulator fleet and the recorder in one Trio run."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Awaitable, Callable

import trio

from recorder import config as cfgmod
from recorder.dataset import Dataset
from recorder.simulators.base import SimSettings
from recorder.simulators.fleet import SECRETS, SIM_ENV, Fleet, start_fleet
from recorder.supervisor import run_recorder

FAST = SimSettings(interval=0.02, heartbeat_interval=0.5, ping_interval=0.5, read_deadline=1.0)


def make_config(fleet: Fleet, root: Path, *, names=None, transport="websockets", **feed_overrides):
    feeds = [f for f in fleet.feeds(transport=transport) if names is None or f["name"] in names]
    feeds = [{**f, **feed_overrides} for f in feeds]
    return cfgmod.parse({"storage": {"root": str(root / "data"), "max_age_seconds": 0.5, "commit_interval_ms": 50},
                         "recorder": {"summary_interval_seconds": 1}, "feeds": feeds}, environ=SIM_ENV)


async def record(root: Path, seconds: float, *, settings: SimSettings = FAST, names=None, transport="websockets",
                 during: Callable[[Fleet], Awaitable[None]] | None = None, quiesce: bool = True, ready: bool = True,
                 **overrides) -> Fleet:
    """Run the fleet and the recorder; `during(fleet)` (or `during(fleet, pipeline)`) runs alongside. With `quiesce`, the simulators
    stop pushing before the recorder stops, so every frame sent was received. With `ready`, `during` and the
    `seconds` start once every feed has received a frame: a fault scheduled 0.4 s in must find the feeds
    connected, however long a loaded machine takes to connect them."""
    async with trio.open_nursery() as sims:
        fleet = await start_fleet(sims, settings)
        cfg = make_config(fleet, root, names=names, transport=transport, **overrides)
        stop = trio.Event()
        async with trio.open_nursery() as rec:
            pipeline = await rec.start(lambda task_status: run_recorder(cfg, stop=stop, task_status=task_status))
            if ready:
                await wait_for_frames(pipeline, [f.name for f in cfg.feeds])
            if during is not None:
                wants_pipeline = during.__code__.co_argcount >= 2
                rec.start_soon(*((during, fleet, pipeline) if wants_pipeline else (during, fleet)))
            await trio.sleep(seconds)
            if quiesce:
                for sim in fleet.all:
                    sim.quiesce()
                await trio.sleep(0.5)
            stop.set()
        sims.cancel_scope.cancel()
    return fleet


async def wait_for_frames(pipeline, feeds: list[str], timeout: float = 30.0) -> None:
    """Until every feed in `feeds` has received at least one frame."""
    with trio.fail_after(timeout):
        while any((s := pipeline.stats.get(f)) is None or not s.frames for f in feeds):
            await trio.sleep(0.02)


async def stop_daemon(proc, fleet: Fleet, *, after: float, timeout: float = 30.0, log: Path | None = None,
                      starts: int = 1) -> int:
    """Let a `recorder run` process record for `after` seconds, quiesce the simulators so nothing is
    in flight, SIGTERM it, and return its exit status. With `log`, the `after` seconds count from
    the `starts`-th "recording N feeds" line in it: the daemon has its signal handlers by then (a
    SIGTERM earlier, while a loaded machine is still importing, ends it with -15 and proves nothing)."""
    import signal

    if log is not None:
        with trio.fail_after(60):
            while log.read_text(errors="replace").count("recording ") < starts:
                await trio.sleep(0.05)
    await trio.sleep(after)
    for sim in fleet.all:
        sim.quiesce()
    await trio.sleep(0.7)
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(timeout):
        return await proc.wait()


def redact(text: str) -> str:
    for s in SECRETS:
        text = text.replace(s, "***")
    return text


def sent_counter(fleet: Fleet) -> collections.Counter:
    return collections.Counter(redact(t) for sim in fleet.all for _, t in sim.sent)


def raw_counter(root: Path) -> collections.Counter:
    with Dataset.open(root / "data") as ds:
        return collections.Counter(ds.sql("SELECT payload FROM raw").column("payload").to_pylist())
