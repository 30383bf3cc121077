"""A tiny HTTP/1.1 server for the daemon's window, run by `trio.serve_listeners` in the daemon's nursery.

It must never slow the feeds' read loops, so everything a client could make unbounded is bounded:

    request size     the request line and headers fit in `MAX_HEAD` bytes (else 431); no body (413)
    concurrency      at most `max_connections` requests at once; one more gets 503 and is closed
    time             each connection has `request_timeout` seconds to send its request and take the
                     response (a slowloris client is cut off, a slow reader too)
    streams          a streamed response (Server-Sent Events) has no overall deadline, but each chunk
                     must be taken within `request_timeout` (a stalled reader is dropped, never
                     waited for); at most `max_streams` at once, apart from `max_connections`
    methods          GET and HEAD (405 otherwise); every response closes the connection

Routes are a dict: exact path -> handler, and prefixes (keys ending in "/*") for trees such as
"/api/*"; the longest matching prefix wins. A handler is `async def handler(request) -> Response`.
Adding a route needs no change here. A Response with `stream` set is sent chunk by chunk from
that async iterator of bytes (no Content-Length); the producer bounds its own queue.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import AsyncIterator, Awaitable, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

import attrs
import trio

log = logging.getLogger("recorder.http")

MAX_HEAD = 8 * 1024
METHODS = ("GET", "HEAD")


@attrs.frozen(kw_only=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-case names


@attrs.frozen(kw_only=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    stream: AsyncIterator[bytes] | None = None  # a streamed body (e.g. text/event-stream) instead of `body`


Handler = Callable[[Request], Awaitable[Response]]


def text(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """A one-line plain-text response."""
    return Response(status=status, body=(message + "\n").encode(), headers=headers)


class BadRequest(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def parse_head(head: bytes) -> Request:
    """The request line and headers (everything before the blank line) -> Request; BadRequest otherwise."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(text(400, "bad request: the request line must be METHOD TARGET HTTP/1.1")) from None
    if not version.startswith("HTTP/1."):
        raise BadRequest(text(505, f"HTTP version not supported: {version[:16]!r}"))
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(text(400, "bad request: malformed header line"))
        headers[name.lower()] = value.strip()
    if method not in METHODS:
        raise BadRequest(text(405, f"method {method[:16]!r} not allowed: GET or HEAD only",
                              (("Allow", "GET, HEAD"),)))
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        raise BadRequest(text(413, "request bodies are not accepted"))
    parts = urlsplit(target)
    return Request(method=method, path=parts.path or "/", query=parse_qs(parts.query), headers=headers)


def route(routes: Mapping[str, Handler], path: str) -> Handler | None:
    """The handler for `path`: an exact key, else the longest "prefix/*" key that matches."""
    handler = routes.get(path)
    if handler is not None:
        return handler
    best = None
    for key in routes:
        if key.endswith("/*") and path.startswith(key[:-1]) and (best is None or len(key) > len(best)):
            best = key
    return routes[best] if best is not None else None


