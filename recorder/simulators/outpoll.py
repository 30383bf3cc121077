"""Outpoll simulator: five service hosts like production (order book, chance history, order
service, wallet, history service), each on its own loopback port with the production paths, so
the AUTH signature is computed over the same path (`/order/ws`, `/balance/ws`)."""

from __future__ import annotations

import base64
import hmac
import itertools
import time

import trio

from ..venues.outpoll import signature
from .base import RandomWalk, SimConn, Simulator

API_KEY = "op_k_simulator"
API_SECRET = base64.urlsafe_b64encode(b"simulator-secret-0123456789abcdef").rstrip(b"=").decode()
PATHS = {
    "order_book": ("order-book", "/event/ws"),
    "chance": ("chance", "/ws"),
    "orders": ("order-service", "/order/ws"),
    "balances": ("wallet", "/balance/ws"),
    "order_feed": ("history", "/order/ws"),
    "activity": ("history", "/history/ws"),
    "last_trades": ("history", "/last-trades/ws"),
}


class OutpollSimulator(Simulator):
    name = "outpoll"
    hosts = ("order-book", "chance", "order-service", "wallet", "history")

    def __init__(self, settings=None, *, api_key: str = API_KEY, api_secret: str = API_SECRET) -> None:
        super().__init__(settings)
        self.api_key, self.api_secret = api_key, api_secret
        self.walks: dict[tuple[str, str], RandomWalk] = {}
        self.books: dict[str, dict[str, dict]] = {}
        self._ids = itertools.count(1)
        self.auth_attempts = 0
        self.charts: dict[tuple[str, str], list[tuple[int, float]]] = {}  # every chance point the venue made
        self._down_until = 0.0

    # --- outage: the venue's chart moves on while nobody can connect ------------------------
    def check_handshake(self, host: str, path: str, headers: dict[str, str]) -> int | None:
        return 503 if trio.current_time() < self._down_until else None

    async def outage(self, seconds: float) -> None:
        """A fault: drop every connection and refuse new ones for `seconds`, while the chance
        charts of every outcome ever subscribed go on moving (history can fill the hole later)."""
        self.faults_injected.append("outage")
        self._down_until = trio.current_time() + seconds
        await self.drop()
        while trio.current_time() < self._down_until:
            await trio.sleep(self.settings.interval)
            if self.charts:
                self._chart_point(*self.rng.choice(sorted(self.charts)))

    def _chart_point(self, event: str, outcome: str) -> tuple[int, float]:
        point = (int(time.time()), self._walk(event, outcome).step())
        self.charts.setdefault((event, outcome), []).append(point)
        return point

    def _history_points(self, outcome_key: tuple[str, str], lo: int, hi: int) -> list[dict]:
        return [{"t": t, "p": p} for t, p in self.charts.get(outcome_key, []) if lo <= t <= hi]

    def stream_url(self, stream: str) -> str:
        host, path = PATHS[stream]
        return self.url(host, path)

    def sample_frame(self) -> str:
        return '{"t":"UPDATE_HISTORY","e":"evt-1","o":["evt-1-yes"],"d":{"t":1712160300,"p":0.5}}'

    def _walk(self, event: str, outcome: str) -> RandomWalk:
        key = (event, outcome)
        if key not in self.walks:
            self.walks[key] = RandomWalk(self.rng)
        return self.walks[key]

    @staticmethod
    def outcomes(event: str) -> list[str]:
        return [f"{event}-yes", f"{event}-no"]

    async def serve_connection(self, host: str, conn: SimConn) -> None:
        route = {
            ("order-book", "/event/ws"): self._order_book,
            ("chance", "/ws"): self._chance,
            ("order-service", "/order/ws"): self._orders,
            ("wallet", "/balance/ws"): self._balances,
            ("history", "/order/ws"): self._order_feed,
            ("history", "/history/ws"): self._activity,
            ("history", "/last-trades/ws"): self._last_trades,
        }.get((host, conn.path.split("?")[0]))
        if route is None:
            await self.send(conn, {"t": "error", "d": {"error": f"no such endpoint {conn.path}"}, "r": "not found"})
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pinger, conn)
            await route(conn, nursery)
            nursery.cancel_scope.cancel()

    async def _pinger(self, conn: SimConn) -> None:
        while True:
            await trio.sleep(self.settings.heartbeat_interval)
            await self.send(conn, {"t": "PING", "d": None, "r": None})

    # --- public ---------------------------------------------------------------------------
    def _book_item(self, event: str, outcome: str) -> dict:
        c = self._walk(event, outcome).step()
        return {"o": outcome, "c": c, "b": round(max(0.0, c - 0.01), 4), "a": round(min(1.0, c + 0.01), 4)}

    async def _order_book(self, conn: SimConn, nursery: trio.Nursery) -> None:
        async def push(conn: SimConn) -> None:
            if conn.subscriptions:
                event = self.rng.choice(sorted(conn.subscriptions))
                item = self._book_item(event, self.rng.choice(self.outcomes(event)))
                for key in self.rng.sample(["c", "b", "a"], self.rng.randint(0, 2)):
                    del item[key]  # deltas carry only what changed
                await self.send(conn, {"t": "PRICES_DATA_DELTA", "e": event, "d": [item]})

        nursery.start_soon(self.run_pushes, conn, push)
        while True:
            msg = await self.receive_json(conn)
            if not msg:
                await self.send(conn, {"t": "ERROR", "d": {"error": "invalid message"}, "r": "invalid"})
                continue
            event = msg.get("e")
            if msg.get("t") == "SUBSCRIBE" and isinstance(event, str):
                conn.subscriptions.add(event)
                await self.send(conn, {"t": "SUBSCRIBED", "e": event})
                await self.send(conn, {"t": "PRICES_DATA", "e": event,
                                       "d": [self._book_item(event, o) for o in self.outcomes(event)]})
            elif msg.get("t") == "UNSUBSCRIBE":
                conn.subscriptions.discard(event)

    async def _chance(self, conn: SimConn, nursery: trio.Nursery) -> None:
        async def push(conn: SimConn) -> None:
            if conn.subscriptions:
                event, outcome = self.rng.choice(sorted(conn.subscriptions))
                t, p = self._chart_point(event, outcome)
                await self.send(conn, {"t": "UPDATE_HISTORY", "e": event, "o": [outcome], "d": {"t": t, "p": p}})

        nursery.start_soon(self.run_pushes, conn, push)
        while True:
            msg = await self.receive_json(conn)
            if not msg:
                continue
            event, outcomes = msg.get("e"), msg.get("o")
            if msg.get("t") == "SUBSCRIBE":
                if not isinstance(outcomes, list) or not outcomes:
                    await self.send(conn, {"t": "error", "e": event, "o": [], "d": {"error": "No outcome IDs provided"}})
                    continue
                for o in outcomes:
                    conn.subscriptions.add((event, o))
                    self.charts.setdefault((event, o), [])
                    walk = self._walk(event, o)
                    await self.send(conn, {"t": "probability", "e": event, "o": [o],
                                           "d": {"t": int(time.time()) - 1, "p": round(walk.p, 4)}})
                await self.send(conn, {"t": "success", "e": event, "o": outcomes, "d": "subscribed", "r": None})
            elif msg.get("t") == "HISTORY" and isinstance(msg.get("d"), dict):
                lo, hi = int(msg["d"].get("from", 0)), int(msg["d"].get("to", 0))
                known = {o: self._history_points((event, o), lo, hi) for o in outcomes or []}
                if any(known.values()):  # the points this venue made: one reply per outcome
                    for o, points in known.items():
                        await self.send(conn, {"t": "HISTORY", "e": event, "o": [o], "d": points})
                    continue
                step = max(60, (hi - lo) // 500)
                points = [{"t": t, "p": round(0.5 + 0.3 * ((t // step) % 7 - 3) / 3, 4)} for t in range(lo, hi, step)]
                await self.send(conn, {"t": "HISTORY", "e": event, "o": outcomes, "d": points})

    async def _activity(self, conn: SimConn, nursery: trio.Nursery) -> None:
        async def push(conn: SimConn) -> None:
            if conn.subscriptions:
                event, outcome = self.rng.choice(sorted(conn.subscriptions))
                await self.send(conn, self._trade(event, outcome))

        nursery.start_soon(self.run_pushes, conn, push)
        while True:
            msg = await self.receive_json(conn)
            if msg and msg.get("t") == "SUBSCRIBE":
                if not isinstance(msg.get("o"), str):
                    await self.send(conn, {"t": "error", "e": msg.get("e"), "o": [], "d": {"error": "No outcome IDs provided"}})
                    continue
                conn.subscriptions.add((msg.get("e"), msg["o"]))

    def _trade(self, event: str, outcome: str) -> dict:
        return {"t": "TRADE", "e": event, "o": outcome,
                "d": {"id": f"tr-{next(self._ids)}", "p": self._walk(event, outcome).step(),
                      "q": self.rng.randint(1, 500), "s": self.rng.choice(["BUY", "SELL"]), "ts": int(time.time())}}

    async def _last_trades(self, conn: SimConn, nursery: trio.Nursery) -> None:
        async def push(conn: SimConn) -> None:
            event = self.rng.choice(["evt-1", "evt-2", "evt-3"])
            await self.send(conn, self._trade(event, self.rng.choice(self.outcomes(event))))

        await self.run_pushes(conn, push)

    # --- private --------------------------------------------------------------------------
    async def _auth(self, conn: SimConn) -> bool:
        msg = await self.receive_json(conn)
        self.auth_attempts += 1
        d = msg.get("d") if msg and msg.get("t") == "AUTH" else None
        ok = False
        if isinstance(d, dict) and not self.reject_auth and d.get("apiKey") == self.api_key:
            ts = str(d.get("timestamp", ""))
            expected = signature(self.api_secret, ts, conn.path.split("?")[0])
            ok = ts.isdigit() and abs(int(ts) - time.time()) <= 30 and hmac.compare_digest(expected, str(d.get("signature")))
        if not ok:
            await self.send(conn, {"t": "error", "d": {"error": "Invalid or missing credentials"}, "r": "unauthorized"})
            return False
        conn.authed = True
        return True

    async def _orders(self, conn: SimConn, nursery: trio.Nursery) -> None:
        if not await self._auth(conn):
            return
        await self.send(conn, {"t": "success", "d": "authorized", "r": None})

        async def push(conn: SimConn) -> None:
            order = f"ord-{next(self._ids)}"
            if self.rng.random() < 0.8:
                await self.send(conn, {"t": "ORDER_UPDATE", "d": {"i": order, "u": "user-1",
                                                                   "s": self.rng.choice(["SUCCESS", "FAILED"])}})
            else:
                await self.send(conn, {"t": "TPSL_UPDATE", "d": {"i": order, "u": "user-1", "a": "evt-1-yes", "q": 100,
                                                                  "tpp": 0.95, "slp": 0.10, "s": "ACTIVE"}})

        await self.run_pushes(conn, push)

    async def _balances(self, conn: SimConn, nursery: trio.Nursery) -> None:
        if not await self._auth(conn):
            return
        balance = 1250.50
        await self.send(conn, {"t": "success", "d": {"l": [{"i": "USD", "b": balance, "f": 1200.00}]}, "r": None})

        async def push(conn: SimConn) -> None:
            nonlocal balance
            change = round(self.rng.uniform(-50, 50), 2)
            balance = round(balance + change, 2)
            await self.send(conn, {"u": "user-1", "a": "USD", "aop": 0.5, "c": change, "b": balance, "f": round(balance - 50, 2)})

        await self.run_pushes(conn, push)

    async def _order_feed(self, conn: SimConn, nursery: trio.Nursery) -> None:
        if not await self._auth(conn):
            return
        await self.send(conn, {"t": "SUCCESS", "d": {"message": "AUTH successful"}, "r": None})

        async def push(conn: SimConn) -> None:
            await self.send(conn, {"t": "ORDER_FILLED", "e": "evt-1", "d": {"i": f"ord-{next(self._ids)}", "q": 10,
                                                                             "p": 0.55}})

        await self.run_pushes(conn, push)
