"""The one transport seam every feed uses: open, send, receive, close; pings answered inside.

    async with open_connection(url, headers=[...], max_message_bytes=..., transport=...) as conn:
        await conn.send(text)
        text = await conn.receive()     # raises ConnectionClosed (with code and reason)
        texts = await conn.receive_many(limit)  # every message already read, at least one
        left = await conn.aclose(code, reason)  # what arrived until the peer answered the close

Opening raises ConnectFailed (refused, DNS, TLS, handshake rejected with its HTTP status).
Two implementations: "websockets" (the `websockets` library's sans-I/O protocol over Trio
streams, the default) and "trio-websocket". Venue code never sees which one runs.
"""

from __future__ import annotations

import ssl
from contextlib import asynccontextmanager
from typing import AsyncIterator, Protocol

import trio

CONNECT_TIMEOUT = 15.0
CLOSE_TIMEOUT = 3.0


def unwrap(group: BaseExceptionGroup) -> BaseException:
    """The one real error inside a nursery's exception group (Cancelled ones aside), else the group."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for e in exc.exceptions:
                walk(e)
        else:
            leaves.append(exc)

    walk(group)
    real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if not real and leaves:
        return leaves[0]
    return group


class Connection(Protocol):
    async def send(self, text: str) -> None: ...

    async def receive(self) -> str: ...

    async def receive_many(self, limit: int = 1024) -> list[str]:
        """At least one message, and up to `limit` of those already received (in order)."""

    async def aclose(self, code: int = 1000, reason: str = "") -> list[str]:
        """Close handshake (bounded by CLOSE_TIMEOUT); returns the messages that arrived and were not
        received, including those the peer sent until it answered the close."""


def client_ssl_context(url: str) -> ssl.SSLContext | None:
    """A verifying TLS context for wss:// (certificate and host name checked), None for ws://."""
    return ssl.create_default_context() if url.startswith("wss://") else None


@asynccontextmanager
async def open_connection(url: str, *, headers: list[tuple[str, str]] | None = None, max_message_bytes: int = 1 << 20,
                          transport: str = "websockets", ssl_context: ssl.SSLContext | None = None,
                          connect_timeout: float = CONNECT_TIMEOUT) -> AsyncIterator[Connection]:
    if transport == "trio-websocket":
        from .triows import open_triows as opener
    elif transport == "websockets":
        from .sansio import open_sansio as opener
    else:
        raise ValueError(f"unknown transport {transport!r}")
    async with opener(url, headers=headers or [], max_message_bytes=max_message_bytes,
                      ssl_context=ssl_context or client_ssl_context(url), connect_timeout=connect_timeout) as conn:
        yield conn
