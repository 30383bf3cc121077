"""The fast transport: the `websockets` library's sans-I/O ClientProtocol over Trio streams.

A reader task owned by the connection reads the socket, feeds the protocol, sends what the
protocol wants sent (pong replies to pings, the close reply) at once, and queues whole messages.
So pings are answered however busy the consumer is, as long as the event loop runs; `receive()`
pops queued messages without a context switch per message, and checks for cancellation each call.

Nearly every frame a feed receives is a whole, unfragmented text message well under the size
limit: the reader cuts those out of what it reads itself (`_receive`), because websockets' frame
parser, pure Python with generators, was most of the event loop's time at full rate (a run of such
frames is cut by `_speedups.cut_text_frames` where the package was built with its C part, by the
Python loop in `_receive` otherwise: the same messages, tests/test_fastpaths.py). Every other
frame (control frames, fragments, binary, oversized, invalid UTF-8, anything malformed) is handed
whole to the protocol, which then sits at a frame boundary again, so it sees exactly the frames it
would have parsed itself; once the connection is closing, everything goes to the protocol.
"""

from __future__ import annotations

import collections
import ssl
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from ..errors import ConnectFailed, ConnectionClosed
from . import CLOSE_TIMEOUT, unwrap

try:  # the compiled reader of plain text frames (recorder/_speedups.c); optional
    from .._speedups import cut_text_frames
except ImportError:  # built without a C compiler: the same frames are cut in Python below
    cut_text_frames = None

READ_BYTES = 256 * 1024
MAX_QUEUED = 8192  # messages queued before the reader stops reading (a few ms of backlog at full rate)
YIELD_EVERY = 256  # receive() yields to the scheduler at least this often


