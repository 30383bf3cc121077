"""The transport seam on both implementations, against real servers on 127.0.0.1 port 0."""

from __future__ import annotations

import base64
import hashlib
import ssl

import pytest
import trio
import trio_websocket as tw
import trustme

from conftest import trio_test
from recorder.errors import ConnectFailed, ConnectionClosed
from recorder.transport import client_ssl_context, open_connection

TRANSPORTS = ["websockets", "trio-websocket"]


async def serve(nursery, handler, ssl_context=None):
    async def wrapped(request):
        await handler(request)

    server = await nursery.start(tw.serve_websocket, wrapped, "127.0.0.1", 0, ssl_context)
    return server.port


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test(timeout=20)
async def test_round_trip_and_close_codes(transport):
    """Text goes both ways; the server's close code and reason reach the feed (1000 and 1001 differ)."""
    for code in (1000, 1001):
        async with trio.open_nursery() as n:
            async def handler(request):
                ws = await request.accept()
                msg = await ws.get_message()
                await ws.send_message("echo:" + msg)
                await ws.aclose(code, "going")

            port = await serve(n, handler)
            async with open_connection(f"ws://127.0.0.1:{port}/x", transport=transport) as conn:
                await conn.send("hi")
                assert await conn.receive() == "echo:hi"
                with pytest.raises(ConnectionClosed) as info:
                    await conn.receive()
            assert info.value.code == code and info.value.reason == "going"
            n.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test(timeout=20)
async def test_handshake_rejection_carries_the_http_status(transport):
    """A 401 at the handshake is ConnectFailed with status 401 (the feed then backs off to the max)."""
    async with trio.open_nursery() as n:
        async def handler(request):
            await request.reject(401, body=b"bad key")

        port = await serve(n, handler)
        with pytest.raises(ConnectFailed) as info:
            async with open_connection(f"ws://127.0.0.1:{port}/ws", headers=[("x-api-key", "k")], transport=transport):
                pass
        assert info.value.status == 401 and "401" in str(info.value)
        n.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test(timeout=20)
async def test_refused_connection(transport):
    """Nothing listening: a clean ConnectFailed, not an OSError."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(ConnectFailed, match="cannot connect"):
        async with open_connection(f"ws://127.0.0.1:{port}/", transport=transport):
            pass


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test(timeout=20)
async def test_oversized_message_closes_with_1009(transport):
    """A message over max_message_bytes ends the connection with code 1009."""
    async with trio.open_nursery() as n:
        async def handler(request):
            ws = await request.accept()
            await ws.send_message("x" * 5000)
            await trio.sleep(5)

        port = await serve(n, handler)
        with pytest.raises(ConnectionClosed) as info:
            async with open_connection(f"ws://127.0.0.1:{port}/", max_message_bytes=1000, transport=transport) as conn:
                await conn.receive()
        assert info.value.code == 1009
        n.cancel_scope.cancel()


async def _stream_until_closed(ws, sent: list[str], first: str | None = None) -> None:
    """Send numbered messages as fast as the socket takes them until the client's close arrives."""
    try:
        if first is not None:
            await ws.send_message(first)
        for i in range(1_000_000):
            await ws.send_message(f"m{i}")
            sent.append(f"m{i}")
            if i % 50 == 0:
                await trio.sleep(0)
    except tw.ConnectionClosed:
        pass


# websockets only: trio-websocket closes its own message channel when its aclose() starts, so what
# arrives during the handshake is dropped inside the library (README, Transports).
@pytest.mark.parametrize("transport", ["websockets"])
@trio_test(timeout=20)
async def test_close_returns_what_the_peer_sent_until_it_answered(transport):
    """A venue sends until it sees our close frame: every message it sent reaches the feed, the ones
    received before the close and the ones aclose() returns, in order, none lost."""
    sent: list[str] = []
    async with trio.open_nursery() as n:
        async def handler(request):
            await _stream_until_closed(await request.accept(), sent)

        port = await serve(n, handler)
        async with open_connection(f"ws://127.0.0.1:{port}/", transport=transport) as conn:
            got = await conn.receive_many()
            while len(got) < 200:
                got += await conn.receive_many()
            got += await conn.aclose(1000, "stale")
        assert len(sent) > len(got[:200]) and got == sent
        n.cancel_scope.cancel()


