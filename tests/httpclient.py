"""A raw HTTP/1.1 client over trio sockets, for tests that must also misbehave (slowloris, huge
requests, floods): send exactly these bytes, read the response until the server closes."""

from __future__ import annotations

from urllib.parse import urlsplit

import trio


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


async def exchange(url: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` while reading the answer until EOF (a server may answer and close before it has
    read everything, as it should for a huge request); (status, headers, body)."""
    host, port = address(url)
    stream = await trio.open_tcp_stream(host, port)
    data = bytearray()
    async with stream, trio.open_nursery() as nursery:
        async def send() -> None:
            try:
                await stream.send_all(raw)
            except trio.BrokenResourceError:
                pass  # the server stopped reading and closed: its answer is what counts

        nursery.start_soon(send)
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            data += chunk
        nursery.cancel_scope.cancel()
    return parse(bytes(data))


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines[0] else 0
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


async def get(url: str, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return await exchange(url, f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
