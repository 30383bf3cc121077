"""The HTTP listener on its own (recorder/http/listener.py): real TCP on 127.0.0.1 port 0, a
route table of plain handlers, and clients that follow the protocol and clients that do not."""

from __future__ import annotations

import functools

import trio

from conftest import trio_test
from httpclient import exchange, get
from recorder.http.listener import MAX_HEAD, BadRequest, Listener, Response, parse_head, route, text


async def hello(request):
    return Response(body=b"hello " + request.path.encode())


async def start(nursery, routes=None, **kw) -> tuple[str, Listener]:
    listener = Listener(routes if routes is not None else {"/hello": hello, "/api/*": hello}, **kw)
    listeners = await nursery.start(functools.partial(trio.serve_tcp, listener.handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}", listener


def test_parse_head_reads_method_path_query_headers():
    """A request head becomes a Request; bad ones become the matching error response."""
    r = parse_head(b"GET /status?x=1&x=2 HTTP/1.1\r\nHost: a\r\nAccept: */*")
    assert (r.method, r.path, r.query["x"], r.headers["host"]) == ("GET", "/status", ["1", "2"], "a")
    for head, status in ((b"GET /", 400), (b"POST / HTTP/1.1", 405), (b"GET / HTTP/2.0", 505),
                         (b"GET / HTTP/1.1\r\nbroken", 400), (b"GET / HTTP/1.1\r\nContent-Length: 5", 413),
                         (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked", 413)):
        try:
            parse_head(head)
        except BadRequest as exc:
            assert exc.response.status == status, head
        else:
            raise AssertionError(f"{head!r} was accepted")


def test_routes_exact_then_longest_prefix():
    """An exact path wins; else the longest "prefix/*" entry; else nothing."""
    a, b, c = object(), object(), object()
    table = {"/api/*": a, "/api/feeds/*": b, "/status": c}
    assert route(table, "/status") is c
    assert route(table, "/api/x") is a and route(table, "/api/feeds/pf") is b
    assert route(table, "/apix") is None and route(table, "/status/") is None


@trio_test(timeout=20)
async def test_get_head_404_405_and_routes_added_later():
    """GET and HEAD are served (HEAD without the body), unknown paths get 404, other methods 405;
    a route added to the table after start is served without touching the listener."""
    async with trio.open_nursery() as nursery:
        table = {"/hello": hello}
        url, listener = await start(nursery, table)
        status, headers, body = await get(url, "/hello")
        assert (status, body, headers["connection"]) == (200, b"hello /hello", "close")
        status, headers, body = await get(url, "/hello", "HEAD")
        assert (status, body, headers["content-length"]) == (200, b"", str(len(b"hello /hello")))
        status, _, body = await get(url, "/nope")
        assert status == 404 and body.startswith(b"not found: /nope")
        status, headers, body = await get(url, "/hello", "DELETE")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        table["/api/*"] = hello
        status, _, body = await get(url, "/api/feeds")
        assert (status, body) == (200, b"hello /api/feeds")
        nursery.cancel_scope.cancel()


@trio_test(timeout=20)
async def test_an_oversized_request_gets_431_and_a_body_413():
    """A request head over 8 KiB is refused with 431 (read no further); a request body with 413."""
    async with trio.open_nursery() as nursery:
        url, listener = await start(nursery)
        huge = b"GET /hello HTTP/1.1\r\nX-Pad: " + b"a" * (MAX_HEAD * 4) + b"\r\n\r\n"
        status, _, body = await exchange(url, huge)
        assert status == 431 and b"too large" in body
        status, _, body = await exchange(url, b"GET /hello HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        assert status == 413
        assert listener.stats.bad == 2
        nursery.cancel_scope.cancel()


@trio_test(timeout=20)
async def test_a_slowloris_client_is_cut_at_the_deadline():
    """A client sending one header byte every 0.1 s is disconnected after request_timeout, without
    an answer; a normal request meanwhile is answered at once."""
    async with trio.open_nursery() as nursery:
        url, listener = await start(nursery, request_timeout=0.5)
        slow = await slowloris(nursery, url, 0.1)
        await trio.sleep(0.2)
        with trio.fail_after(1):
            status, _, _ = await get(url, "/hello")  # served while the slow client hangs on
        assert status == 200
        got, closed_after = await slow.outcome()
        assert got == b"" and 0.4 <= closed_after <= 1.5, (got, closed_after)
        assert listener.stats.timed_out == 1
        nursery.cancel_scope.cancel()


class Slowloris:
    """A client dripping one header byte every `every` seconds; `outcome()` waits until the server
    ends the connection: (what it answered, seconds after the first byte)."""

    def __init__(self, stream: trio.SocketStream, every: float) -> None:
        self.stream, self.every = stream, every
        self.done = trio.Event()
        self.result: tuple[bytes, float] | None = None
        self.closed_at: float | None = None  # trio clock when the server ended the connection

    async def run(self) -> None:
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            async def drip() -> None:
                for byte in b"GET /hello HTTP/1.1\r\nX-Slow: " + b"z" * 1000:
                    try:
                        await self.stream.send_all(bytes([byte]))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                    await trio.sleep(self.every)

            nursery.start_soon(drip)
            try:
                got = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                got = b""
            self.closed_at = trio.current_time()
            self.result = (got, self.closed_at - t0)
            nursery.cancel_scope.cancel()
        await self.stream.aclose()
        self.done.set()

    async def outcome(self) -> tuple[bytes, float]:
        await self.done.wait()
        return self.result


async def slowloris(nursery: trio.Nursery, url: str, every: float) -> Slowloris:
    port = int(url.rsplit(":", 1)[1])
    client = Slowloris(await trio.open_tcp_stream("127.0.0.1", port), every)
    nursery.start_soon(client.run)
    return client


@trio_test(timeout=20)
async def test_over_the_connection_limit_gets_503_and_the_limit_frees_up():
    """With max_connections held by idle clients, one more is answered 503 at once; when they are
    cut (request_timeout), requests are served again."""
    async with trio.open_nursery() as nursery:
        url, listener = await start(nursery, max_connections=3, request_timeout=0.6)
        host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
        idle = [await trio.open_tcp_stream(host, port) for _ in range(3)]
        await trio.sleep(0.1)  # the three are accepted and hold the limit
        status, _, body = await get(url, "/hello")
        assert status == 503 and b"too many connections" in body
        await trio.sleep(0.8)  # the idle ones are cut at the deadline
        status, _, _ = await get(url, "/hello")
        assert status == 200
        for s in idle:
            await s.aclose()
        assert listener.stats.refused == 1 and listener.stats.timed_out == 3
        nursery.cancel_scope.cancel()


def test_text_responses_are_one_line():
    """Error bodies are one line ending in a newline."""
    assert text(404, "not found: /x").body == b"not found: /x\n"


@trio_test(timeout=20)
async def test_a_failing_handler_is_a_500_and_the_listener_goes_on(caplog):
    """A handler that raises (a bug) answers 500 with a one-line body and logs the traceback; the
    next request is served."""
    async def broken(request):
        raise ZeroDivisionError("a bug")

    async with trio.open_nursery() as nursery:
        url, _ = await start(nursery, {"/broken": broken, "/hello": hello})
        status, _, body = await get(url, "/broken")
        assert (status, body) == (500, b"internal error: see the recorder's log\n")
        assert (await get(url, "/hello"))[0] == 200
        nursery.cancel_scope.cancel()
    assert any("ZeroDivisionError" in (r.exc_text or "") or r.exc_info for r in caplog.records)


@trio_test(timeout=20)
async def test_a_streamed_response_outlives_the_request_deadline_and_a_stalled_reader_is_dropped():
    """A text/event-stream response is sent chunk by chunk past request_timeout; a reader that
    stops reading is dropped once a chunk cannot be sent within request_timeout, and its producer
    is closed; streams beyond max_streams get 503; plain requests are served meanwhile."""
    closed = []

    async def events(n: int, pad: int):
        try:
            for i in range(n):
                yield f"event: tick\ndata: {i} {'x' * pad}\n\n".encode()
                await trio.sleep(0.05)
        finally:
            closed.append(n)

    async def sse(request):
        n, pad = int(request.query["n"][0]), int(request.query.get("pad", ["0"])[0])
        return Response(content_type="text/event-stream", stream=events(n, pad))

    async with trio.open_nursery() as nursery:
        url, listener = await start(nursery, {"/sse": sse, "/hello": hello}, request_timeout=0.3, max_streams=2)
        status, headers, body = await get(url, "/sse?n=12")  # 12 x 0.05 s: twice the request deadline
        assert status == 200 and "content-length" not in headers and headers["content-type"] == "text/event-stream"
        assert body.count(b"event: tick") == 12 and closed == [12]
        status, headers, body = await get(url, "/sse?n=3", "HEAD")
        assert (status, body) == (200, b"")
        port = int(url.rsplit(":", 1)[1])
        stalled = await trio.open_tcp_stream("127.0.0.1", port)  # asks for a big stream, never reads
        await stalled.send_all(b"GET /sse?n=100000&pad=60000 HTTP/1.1\r\n\r\n")
        other = await trio.open_tcp_stream("127.0.0.1", port)  # holds the second stream slot
        await other.send_all(b"GET /sse?n=100000 HTTP/1.1\r\n\r\n")
        await trio.sleep(0.2)
        status, _, _ = await get(url, "/sse?n=1")
        assert status == 503  # both stream slots taken
        assert (await get(url, "/hello"))[0] == 200  # plain requests still served
        with trio.fail_after(5):
            while listener.stats.stalled < 1:
                await trio.sleep(0.05)
        await trio.sleep(0.1)
        assert 100000 in closed  # the stalled reader's producer was closed
        await stalled.aclose()
        await other.aclose()
        nursery.cancel_scope.cancel()
