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
from .feedstate import FeedState
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
    kind: str = "stopped"  # the reason as one of feedstate.REASONS (a metric label)
    up: bool = False  # the connection got as far as subscribed


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
        expected = self.module.make_protocol(cfg.spec, cfg.secrets, cfg.url).expected_keys()
        self.state = FeedState(name=cfg.name, venue=cfg.venue, stale_seconds=cfg.stale_seconds,
                               subscriptions=tuple(sorted(expected)), started_mono=_mono(), since=wall_clock() / 1e9)
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
                    log.info("feed %s: reconnecting now (%s)", self.cfg.name, result.reason,
                             extra={"fields": {"reason": result.kind}})
                    continue
                if result.healthy:
                    self.backoff.reset()
                delay = self.cfg.backoff_max if result.fatal else self.backoff.next()
                self.state.backing_off(delay, self._now_ns() / 1e9)
                log.info("feed %s: reconnecting in %.1f s", self.cfg.name, delay,
                         extra={"fields": {"delay_seconds": round(delay, 3)}})
                await trio.sleep(delay)

    async def _connection(self, result: ConnectionResult, wake: trio.Event) -> None:
        """One connection, from connect to close. Sets `wake` when the next one should start."""
        self.connections += 1
        conn_id = f"{self.cfg.name}-{time.time_ns() // 1_000_000:x}-{pysecrets.token_hex(2)}"
        started = trio.current_time()
        opened = False
        self.state.connecting(conn_id, self._now_ns() / 1e9)
        try:
            headers = self.module.handshake_headers(self.cfg.spec, self.cfg.secrets)
            async with open_connection(self.cfg.url, headers=headers, max_message_bytes=self.cfg.max_message_bytes,
                                       transport=self.cfg.transport) as conn:
                opened = True
                self._journal(jr.Kind.OPEN, conn_id, self.url)
                log.info("feed %s: connected to %s (%s)", self.cfg.name, self.url, conn_id,
                         extra={"fields": {"conn_id": conn_id, "url": self.url}})
                await self._read(conn, conn_id, result, wake)
        except ConnectFailed as exc:
            result.reason = self.redact(str(exc))
            result.fatal = exc.status in (401, 403)
            result.kind = "auth_rejected" if result.fatal else "refused"
            log.warning("feed %s: %s", self.cfg.name, result.reason,
                        extra={"fields": {"conn_id": conn_id, "reason": result.kind, "status": exc.status}})
        except ConnectionClosed as exc:
            result.reason = self.redact(str(exc))
            result.immediate = exc.code == GOING_AWAY and not wake.is_set()
            result.kind = "dropped" if exc.code in (None, 1006) else "closed"
            log.warning("feed %s: disconnected: %s", self.cfg.name, result.reason,
                        extra={"fields": {"conn_id": conn_id, "reason": result.kind, "code": exc.code}})
        except TransportError as exc:
            result.reason = self.redact(str(exc))
            result.kind = "dropped"
            log.warning("feed %s: %s", self.cfg.name, result.reason,
                        extra={"fields": {"conn_id": conn_id, "reason": result.kind}})
        except trio.Cancelled:
            result.reason, result.kind = "stopped", "stopped"
            raise
        finally:
            result.healthy = trio.current_time() - started >= self.cfg.healthy_seconds
            if opened:
                self._journal(jr.Kind.CLOSE, conn_id, result.reason)
            self.state.ended_connection(result.kind, result.up, trio.current_time(), self._now_ns() / 1e9)
            wake.set()

    async def _read(self, conn, conn_id: str, result: ConnectionResult, wake: trio.Event) -> None:
        protocol = self.module.make_protocol(self.cfg.spec, self.cfg.secrets, self.cfg.url)
        if hasattr(protocol, "resume"):  # the venue can ask for what this feed missed (Outpoll chance backfill)
            protocol.resume(self.pipeline.decoders.get(self.cfg.name))
        frames, subscribed = protocol.on_open(self._now_ns() / 1e9)
        for frame in frames:
            await conn.send(frame)
        if subscribed:
            self._subscribed(conn_id, result)
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
        self.state.watching(last_data, current_time())
        data_key = protocol.data_key
        next_check = current_time() + stale / 4
        oldest = current_time()
        seq = 0
        memory = pipeline.memory
        close = "stopped"  # the close frame's reason when the recorder ends the connection itself
        try:
            with trio.move_on_after(stale) as watchdog:
                while True:
                    if memory is not None and memory.over():  # at the memory cap: stop reading (TCP pushes back)
                        await self._wait_for_memory(memory)
                        now = current_time()  # time spent waiting on our own memory is not the venue's silence
                        watchdog.deadline = now + stale
                        for key in last_data:
                            last_data[key] = now
                        oldest = now
                    # Every frame already read, stamped with one receive time: they arrived together.
                    texts = await conn.receive_many()
                    ts = now_ns() // 1000
                    now = current_time()
                    if now + stale - watchdog.deadline > slack:
                        watchdog.deadline = now + stale
                    if redact is not None:
                        texts = [redact(t) for t in texts]
                    data_only = ingest(name, venue, conn_id, seq + 1, ts, texts)
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
                                result.kind = "stale"
                                log.warning("feed %s: %s; reconnecting", name, result.reason)
                                close = "stale"
                                return
                    if data_only or (run_is_quiet is not None and run_is_quiet(texts)):
                        texts = ()  # no frame of the run needs the control side
                    for text in texts:
                        control = on_frame(text)
                        if control is NOTHING:  # nearly every frame: skip the five checks below
                            continue
                        if control.send:
                            for reply in control.send:
                                await conn.send(reply)
                        if control.subscribed:
                            self._subscribed(conn_id, result)
                        if control.error:
                            log.warning("feed %s: %s", name, self.redact(control.error))
                        if control.fatal:
                            result.reason, result.fatal, result.kind = self.redact(control.fatal), True, "auth_rejected"
                            log.error("feed %s: %s; backing off %.0f s", name, result.reason, self.cfg.backoff_max)
                            close = "auth rejected"
                            return
                        if control.reconnect and not wake.is_set():
                            result.reason, result.immediate = self.redact(control.reconnect), True
                            wake.set()  # the next connection starts now; this one is read until it closes
                    # Far ahead of the Parquet flush: wait for its cut (after this run's replies are sent).
                    gate = pipeline.gate
                    if gate is not None and (buffers.rows >= gate.soft_limit or buffers.held_bytes >= gate.soft_bytes):
                        if buffers.rows >= gate.limit or buffers.held_bytes >= gate.limit_bytes:
                            await gate.wait()
                        else:
                            gate.nudge()
            result.reason, result.kind = f"stale: no frame for {stale:g} s", "stale"
            log.warning("feed %s: %s; reconnecting", name, result.reason)
            close = "stale"
        finally:
            # Whoever ends it, the venue may send until it answers our close frame: those frames
            # were received and are recorded like any other.
            with trio.CancelScope(shield=True):
                left = await conn.aclose(1000, close)
            if left:
                ingest(name, venue, conn_id, seq + 1, now_ns() // 1000, [redact(t) for t in left] if redact else left)

    def _subscribed(self, conn_id: str, result: ConnectionResult) -> None:
        self._journal(jr.Kind.SUBSCRIBED, conn_id, "")
        if not result.up:
            result.up = True
            self.state.subscribed(conn_id, trio.current_time(), self._now_ns() / 1e9)

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


def _mono() -> float:
    """Trio's clock, or 0 outside a Trio run (a Feed built for a test before trio.run)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0
