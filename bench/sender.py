"""A WebSocket server that sends M pre-encoded frames as fast as the client reads them, for benchmarks.

Plain blocking sockets, frames encoded once: it outruns any client, so the client is what is
measured. One client at a time; after M frames it sends a close frame (1000) and waits for the next.

    python -m bench.sender --mix MIX --frames M  (MIX: one of MIXES)      (prints "port N", then serves)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import socket
import struct
import threading

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


MIXES = ("small", "book", "books", "trades", "realistic", "aggtrade")
BOOKS_MARKETS = range(1000, 1200)  # the markets of the books mix (bench/client.py subscribes to them)
REALISTIC_MARKETS = range(2000, 3000)


def _book(i: int, market: int, levels: int) -> dict:
    """A predict.fun order book push (`levels` a side) with the last settled order."""
    mid = 0.3 + (i % 300) / 1000
    return {"type": "M", "topic": f"predictOrderbook/{market}", "data": {
        "marketId": market, "updateTimestampMs": 1736696400000 + i,
        "asks": [[round(mid + 0.01 * k, 2), round(100 + k * 7.3 + i % 13, 1)] for k in range(1, levels + 1)],
        "bids": [[round(mid - 0.01 * k, 2), round(200 + k * 5.1 + i % 11, 1)] for k in range(1, levels + 1)],
        "version": 1, "orderCount": 20, "lastOrderSettled": {"id": str(1000 + i // 10), "kind": "LIMIT", "marketId": market,
                                                             "outcome": "No", "price": "0.80", "side": "Bid"},
        "settlementsPending": {"asks": [], "bids": []}}}


def _trade(i: int) -> dict:
    """An InTots trade print, ~190 bytes."""
    return {"type": "trade", "trade": {"amount": 5000 + (i * 7919) % 900_000, "name": f"trader_{i % 997:03d}",
                                       "token": "Yes" if i % 3 else "No", "event": "Will ETH hit $5k by June 30?",
                                       "market": f"mkt_{i % 500:04d}", "avatar": "https://cdn.intots.com/avatars/1234.png"}}


def _aggtrade(i: int) -> dict:
    """A Binance combined-stream aggTrade, ~205 bytes (what cryptofeed reads)."""
    t = 1736696400000 + i
    return {"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": t, "s": "BTCUSDT", "a": 2_000_000_000 + i, "p": f"{84000 + (i % 5000) / 100:.2f}",
        "q": f"{0.001 + (i % 997) / 1000:.5f}", "f": 3_000_000_000 + 2 * i, "l": 3_000_000_001 + 2 * i, "T": t,
        "m": bool(i % 2), "M": True}}


def _realistic(i: int) -> dict:
    """The shape of a busy predict.fun connection: 1,000 outcomes (markets) each with a book and
    Polymarket / Kalshi chances; two book pushes for every chance point, settled orders (trades)
    carried on the books."""
    market = REALISTIC_MARKETS[(i * 7) % len(REALISTIC_MARKETS)]
    if i % 3 == 2:
        origin = "polymarketChance" if i % 2 else "kalshiChance"
        return {"type": "M", "topic": f"{origin}/{market}",
                "data": {"percentage": round(30 + (i % 400) / 10, 1), "timestamp": 1736696400000 + i}}
    return _book(i, market, 3 + i % 8)


def payloads(mix: str, n: int = 100_000) -> list[bytes]:
    """n distinct frames of the mix (the client's decoder sees realistic, varying content); chance
    updates cycle over four outcomes with the time one second later at every frame."""
    out = []
    for i in range(n):
        if mix == "small":  # an Outpoll chance update, ~95 bytes
            msg = {"t": "UPDATE_HISTORY", "e": "evt-1", "o": [f"evt-1-o{i % 4}"],
                   "d": {"t": 1712160300 + i, "p": round(0.3 + (i % 400) / 1000, 4)}}
        elif mix == "book":  # a predict.fun order book, ~300 bytes
            mid = 0.3 + (i % 300) / 1000
            msg = {"type": "M", "topic": "predictOrderbook/123", "data": {
                "marketId": 123, "updateTimestampMs": 1736696400000 + i,
                "asks": [[round(mid + 0.01 * k, 2), 100 + k * 7 + i % 13] for k in range(1, 4)],
                "bids": [[round(mid - 0.01 * k, 2), 200 + k * 5 + i % 11] for k in range(1, 4)],
                "version": 1, "orderCount": 20, "lastOrderSettled": {"id": str(1000 + i // 10), "kind": "LIMIT", "marketId": 123,
                                                                     "outcome": "No", "price": "0.80", "side": "Bid"}}}
        elif mix == "books":  # predict.fun books over 200 markets, 8 levels a side, ~500 bytes
            msg = _book(i, BOOKS_MARKETS[i % len(BOOKS_MARKETS)], 8)
        elif mix == "trades":
            msg = _trade(i)
        elif mix == "aggtrade":
            msg = _aggtrade(i)
        elif mix == "realistic":
            msg = _realistic(i)
        else:
            raise ValueError(f"unknown mix {mix!r}; mixes: {', '.join(MIXES)}")
        out.append(json.dumps(msg, separators=(",", ":")).encode())
    return out


def frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def handshake(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("client left during the handshake")
        data += chunk
    key = next(l.split(b":", 1)[1].strip() for l in data.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key"))
    accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest()).decode()
    conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())


def _drain(conn: socket.socket, closing: threading.Event, replied: threading.Event) -> None:
    """Read and drop what the client sends; `replied` once it sends anything after `closing`, or
    leaves."""
    try:
        while True:
            data = conn.recv(65536)
            if not data or closing.is_set():
                break
    except OSError:
        pass
    replied.set()


def serve(mix: str, frames: int, port: int = 0) -> None:
    # Chance updates: every frame distinct, times increasing per outcome from first to last, as a
    # live stream sends them. (Until 2026-11-22 a block of 100k was repeated, so each outcome's time
    # jumped back 100,000 s every 100k frames: no venue does that.) Books: 100k distinct, repeated.
    encoded = [frame(p) for p in payloads(mix, frames if mix == "small" else 100_000)]
    block = b"".join(encoded)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    print(f"port {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handshake(conn)
            # What the client sends (subscriptions: thousands of them for the realistic mix) is read
            # and dropped meanwhile: unread, it would fill the socket and block both sides.
            closing, replied = threading.Event(), threading.Event()
            drain = threading.Thread(target=_drain, args=(conn, closing, replied), daemon=True)
            drain.start()
            full, rest = divmod(frames, len(encoded))
            for _ in range(full):
                conn.sendall(block)
            if rest:
                conn.sendall(b"".join(encoded[:rest]))
            closing.set()
            conn.sendall(frame(struct.pack("!H", 1000) + b"done", opcode=8))
            replied.wait(10)  # the client's close reply (or EOF); then the server closes TCP, as RFC 6455 says
        except (OSError, ConnectionError):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--mix", choices=MIXES, default="small")
    ap.add_argument("--frames", type=int, default=1_000_000)
    a = ap.parse_args()
    serve(a.mix, a.frames)
