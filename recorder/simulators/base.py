"""What every simulator shares: serving on 127.0.0.1, one handler per connection, a log of every
frame sent (for exact comparisons with what the recorder stored), and fault injection.

Faults (call on the simulator, or pass `fault_every` for a fixed schedule of them, kinds in turn):
    drop()              close every connection abruptly (TCP reset-like: no close frame)
    stall(seconds)      keep sockets open but send nothing
    inject(kind)        send a "malformed", "truncated" or "oversized" frame on every connection
    reject_auth = True  refuse credentials from now on
"""

from __future__ import annotations

import json
import logging
import itertools
import random
import socket
from typing import Awaitable, Callable

import attrs
import trio
import trio_websocket as tw

log = logging.getLogger("recorder.simulator")
FAULTS = ("drop", "stall", "malformed", "truncated", "oversized")


@attrs.define(eq=False)
class SimConn:
    """One client connection as the simulator sees it."""

    number: int
    path: str
    ws: tw.WebSocketConnection
    headers: dict[str, str]
    subscriptions: set = attrs.field(factory=set)
    authed: bool = False
    closed: bool = False
    frames_sent: int = 0
    received: list = attrs.field(factory=list)
    sent_heartbeat: object = None
    received_heartbeat: object = None
    dropped: bool = False


@attrs.frozen(kw_only=True)
class SimSettings:
    interval: float = 0.05  # seconds between data pushes per connection
    seed: int = 1
    ping_interval: float = 50.0  # InTots server pings
    read_deadline: float = 60.0  # InTots: close if no pong within this
    heartbeat_interval: float = 15.0  # predict.fun heartbeat
    max_frame_bytes: int = 2 * 1024 * 1024  # oversized frames are bigger than this
    fault_every: float = 0.0  # > 0: a fault every this many seconds, kinds in turn from `faults` (chaos)
    faults: tuple[str, ...] = FAULTS


