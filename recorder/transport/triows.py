"""trio-websocket behind the transport seam. Its reader task answers pings itself and queues up
to MESSAGE_QUEUE messages; once the queue is full it stops reading (and answering) until the
consumer catches up. `receive_many` takes every queued message at once."""

from __future__ import annotations

import ssl
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio
import trio_websocket as tw

from ..errors import ConnectFailed, ConnectionClosed
from . import CLOSE_TIMEOUT, unwrap


MESSAGE_QUEUE = 8192  # as the websockets transport's MAX_QUEUED


class TrioWebsocketConnection:
    def __init__(self, ws: tw.WebSocketConnection) -> None:
        self._ws = ws
        # trio-websocket has no public "take what is queued": its receive channel is read directly
        # for the messages after the first (none of them waits); without it, one message per call.
        self._queued = getattr(ws, "_recv_channel", None)

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_message(text)
        except tw.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def receive(self) -> str:
        try:
            message = await self._ws.get_message()
        except tw.ConnectionClosed as exc:
            raise _closed(exc) from None
        return message if isinstance(message, str) else message.decode("utf-8", "replace")

    async def receive_many(self, limit: int = 1024) -> list[str]:
        batch = [await self.receive()]
        queued = self._queued
        if queued is not None:
            while len(batch) < limit:
                try:
                    message = queued.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break  # nothing more now; a close is raised by the next receive()
                batch.append(message if isinstance(message, str) else message.decode("utf-8", "replace"))
        return batch

    async def aclose(self, code: int = 1000, reason: str = "") -> list[str]:
        """Close handshake within CLOSE_TIMEOUT; returns the messages queued and not yet received."""
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            await self._ws.aclose(code, reason)
        left = []
        while self._queued is not None:
            try:
                message = self._queued.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            left.append(message if isinstance(message, str) else message.decode("utf-8", "replace"))
        return left


def _closed(exc: tw.ConnectionClosed) -> ConnectionClosed:
    reason = exc.reason
    code = getattr(reason, "code", None)
    text = getattr(reason, "reason", None) or ""
    return ConnectionClosed(f"closed by peer: code {code}{' ' + text if text else ''}", code=code, reason=text)


_CONNECT_ERRORS = (tw.HandshakeError, OSError, trio.TooSlowError, tw.ConnectionTimeout)


@asynccontextmanager
async def open_triows(url: str, *, headers: list[tuple[str, str]], max_message_bytes: int,
                      ssl_context: ssl.SSLContext | None, connect_timeout: float) -> AsyncIterator[TrioWebsocketConnection]:
    opened = False
    try:
        async with tw.open_websocket_url(url, ssl_context=ssl_context,
                                         extra_headers=[(k.encode(), v.encode()) for k, v in headers],
                                         max_message_size=max_message_bytes, message_queue_size=MESSAGE_QUEUE,
                                         connect_timeout=connect_timeout,
                                         disconnect_timeout=CLOSE_TIMEOUT) as ws:
            opened = True
            yield TrioWebsocketConnection(ws)
    except BaseException as raised:
        exc = unwrap(raised) if isinstance(raised, BaseExceptionGroup) else raised
        if not opened and isinstance(exc, tw.ConnectionRejected):
            raise ConnectFailed(f"handshake rejected with HTTP {exc.status_code}", status=exc.status_code) from None
        if not opened and isinstance(exc, _CONNECT_ERRORS):
            raise ConnectFailed(f"cannot connect: {type(exc).__name__}: {exc}") from None
        if isinstance(exc, tw.ConnectionClosed):
            raise _closed(exc) from None
        if isinstance(exc, (tw.DisconnectionTimeout, trio.BrokenResourceError)):
            raise ConnectionClosed(f"connection lost: {type(exc).__name__}", code=1006) from None
        if exc is raised:
            raise
        raise exc from None