class SansIOConnection:
    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol, max_message_bytes: int) -> None:
        self._stream = stream
        self._proto = protocol
        self._max_size = max_message_bytes
        self._pending = b""  # the start of a frame not yet whole, read by _receive
        # _receive cuts out plain text frames itself (until the connection closes); False: websockets'
        # parser reads every frame (the benchmark's bare reference client, a plain websockets client)
        self.own_reader = True
        self._cut = cut_text_frames  # None: the Python loop in _receive cuts every frame
        self._send_lock = trio.Lock()
        self._messages: collections.deque[str] = collections.deque()
        self._fragments: list[bytes] = []
        self._ready = trio.Event()
        self._space = trio.Event()
        self._ended: ConnectionClosed | None = None
        self._closed_event = trio.Event()
        self._since_yield = 0

    # --- consumer side --------------------------------------------------------------------
    async def receive(self) -> str:
        self._since_yield += 1
        if self._messages and self._since_yield < YIELD_EVERY:
            await trio.lowlevel.checkpoint_if_cancelled()
            message = self._messages.popleft()
        else:
            self._since_yield = 0
            await trio.lowlevel.checkpoint()
            while not self._messages:
                if self._ended is not None:
                    raise self._ended
                self._ready = trio.Event()
                await self._ready.wait()
            message = self._messages.popleft()
        if len(self._messages) < MAX_QUEUED // 2:
            self._space.set()
        return message

    async def receive_many(self, limit: int = 1024) -> list[str]:
        """Every queued message (at least one, at most `limit`), with one scheduler checkpoint: the
        reader task runs between two calls, so a busy consumer still lets pings be answered."""
        self._since_yield = 0
        await trio.lowlevel.checkpoint()
        messages = self._messages
        while not messages:
            if self._ended is not None:
                raise self._ended
            self._ready = trio.Event()
            await self._ready.wait()
        if len(messages) <= limit:
            batch = list(messages)
            messages.clear()
        else:
            batch = [messages.popleft() for _ in range(limit)]
        if len(messages) < MAX_QUEUED // 2:
            self._space.set()
        return batch

    async def send(self, text: str) -> None:
        if self._ended is not None or self._proto.state is not State.OPEN:
            raise self._ended or ConnectionClosed("connection is closing", code=self._proto.close_code)
        self._proto.send_text(text.encode())
        await self._flush()

    async def aclose(self, code: int = 1000, reason: str = "") -> list[str]:
        """Close handshake within CLOSE_TIMEOUT, then close the socket (shielded: always runs).
        Returns every message not yet received: those queued, and those the peer sent until it
        answered the close (a venue goes on sending until it sees our close frame)."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_TIMEOUT):
                if self._proto.state is State.OPEN:
                    self._proto.send_close(code, reason)
                    try:
                        await self._flush()
                    except ConnectionClosed:
                        pass
                await self._closed_event.wait()
            await self._stream.aclose()
        left = list(self._messages)
        self._messages.clear()
        return left

    # --- reader side ----------------------------------------------------------------------
    async def _flush(self) -> None:
        async with self._send_lock:
            for data in self._proto.data_to_send():
                try:
                    if data:
                        await self._stream.send_all(data)
                    elif hasattr(self._stream, "send_eof"):
                        await self._stream.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._end(ConnectionClosed(f"socket broken while sending: {exc}", code=1006))
                    raise self._ended from None

    async def run_reader(self) -> None:
        try:
            while True:
                try:
                    data = await self._stream.receive_some(READ_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._end(ConnectionClosed(f"socket broken: {exc}", code=1006))
                    return
                if data:
                    self._receive(data)
                else:
                    if self._pending:
                        self._proto.receive_data(self._pending)
                        self._pending = b""
                    self._proto.receive_eof()
                    self._take_events()
                try:
                    await self._flush()
                except ConnectionClosed:
                    return
                if not data or self._proto.state is State.CLOSED:
                    self._end(self._close_error())
                    return
                while len(self._messages) >= MAX_QUEUED:
                    self._space = trio.Event()
                    await self._space.wait()
        finally:
            if self._ended is None:
                self._end(ConnectionClosed("connection closed", code=1006))
            self._closed_event.set()

    def _receive(self, data: bytes) -> None:
        """Bytes read from the socket: whole, final, unmasked text frames of valid UTF-8 within the
        size limit become messages here; any other whole frame goes to the protocol (see the
        module docstring); the start of a frame not yet whole waits for the next read."""
        if not self.own_reader:
            if self._pending:  # the start of a frame this reader kept: the protocol reads it now
                data, self._pending = self._pending + data, b""
            self._proto.receive_data(data)
            self._take_events()
            return
        buf = self._pending + data if self._pending else data
        end, i = len(buf), 0
        messages, max_size, cut = self._messages, self._max_size, self._cut
        appended = False
        while i + 2 <= end:
            if cut is not None and not self._fragments:  # the plain frames from i on, in C
                i, got = cut(buf, i, max_size)
                if got:
                    messages.extend(got)
                    appended = True
                if i + 2 > end:
                    break
            b0, b1 = buf[i], buf[i + 1]
            n, h = b1 & 0x7F, 2
            if n >= 126:
                h = 4 if n == 126 else 10
                if i + h > end:
                    break
                n = int.from_bytes(buf[i + 2 : i + h], "big")
            masked = b1 & 0x80
            if masked:
                h += 4
            if n > max_size:  # oversized: refused through the protocol (see _message); it reads what follows
                self._hand_over(buf[i:])
                self.own_reader = False
                i = end
                break
            stop = i + h + n
            if stop > end:
                break
            if b0 == 0x81 and not masked and not self._fragments:  # FIN, no RSV bits, text
                try:
                    messages.append(buf[i + h : stop].decode())
                    appended = True
                    i = stop
                    continue
                except UnicodeDecodeError:
                    pass  # the protocol fails the connection (1007)
            self._hand_over(buf[i:stop])
            i = stop
            if self._proto.state is not State.OPEN:
                self.own_reader = False
                if i < end:
                    self._hand_over(buf[i:])
                i = end
                break
        self._pending = buf[i:] if i < end else b""
        if appended:
            self._ready.set()

    def _hand_over(self, data: bytes) -> None:
        """Whole frames (or, once the fast path is off, anything) through the protocol."""
        self._proto.receive_data(data)
        self._take_events()

    def _take_events(self, events: list | None = None) -> None:
        appended = False
        for frame in self._proto.events_received() if events is None else events:
            op = frame.opcode
            if op is Opcode.TEXT or op is Opcode.BINARY:
                if frame.fin:
                    appended |= self._message(frame.data)
                else:
                    self._fragments = [frame.data]
            elif op is Opcode.CONT:
                self._fragments.append(frame.data)
                if frame.fin:
                    appended |= self._message(b"".join(self._fragments))
                    self._fragments = []
        if appended:
            self._ready.set()

    def _message(self, data: bytes) -> bool:
        """Queue a whole message. One over max_message_bytes is refused: the connection is closed with
        1009 by a close handshake, not failed, so what the peer sends until it answers is still read
        (failing it would discard those frames, RFC 6455 7.1.7). The protocol's own limit, twice
        ours, still fails a connection whose message would not even fit in memory."""
        if len(data) <= self._max_size:
            self._messages.append(data.decode("utf-8", "replace"))
            return True
        if self._proto.state is State.OPEN:
            self._proto.send_close(1009, f"message of {len(data)} bytes is over the limit of {self._max_size}")
        return False

    def _close_error(self) -> ConnectionClosed:
        exc = self._proto.close_exc
        rcvd, sent = getattr(exc, "rcvd", None), getattr(exc, "sent", None)
        if rcvd is not None and (sent is None or exc.rcvd_then_sent):
            reason = rcvd.reason or ""
            return ConnectionClosed(f"closed by peer: code {rcvd.code}{' ' + reason if reason else ''}", code=rcvd.code,
                                    reason=reason)
        if sent is not None:  # we closed or failed it: 1009 message too big, 1002 protocol error ...
            reason = sent.reason or ""
            return ConnectionClosed(f"closed by us: code {sent.code}{' ' + reason if reason else ''}", code=sent.code,
                                    reason=reason)
        return ConnectionClosed(f"connection lost without a close frame ({type(exc).__name__})", code=1006)

    def _end(self, exc: ConnectionClosed) -> None:
        if self._ended is None:
            self._ended = exc
        self._ready.set()


async def _open_stream(host: str, port: int, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if ssl_context is not None:
        stream = trio.SSLStream(stream, ssl_context, server_hostname=host, https_compatible=True)
        await stream.do_handshake()
    return stream


async def _handshake(stream: trio.abc.Stream, proto: ClientProtocol, headers: list[tuple[str, str]]) -> bytes:
    """Send the upgrade request and read the response. Returns the bytes that arrived after the
    response head (frames sent right after the upgrade may share its TCP read): the protocol is
    given the head alone, so it starts the connection at a frame boundary (see _receive)."""
    request = proto.connect()
    for name, value in headers:
        request.headers[name] = value
    proto.send_request(request)
    for data in proto.data_to_send():
        await stream.send_all(data)
    buf, head_done = b"", False
    while True:
        data = await stream.receive_some(READ_BYTES)
        rest = b""
        if not data:
            proto.receive_eof()
        elif head_done:  # a response with a body (not a 101): the protocol reads it all
            proto.receive_data(data)
        else:
            buf += data
            cut = buf.find(b"\r\n\r\n")
            if cut >= 0:
                head_done, rest = True, buf[cut + 4 :]
                proto.receive_data(buf[: cut + 4])
        if _response(proto):
            return rest
        if rest:  # the head is in and no response yet: a body follows
            proto.receive_data(rest)
            if _response(proto):
                return b""
        if not data:
            raise ConnectFailed("connection closed during the handshake")


def _response(proto: ClientProtocol) -> bool:
    """True once the handshake response has arrived and accepted the upgrade; ConnectFailed if it
    refused it."""
    for event in proto.events_received():
        if isinstance(event, Response):
            if proto.handshake_exc is not None:
                exc = proto.handshake_exc
                status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
                detail = f"HTTP {status}" if status else str(exc)
                raise ConnectFailed(f"handshake rejected with {detail}", status=status)
            return True
    return False


@asynccontextmanager
async def open_sansio(url: str, *, headers: list[tuple[str, str]], max_message_bytes: int,
                      ssl_context: ssl.SSLContext | None, connect_timeout: float) -> AsyncIterator[SansIOConnection]:
    try:
        uri = parse_uri(url)
    except (InvalidURI, ValueError) as exc:
        raise ConnectFailed(f"bad WebSocket URL: {exc}") from None
    proto = ClientProtocol(uri, max_size=2 * max_message_bytes)
    stream = None
    try:
        with trio.fail_after(connect_timeout):
            stream = await _open_stream(uri.host, uri.port, ssl_context if uri.secure else None)
            early = await _handshake(stream, proto, headers)
    except trio.TooSlowError:
        raise ConnectFailed(f"no connection within {connect_timeout:g} s") from None
    except (OSError, trio.BrokenResourceError, ssl.SSLError, InvalidHandshake) as exc:
        raise ConnectFailed(f"cannot connect: {type(exc).__name__}: {exc}") from None
    finally:
        if stream is not None and proto.state is not State.OPEN:
            with trio.CancelScope(shield=True):
                await stream.aclose()
    conn = SansIOConnection(stream, proto, max_message_bytes)
    if early:
        conn._receive(early)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run_reader)
            try:
                yield conn
            finally:
                await conn.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise unwrap(group) from None
