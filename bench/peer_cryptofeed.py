"""The peer for `make bench-peer`: cryptofeed (run by bench/peer.py in a throw-away venv on Python
3.13+, the version cryptofeed needs) recording a Binance-style aggTrade stream from the loopback
sender to Parquet, as a user of it would: its Binance feed, a trades callback buffering the
fields, and pyarrow writing a file every 100,000 trades. Prints one JSON line, like bench.client.

    python bench/peer_cryptofeed.py --url ws://127.0.0.1:PORT --frames N --out DIR

Only loopback: the feed's endpoint is the sender, and its symbol table is given here (cryptofeed
would otherwise fetch Binance's exchangeInfo over the internet). cryptofeed accepts only wss://
addresses; the sender (like the recorder's benchmark) speaks plain ws://, so the address is given
as wss:// and the websockets connect call cryptofeed makes is handed the ws:// one: the same
client library and settings, without TLS, as for the recorder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import cryptofeed.connection
from cryptofeed import FeedHandler
from cryptofeed.connection import WebsocketEndpoint
from cryptofeed.defines import BINANCE, SPOT, TRADES
from cryptofeed.exchanges import Binance
from cryptofeed.symbols import Symbols

FLUSH_ROWS = 100_000


def loopback_binance(url: str) -> type:
    plain_connect = cryptofeed.connection.connect

    def connect(address: str, **kwargs):
        return plain_connect("ws://" + address.removeprefix("wss://"), **kwargs)

    cryptofeed.connection.connect = connect
    url = "wss://" + url.removeprefix("ws://")

    class LoopbackBinance(Binance):
        websocket_endpoints = [WebsocketEndpoint(url, sandbox=url)]

    Symbols.set(BINANCE, {"BTC-USDT": "BTCUSDT"}, {"tick_size": {"BTC-USDT": "0.01"}, "instrument_type": {"BTC-USDT": SPOT}})
    return LoopbackBinance


class ParquetTrades:
    """Buffers trades column by column; every FLUSH_ROWS rows writes one Parquet file (zstd)."""

    def __init__(self, out: Path, frames: int, handler: FeedHandler) -> None:
        self.out, self.frames, self.handler = out, frames, handler
        self.cols: dict[str, list] = {k: [] for k in ("exchange", "symbol", "side", "amount", "price", "ts", "id", "recv")}
        self.n = self.files = 0
        self.t_first = self.t_last = self.cpu_first = None

    async def __call__(self, t, receipt_timestamp: float) -> None:
        c = self.cols
        c["exchange"].append(t.exchange)
        c["symbol"].append(t.symbol)
        c["side"].append(t.side)
        c["amount"].append(float(t.amount))
        c["price"].append(float(t.price))
        c["ts"].append(t.timestamp)
        c["id"].append(t.id)
        c["recv"].append(receipt_timestamp)
        self.n += 1
        if self.n == 1:
            self.t_first, self.cpu_first = time.perf_counter(), time.thread_time()
        if len(c["id"]) >= FLUSH_ROWS:
            self.flush()
        if self.n == self.frames:
            self.flush()
            self.t_last = time.perf_counter()
            self.handler.request_stop()

    def flush(self) -> None:
        if not self.cols["id"]:
            return
        pq.write_table(pa.table(self.cols), self.out / f"trades-{self.files:05d}.parquet", compression="zstd")
        self.files += 1
        for v in self.cols.values():
            v.clear()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    fh = FeedHandler(config={"log": {"disabled": True}, "uvloop": True})
    sink = ParquetTrades(out, a.frames, fh)
    fh.add_feed(loopback_binance(a.url)(symbols=["BTC-USDT"], channels=[TRADES], callbacks={TRADES: sink}))
    fh.run(install_signal_handlers=False)
    elapsed = sink.t_last - sink.t_first
    print(json.dumps({"frames": sink.n, "seconds": elapsed, "rate": (sink.n - 1) / elapsed, "files": sink.files,
                      "loop_cpu_us_per_frame": round((time.thread_time() - sink.cpu_first) / sink.n * 1e6, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}), flush=True)
    os._exit(0)  # the sender keeps the connection open for the next client: do not wait on its close


if __name__ == "__main__":
    main()