@trio_test(timeout=20)
async def test_an_oversized_message_is_refused_and_what_follows_is_kept():
    """A message over the limit (but under twice it) is dropped and the connection closed with 1009 by a
    close handshake: every message the venue sent after it, until it answered, is still received."""
    sent: list[str] = []
    async with trio.open_nursery() as n:
        async def handler(request):
            await _stream_until_closed(await request.accept(), sent, first="x" * 1500)

        port = await serve(n, handler)
        got: list[str] = []
        with pytest.raises(ConnectionClosed) as info:
            async with open_connection(f"ws://127.0.0.1:{port}/", max_message_bytes=1000) as conn:
                while True:
                    got += await conn.receive_many()
        assert info.value.code == 1009 and "closed by us" in str(info.value)
        assert got == sent and sent
        n.cancel_scope.cancel()


@trio_test(timeout=20)
async def test_pings_are_answered_while_the_consumer_is_busy():
    """The sans-I/O transport answers pings from its reader task even when receive() is not called."""
    pongs = []
    async with trio.open_nursery() as n:
        async def handler(request):
            ws = await request.accept()
            for i in range(5):
                await ws.send_message(f"m{i}")
            for _ in range(3):
                with trio.move_on_after(0.5) as scope:
                    await ws.ping()
                pongs.append(not scope.cancelled_caught)
            await trio.sleep(5)

        port = await serve(n, handler)
        async with open_connection(f"ws://127.0.0.1:{port}/", transport="websockets") as conn:
            await trio.sleep(2.0)  # busy elsewhere: not reading
            assert [await conn.receive() for _ in range(5)] == [f"m{i}" for i in range(5)]
        n.cancel_scope.cancel()
    assert pongs == [True, True, True]


def _accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


@trio_test(timeout=20)
async def test_frames_arriving_with_the_handshake_response_are_kept():
    """A server that writes its 101 response and a fragmented first message in one packet loses nothing."""
    async def server(stream):
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        key = next(line.split(b":", 1)[1].strip().decode() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        response = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {_accept_key(key)}\r\n\r\n").encode()
        first = bytes([0x01, 3]) + b"hel" + bytes([0x80, 2]) + b"lo"  # text, not final; continuation, final
        second = bytes([0x81, 5]) + b"world"
        await stream.send_all(response + first + second)
        await trio.sleep(5)

    async with trio.open_nursery() as n:
        listeners = await n.start(trio.serve_tcp, server, 0)
        port = listeners[0].socket.getsockname()[1]
        async with open_connection(f"ws://127.0.0.1:{port}/", transport="websockets") as conn:
            assert await conn.receive() == "hello"
            assert await conn.receive() == "world"
        n.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test(timeout=20)
async def test_wss_verifies_certificates(transport):
    """wss:// verifies the server certificate by default; a context trusting the CA connects."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    async with trio.open_nursery() as n:
        async def handler(request):
            ws = await request.accept()
            await ws.send_message("secure")
            await trio.sleep(5)

        port = await serve(n, handler, server_ctx)
        url = f"wss://localhost:{port}/"
        default = client_ssl_context(url)
        assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
        with pytest.raises(ConnectFailed):  # trio-websocket reports a failed verification only as a timeout
            async with open_connection(url, transport=transport, connect_timeout=1.5):
                pass
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        async with open_connection(url, transport=transport, ssl_context=trusting) as conn:
            assert await conn.receive() == "secure"
        n.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test(timeout=20)
async def test_receive_many_returns_every_message_once_in_order(transport):
    """receive_many hands over what has been read (at least one message, at most `limit`), in
    order, none twice, and then the close like receive() does."""
    async with trio.open_nursery() as n:
        async def handler(request):
            ws = await request.accept()
            for i in range(3000):
                await ws.send_message(f"m{i}")
            await ws.aclose(1000, "done")

        port = await serve(n, handler)
        got, sizes = [], []
        async with open_connection(f"ws://127.0.0.1:{port}/", transport=transport) as conn:
            await trio.sleep(0.5)  # let messages queue up
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    batch = await conn.receive_many(limit=100)
                    assert 1 <= len(batch) <= 100
                    sizes.append(len(batch))
                    got.extend(batch)
        assert got == [f"m{i}" for i in range(3000)]
        assert info.value.code == 1000
        assert max(sizes) == 100  # a backlog comes over in full batches (on both transports)
        n.cancel_scope.cancel()
