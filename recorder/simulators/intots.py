"""InTots simulator: trades, event chart and asset price feeds under /api/v1/. Sends one history
message on connect, then live events; pings every `ping_interval` and closes a connection whose
pong does not arrive within `read_deadline` (as the real server's read deadline does)."""

from __future__ import annotations

import datetime as dt
import re
import time

import trio

from .base import RandomWalk, SimConn, Simulator

TRADERS = ("alice", "bob", "carol", "dave")
MARKETS = {"mkt_001": "Will ETH hit $5k?", "mkt_002": "Will BTC close above $100k?"}


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class IntotsSimulator(Simulator):
    name = "intots"

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.recent_trades: list[dict] = []
        self.all_trades: list[dict] = []  # every trade ever made (each was sent on some connection)
        self.charts: dict[str, RandomWalk] = {}
        self.chart_history: dict[str, list[dict]] = {}
        self.prices: dict[str, int] = {}
        self.pings_unanswered = 0

    def url_for(self, path: str) -> str:
        return self.url("main", f"/api/v1{path}")

    def sample_frame(self) -> str:
        return '{"type":"price_update","symbol":"BTCUSDT","price":8734521}'

    async def serve_connection(self, host: str, conn: SimConn) -> None:
        path = conn.path.split("?")[0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pinger, conn, nursery.cancel_scope)
            nursery.start_soon(self._drain, conn)
            if path == "/api/v1/ws/trades":
                await self._trades(conn)
            elif m := re.fullmatch(r"/api/v1/ws/events/([^/]+)/chart", path):
                await self._chart(conn, m.group(1))
            elif m := re.fullmatch(r"/api/v1/ws/assets/([^/]+)/price", path):
                await self._price(conn, m.group(1))
            nursery.cancel_scope.cancel()

    async def _drain(self, conn: SimConn) -> None:
        while True:  # InTots reads nothing from clients, but the socket must be read for pongs
            await conn.ws.get_message()

    async def _pinger(self, conn: SimConn, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.settings.ping_interval)
            with trio.move_on_after(self.settings.read_deadline) as deadline:
                await conn.ws.ping()
            if deadline.cancelled_caught:
                self.pings_unanswered += 1
                stream = getattr(conn.ws, "_stream", None)
                if stream is not None:
                    await stream.aclose()  # read deadline passed: drop the connection
                scope.cancel()
                return

    def _new_trade(self) -> dict:
        market = self.rng.choice(sorted(MARKETS))
        trade = {"amount": self.rng.randint(1, 2000) * 100, "name": self.rng.choice(TRADERS),
                 "token": self.rng.choice(["Yes", "No", "YES"]), "event": MARKETS[market], "market": market,
                 "avatar": "https://cdn.intots.com/avatars/x.jpg"}
        self.recent_trades = (self.recent_trades + [trade])[-20:]
        self.all_trades.append(trade)
        return trade

    async def _trades(self, conn: SimConn) -> None:
        if not self.recent_trades:
            for _ in range(5):
                self._new_trade()
        kind = "initial" if conn.number % 2 else "init"  # the doc pages disagree: send both
        await self.send(conn, {"type": kind, "trades": list(self.recent_trades)})

        async def push(conn: SimConn) -> None:
            await self.send(conn, {"type": "trade", "trade": self._new_trade()})

        await self.run_pushes(conn, push)

    async def _chart(self, conn: SimConn, event_id: str) -> None:
        walk = self.charts.setdefault(event_id, RandomWalk(self.rng))
        history = self.chart_history.setdefault(event_id, [])
        if not history:
            now = int(time.time())
            for i in range(10, 0, -1):
                p = walk.step()
                history.append({"timestamp": _iso(now - i * 60), "values": [p, round(1 - p, 4)]})
        await self.send(conn, {"type": "init", "event_id": event_id, "ratios": list(history[-50:])})
        forms = 0

        async def push(conn: SimConn) -> None:
            nonlocal forms
            p = walk.step()
            now = time.time()
            forms += 1
            if forms % 5 == 0:  # the flat list form: one point, no timestamp
                await self.send(conn, {"type": "chart_update", "ratios": [p, round(1 - p, 4)]})
            elif forms % 3 == 0:  # the long-docs list form
                point = {"timestamp": _iso(now), "values": [p, round(1 - p, 4)]}
                history.append(point)
                await self.send(conn, {"type": "chart_update", "event_id": event_id, "ratios": [point]})
            else:  # the seed form, 0..10000; history on the next connect has the point as a value list
                yes = int(round(p * 10000))
                stamp = _iso(now) if forms % 2 else dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat().replace(
                    "+00:00", "Z")
                history.append({"timestamp": stamp, "values": [yes / 10000, (10000 - yes) / 10000]})
                await self.send(conn, {"type": "chart_update", "timestamp": stamp, "ratios": {"Yes": yes, "No": 10000 - yes}})

        await self.run_pushes(conn, push)

    async def _price(self, conn: SimConn, symbol: str) -> None:
        price = self.prices.setdefault(symbol, 8_734_521 if symbol.startswith("BTC") else 345_678)

        async def push(conn: SimConn) -> None:
            nonlocal price
            price = max(1, price + self.rng.randint(-500, 500))
            self.prices[symbol] = price
            await self.send(conn, {"type": "price_update", "symbol": symbol, "price": price})

        await push(conn)
        await self.run_pushes(conn, push)