def encode(response: Response, *, head_only: bool = False) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    length = [] if response.stream is not None else [f"Content-Length: {len(response.body)}"]
    lines = [f"HTTP/1.1 {response.status} {reason}", f"Content-Type: {response.content_type}", *length,
             "Connection: close", "Cache-Control: no-store", *(f"{k}: {v}" for k, v in response.headers)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only or response.stream is not None else head + response.body


async def read_head(stream: trio.abc.Stream) -> bytes:
    """Bytes up to the blank line ending the headers; BadRequest if longer than MAX_HEAD or cut short."""
    buf = bytearray()
    while True:
        data = await stream.receive_some(4096)
        if not data:
            raise EOFError
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            return bytes(buf[:end])
        if len(buf) > MAX_HEAD:
            raise BadRequest(text(431, f"request head too large: the limit is {MAX_HEAD} bytes"))


async def drain(stream: trio.abc.Stream, limit: int = 64 * 1024) -> None:
    """Read and drop what the client still sends (up to `limit` bytes), so closing does not reset
    the connection before it has read our error response."""
    try:
        while limit > 0:
            data = await stream.receive_some(16384)
            if not data:
                return
            limit -= len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@attrs.define
class ListenerStats:
    """Counts for tests and the log: requests served, refused as over a limit, timed out, bad,
    streams dropped because their reader stalled."""

    served: int = 0
    refused: int = 0
    timed_out: int = 0
    bad: int = 0
    stalled: int = 0


class Listener:
    def __init__(self, routes: Mapping[str, Handler], *, max_connections: int = 16,
                 request_timeout: float = 5.0, max_streams: int = 8) -> None:
        self.routes = routes  # a live mapping: routes added later are served
        self.limit = trio.CapacityLimiter(max_connections)
        self.streams = trio.CapacityLimiter(max_streams)
        self.request_timeout = request_timeout
        self.stats = ListenerStats()

    async def handle(self, stream: trio.SocketStream) -> None:
        """One connection: one request, one response, close."""
        try:
            if not await self._admit(stream, self.limit):
                return
            try:
                streamed = None
                with trio.move_on_after(self.request_timeout) as scope:
                    streamed = await self._exchange(stream)
                if scope.cancelled_caught:
                    self.stats.timed_out += 1
            finally:
                self.limit.release()
            if streamed is not None and await self._admit(stream, self.streams):
                try:
                    await self._stream(stream, streamed)
                finally:
                    self.streams.release()
        finally:
            await trio.aclose_forcefully(stream)

    async def _admit(self, stream: trio.SocketStream, limit: trio.CapacityLimiter) -> bool:
        """Take a slot of `limit`, or answer 503 at once (within a second) and say no."""
        try:
            limit.acquire_nowait()
            return True
        except trio.WouldBlock:
            self.stats.refused += 1
            with trio.move_on_after(1):
                await self._send(stream, encode(text(503, "too many connections: try again shortly")))
            return False

    async def _exchange(self, stream: trio.SocketStream) -> Response | None:
        """Read the request and answer it; a streamed response is returned for `_stream` instead."""
        try:
            request = parse_head(await read_head(stream))
        except BadRequest as exc:
            self.stats.bad += 1
            await self._send(stream, encode(exc.response))
            with trio.move_on_after(0.5):
                await drain(stream)
            return None
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        handler = route(self.routes, request.path)
        if handler is None:
            response = text(404, f"not found: {request.path[:200]}; try /metrics, /healthz or /status")
        else:
            response = await self._call(handler, request)
        self.stats.served += 1
        if response.stream is not None:
            if request.method == "GET":
                return response
            await _close_iterator(response.stream)  # HEAD: the head only
        await self._send(stream, encode(response, head_only=request.method == "HEAD"))
        return None

    async def _stream(self, stream: trio.SocketStream, response: Response) -> None:
        """The head, then each chunk as the producer yields it; a reader that does not take one
        within `request_timeout` is dropped."""
        chunks = response.stream
        try:
            if not await self._send_within(stream, encode(response)):
                return
            async for data in chunks:
                if not await self._send_within(stream, data):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await _close_iterator(chunks)

    async def _send_within(self, stream: trio.SocketStream, data: bytes) -> bool:
        with trio.move_on_after(self.request_timeout) as scope:
            await stream.send_all(data)
        if scope.cancelled_caught:
            self.stats.stalled += 1
            return False
        return True

    @staticmethod
    async def _call(handler: Handler, request: Request) -> Response:
        """A handler's response; a bug in one is a 500 and a logged traceback, never the end of the
        daemon: the window must not stop the recording it reports on. (Not a retry: nothing is
        repeated, and the traceback is in the log.)"""
        try:
            return await handler(request)
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("GET %s failed (a bug in its handler); answered 500", request.path[:200])
            return text(500, "internal error: see the recorder's log")

    @staticmethod
    async def _send(stream: trio.SocketStream, data: bytes) -> None:
        try:
            await stream.send_all(data)
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _close_iterator(chunks: AsyncIterator[bytes]) -> None:
    """Let a streamed body's producer clean up (an async generator's finally blocks run)."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            await aclose()
