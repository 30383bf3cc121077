"""trio-websocket behind the transport seam. It answers pings itself while `receive` is called
often enough (its queue holds one message; a consumer that stops reading stops answering)."""

from __future__ import annotations

import ssl
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio
import trio_websocket as tw

from ..errors import ConnectFailed, ConnectionClosed
from . import CLOSE_TIMEOUT, unwrap


class TrioWebsocketConnection:
    def __init__(self, ws: tw.WebSocketConnection) -> None:
        self._ws = ws

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

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            await self._ws.aclose(code, reason)


def _closed(exc: tw.ConnectionClosed) -> ConnectionClosed:
    reason = exc.reason
    code = getattr(reason, "code", None)
    text = getattr(reason, "reason", None) or ""
    return ConnectionClosed(f"closed by peer: code {code}{' ' + text if text else ''}", code=code, reason=text)


@asynccontextmanager
async def open_triows(url: str, *, headers: list[tuple[str, str]], max_message_bytes: int,
                      ssl_context: ssl.SSLContext | None, connect_timeout: float) -> AsyncIterator[TrioWebsocketConnection]:
    try:
        cm = tw.open_websocket_url(url, ssl_context=ssl_context, extra_headers=[(k.encode(), v.encode()) for k, v in headers],
                                   max_message_size=max_message_bytes, connect_timeout=connect_timeout,
                                   disconnect_timeout=CLOSE_TIMEOUT)
        ws = await cm.__aenter__()
    except tw.ConnectionRejected as exc:
        raise ConnectFailed(f"handshake rejected with HTTP {exc.status_code}", status=exc.status_code) from None
    except (tw.HandshakeError, OSError, trio.TooSlowError) as exc:
        raise ConnectFailed(f"cannot connect: {type(exc).__name__}: {exc}") from None
    except BaseExceptionGroup as group:  # some versions wrap connection errors in a group
        first = group.exceptions[0]
        status = getattr(first, "status_code", None)
        raise ConnectFailed(f"cannot connect: {type(first).__name__}: {first}", status=status) from None
    try:
        yield TrioWebsocketConnection(ws)
    except BaseException as exc:
        await _exit(cm, exc)
        if isinstance(exc, BaseExceptionGroup):
            raise unwrap(exc) from None
        raise
    else:
        await _exit(cm, None)


async def _exit(cm, exc: BaseException | None) -> None:
    try:
        with trio.CancelScope(shield=True):
            if exc is None:
                await cm.__aexit__(None, None, None)
            else:
                await cm.__aexit__(type(exc), exc, exc.__traceback__)
    except (tw.ConnectionClosed, OSError, trio.TooSlowError, tw.DisconnectionTimeout):
        pass
    except BaseExceptionGroup:
        pass
