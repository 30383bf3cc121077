"""One feed: connect, authenticate and subscribe, read frames, reconnect with backoff, forever.

Each received frame is stamped with the receive time first, has the feed's secrets replaced by
`***`, and is handed to the pipeline (journal, then decode: memory only, never disk). The venue's
Protocol object decides the control side: replies to send (heartbeat echo), subscribed, fatal
(auth rejected: back off), or a reconnect notice (open the next connection now, keep reading
this one until it closes). Staleness is a deadline moved forward on every frame.

Only transport errors reconnect. Anything else is a bug and propagates to the supervisor.
"""

from __future__ import annotations

import logging
import random
import secrets as pysecrets
import time
from typing import Callable

import attrs
import trio

from . import journal as jr
from .config import FeedConfig
from .errors import ConnectFailed, ConnectionClosed, TransportError
from .pipeline import Pipeline
from .transport import open_connection
from .venues import registry
from .venues.base import NOTHING

log = logging.getLogger("recorder.feed")
GOING_AWAY = 1001  # predict.fun (and any venue): reconnect at once


class Backoff:
    """Capped exponential backoff with jitter: initial, 2x, 4x ... up to `cap`, each in [d/2, d]."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial, self.cap = initial, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = min(self.cap, self.initial * (2 ** self.attempt))
        self.attempt += 1
        return delay / 2 + self._rng.random() * delay / 2

    def reset(self) -> None:
        self.attempt = 0


def redactor(values: list[str]) -> Callable[[str], str]:
    """A function replacing every secret value in a text by `***`."""
    values = [v for v in values if v]
    if not values:
        return lambda text: text

    def redact(text: str) -> str:
        for v in values:
            if v in text:
                text = text.replace(v, "***")
        return text

    return redact


@attrs.define
class ConnectionResult:
    reason: str = "stopped"
    healthy: bool = False
    fatal: bool = False
    immediate: bool = False  # reconnect without backoff (1001 close, reconnect notice)


class Feed:
    def __init__(self, cfg: FeedConfig, pipeline: Pipeline, *, rng: random.Random | None = None,
                 wall_clock: Callable[[], int] = time.time_ns) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.module = registry.module(cfg.venue)
        self.redact = redactor([s.value for s in cfg.secrets])
        self.backoff = Backoff(cfg.backoff_initial, cfg.backoff_max, rng)
        self._now_ns = wall_clock
        self.connections = 0
        self.url = self.redact(cfg.url)
        self.paused = False  # waiting for memory (storage.max_memory_mb): not reading its socket
        self.paused_seconds = 0.0

    def _now_us(self) -> int:
        return self._now_ns() // 1000

    async def run(self) -> None:
        """Keep one connection up (two during a venue-requested handover) until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                wake = trio.Event()
                result = ConnectionResult()
                nursery.start_soon(self._connection, result, wake)
                await wake.wait()
                if result.immediate:
                    log.info("feed %s: reconnecting now (%s)", self.cfg.name, result.reason)
                    continue
                if result.healthy:
                    self.backoff.reset()
                delay = self.cfg.backoff_max if result.fatal else self.backoff.next()
                log.info("feed %s: reconnecting in %.1f s", self.cfg.name, delay)
                await trio.sleep(delay)

    async def _connection(self, result: ConnectionResult, wake: trio.Event) -> None:
        """One connection, from connect to close. Sets `wake` when the next one should start."""
        self.connections += 1
        conn_id = f"{self.cfg.name}-{time.time_ns() // 1_000_000:x}-{pysecrets.token_hex(2)}"
        started = trio.current_time()
        opened = False
        try:
            headers = self.module.handshake_headers(self.cfg.spec, self.cfg.secrets)
            async with open_connection(self.cfg.url, headers=headers, max_message_bytes=self.cfg.max_message_bytes,
                                       transport=self.cfg.transport) as conn:
                opened = True
                self._journal(jr.Kind.OPEN, conn_id, self.url)
                log.info("feed %s: connected to %s (%s)", self.cfg.name, self.url, conn_id)
                await self._read(conn, conn_id, result, wake)
        except ConnectFailed as exc:
            result.reason = self.redact(str(exc))
            result.fatal = exc.status in (401, 403)
            log.warning("feed %s: %s", self.cfg.name, result.reason)
        except ConnectionClosed as exc:
            result.reason = self.redact(str(exc))
            result.immediate = exc.code == GOING_AWAY and not wake.is_set()
            log.warning("feed %s: disconnected: %s", self.cfg.name, result.reason)
        except TransportError as exc:
            result.reason = self.redact(str(exc))
            log.warning("feed %s: %s", self.cfg.name, result.reason)
        except trio.Cancelled:
            result.reason = "stopped"
            raise
        finally:
            result.healthy = trio.current_time() - started >= self.cfg.healthy_seconds
            if opened:
                self._journal(jr.Kind.CLOSE, conn_id, result.reason)
            wake.set()

    async def _read(self, conn, conn_id: str, result: ConnectionResult, wake: trio.Event) -> None:
        protocol = self.module.make_protocol(self.cfg.spec, self.cfg.secrets, self.cfg.url)
        frames, subscribed = protocol.on_open(self._now_ns() / 1e9)
        for frame in frames:
            await conn.send(frame)
        if subscribed:
            self._journal(jr.Kind.SUBSCRIBED, conn_id, "")
        stale = self.cfg.stale_seconds
        slack = stale * 0.05  # moving a deadline costs: move it only when it has slid this far
        ingest, name, venue, now_ns = self.pipeline.ingest_frames, self.cfg.name, self.cfg.venue, self._now_ns
        pipeline, buffers = self.pipeline, self.pipeline.buffers
        redact = self.redact if self.cfg.secrets else None
        current_time, on_frame = trio.current_time, protocol.on_frame
        run_is_quiet = getattr(protocol, "quiet", None)
        # Per-subscription staleness: heartbeats keep a connection alive but are not data. Each
        # subscription the venue must keep feeding has its own last-data time. Frames are only
        # searched for their key while some key has not been seen for `slack` seconds, so a feed
        # whose subscriptions are all busy pays nothing per frame for this.
        expected = protocol.expected_keys()
        last_data = dict.fromkeys(expected, current_time())
        data_key = protocol.data_key
        next_check = current_time() + stale / 4
        oldest = current_time()
        seq = 0
        memory = pipeline.memory
        with trio.move_on_after(stale) as watchdog:
            while True:
                if memory is not None and memory.over():  # at the memory cap: stop reading (TCP pushes back)
                    await self._wait_for_memory(memory)
                    now = current_time()  # time spent waiting on our own memory is not the venue's silence
                    watchdog.deadline = now + stale
                    last_data = dict.fromkeys(expected, now)
                    oldest = now
                # Every frame already read, stamped with one receive time: they arrived together.
                texts = await conn.receive_many()
                ts = now_ns() // 1000
                now = current_time()
                if now + stale - watchdog.deadline > slack:
                    watchdog.deadline = now + stale
                if redact is not None:
                    texts = [redact(t) for t in texts]
                ingest(name, venue, conn_id, seq + 1, ts, texts)
                seq += len(texts)
                if expected:
                    if now - oldest > slack:
                        for text in texts:
                            key = data_key(text)
                            if key in last_data:
                                last_data[key] = now
                        oldest = min(last_data.values())
                    if now >= next_check:
                        next_check = now + stale / 4
                        quiet = [k for k, t in last_data.items() if now - t > stale]
                        if quiet:
                            result.reason = f"stale: no data for {self.redact(quiet[0])} for {stale:g} s"
                            log.warning("feed %s: %s; reconnecting", name, result.reason)
                            await conn.aclose(1000, "stale")
                            return
                if run_is_quiet is not None and run_is_quiet(texts):
                    texts = ()  # no frame of the run needs the control side
                for text in texts:
                    control = on_frame(text)
                    if control is NOTHING:  # nearly every frame: skip the five checks below
                        continue
                    if control.send:
                        for reply in control.send:
                            await conn.send(reply)
                    if control.subscribed:
                        self._journal(jr.Kind.SUBSCRIBED, conn_id, "")
                    if control.error:
                        log.warning("feed %s: %s", name, self.redact(control.error))
                    if control.fatal:
                        result.reason, result.fatal = self.redact(control.fatal), True
                        log.error("feed %s: %s; backing off %.0f s", name, result.reason, self.cfg.backoff_max)
                        await conn.aclose(1000, "auth rejected")
                        return
                    if control.reconnect and not wake.is_set():
                        result.reason, result.immediate = self.redact(control.reconnect), True
                        wake.set()  # the next connection starts now; this one is read until it closes
                # Far ahead of the Parquet flush: wait for its cut (after this run's replies are sent).
                gate = pipeline.gate
                if gate is not None and buffers.rows >= gate.soft_limit:
                    if buffers.rows >= gate.limit:
                        await gate.wait()
                    else:
                        gate.nudge()
        result.reason = f"stale: no frame for {stale:g} s"
        log.warning("feed %s: %s; reconnecting", name, result.reason)
        await conn.aclose(1000, "stale")

    async def _wait_for_memory(self, memory) -> None:
        self.paused = True
        started = trio.current_time()
        try:
            await memory.wait_below(self.cfg.name)
        finally:
            self.paused = False
            self.paused_seconds += trio.current_time() - started

    def _journal(self, kind: jr.Kind, conn_id: str, text: str) -> None:
        self.pipeline.ingest(jr.Entry(kind=kind, ts_recv=self._now_us(), seq=0, feed=self.cfg.name,
                                      venue=self.cfg.venue, conn_id=conn_id, text=text))