class Simulator:
    """Base class: subclasses implement `serve_connection(conn)` and `hosts`."""

    name = "sim"
    hosts: tuple[str, ...] = ("main",)

    def __init__(self, settings: SimSettings | None = None) -> None:
        self.settings = settings or SimSettings()
        self.rng = random.Random(self.settings.seed)
        self.ports: dict[str, int] = {}
        self.connections: list[SimConn] = []
        self.sent: list[tuple[int, str]] = []  # (connection number, text) of every frame sent
        self.received: list[tuple[int, str]] = []  # (connection number, text) of every frame received
        self.reject_auth = False
        self._stalled_until = 0.0
        self._quiesced = False
        self._count = 0
        self.faults_injected: list[str] = []

    # --- serving ----------------------------------------------------------------------------
    async def start(self, nursery: trio.Nursery) -> "Simulator":
        for host in self.hosts:
            server = await nursery.start(self._serve, host)
            self.ports[host] = server.port
        if self.settings.fault_every > 0:
            nursery.start_soon(self._chaos)
        return self

    async def _serve(self, host: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async def handler(request: tw.WebSocketRequest) -> None:
            await self._handle(host, request)

        await tw.serve_websocket(handler, "127.0.0.1", 0, ssl_context=None, max_message_size=1 << 22,
                                 task_status=task_status)

    def url(self, host: str, path: str) -> str:
        return f"ws://127.0.0.1:{self.ports[host]}{path}"

    async def _handle(self, host: str, request: tw.WebSocketRequest) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        status = self.check_handshake(host, request.path, headers)
        if status is not None:
            await request.reject(status, body=b"unauthorized")
            return
        ws = await request.accept()
        self._count += 1
        conn = SimConn(number=self._count, path=request.path, ws=ws, headers=headers)
        self.connections.append(conn)
        try:
            await self.serve_connection(host, conn)
        except BaseException as exc:  # a client going away ends its handler quietly; anything else is a bug
            if not _is_disconnect(exc):
                raise
        finally:
            conn.closed = True
            self.connections.remove(conn)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await ws.aclose()

    def check_handshake(self, host: str, path: str, headers: dict[str, str]) -> int | None:
        """An HTTP status to refuse the handshake with, or None to accept."""
        return None

    async def serve_connection(self, host: str, conn: SimConn) -> None:
        raise NotImplementedError

    # --- sending ----------------------------------------------------------------------------
    @property
    def stalled(self) -> bool:
        return trio.current_time() < self._stalled_until

    async def send(self, conn: SimConn, message: dict | str) -> None:
        if self._quiesced:  # nothing more leaves a quiesced simulator: pushes, pings, heartbeats alike
            return
        if conn.dropped:  # the connection was dropped: send nothing more, wait for the client to go
            while True:
                await conn.ws.get_message()  # raises ConnectionClosed when the client closes
        text = message if isinstance(message, str) else json.dumps(message, separators=(",", ":"))
        await conn.ws.send_message(text)
        conn.frames_sent += 1
        self.sent.append((conn.number, text))

    async def run_pushes(self, conn: SimConn, make: Callable[[SimConn], Awaitable[None]]) -> None:
        """Call `make(conn)` every `interval` seconds unless stalled."""
        while True:
            await trio.sleep(self.settings.interval)
            if not self.stalled:
                await make(conn)

    async def receive_json(self, conn: SimConn) -> dict | None:
        text = await conn.ws.get_message()
        conn.received.append(text)
        self.received.append((conn.number, text))
        try:
            msg = json.loads(text)
        except ValueError:
            return None
        return msg if isinstance(msg, dict) else None

    # --- faults -----------------------------------------------------------------------------
    async def drop(self) -> None:
        """Drop every connection as a dying server does: no WebSocket close frame (the client sees
        1006), but a TCP FIN after what was already sent, so a frame logged as sent is delivered.
        (Closing the socket outright would send RST, which can discard delivered-but-unread frames.)"""
        self.faults_injected.append("drop")
        for conn in list(self.connections):
            sock = getattr(getattr(conn.ws, "_stream", None), "socket", None)
            if sock is not None and not conn.dropped:
                conn.dropped = True
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def stall(self, seconds: float) -> None:
        """A fault: keep the sockets open and send nothing for `seconds`."""
        self.faults_injected.append("stall")
        self._stalled_until = trio.current_time() + seconds

    def quiesce(self) -> None:
        """Stop pushing and injecting faults for good (not a fault itself): lets a test stop the
        recorder with nothing in flight."""
        self._stalled_until = float("inf")
        self._quiesced = True

    def bad_frame(self, kind: str) -> str:
        good = self.sample_frame()
        if kind == "malformed":
            return good[: len(good) // 2] + "}{" + good[len(good) // 2:]
        if kind == "truncated":
            return good[: max(1, len(good) // 2)]
        if kind == "oversized":
            return good[:-1] + ',"pad":"' + "x" * self.settings.max_frame_bytes + '"}'
        raise ValueError(f"unknown fault {kind!r}; faults: {', '.join(FAULTS)}")

    async def inject(self, kind: str) -> None:
        """Send a malformed, truncated or oversized frame on every connection."""
        self.faults_injected.append(kind)
        text = self.bad_frame(kind)
        for conn in list(self.connections):
            try:
                await self.send(conn, text)
            except (tw.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def sample_frame(self) -> str:
        """A valid data frame of this venue (the base of malformed ones)."""
        return '{"t":"PING","d":null,"r":null}'

    async def _chaos(self) -> None:
        """A fault every `fault_every` seconds, the kinds taken in turn from `faults`: a fixed
        schedule, so a test knows what it gets (a random draw once gave a 12 s run a single drop)."""
        for n in itertools.count():
            await trio.sleep(self.settings.fault_every)
            if self._quiesced:
                return
            fault = self.settings.faults[n % len(self.settings.faults)]
            log.info("%s simulator: injecting %s", self.name, fault)
            if fault == "drop":
                await self.drop()
            elif fault == "stall":
                self.stall(self.settings.fault_every / 3)
            else:
                await self.inject(fault)


_DISCONNECTS = (tw.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_disconnect(e) or isinstance(e, trio.Cancelled) for e in exc.exceptions)
    return isinstance(exc, _DISCONNECTS)


class RandomWalk:
    """A probability that wanders between 0.01 and 0.99."""

    def __init__(self, rng: random.Random, start: float | None = None) -> None:
        self.rng = rng
        self.p = start if start is not None else rng.uniform(0.2, 0.8)

    def step(self) -> float:
        self.p = min(0.99, max(0.01, self.p + self.rng.gauss(0, 0.01)))
        return round(self.p, 4)
