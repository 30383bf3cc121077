"""predict.fun simulator: one endpoint (/ws), API key in the x-api-key header (401 otherwise),
request/response subscriptions, pushes per topic, a heartbeat every `heartbeat_interval` that must
be echoed before the next one (else close 1000), and the reconnect notice followed by a 1001 close
after graceMs (`reconnect_notice()`)."""

from __future__ import annotations

import itertools
import time

import trio
import trio_websocket as tw

from .base import RandomWalk, SimConn, Simulator

API_KEY = "pf_simulator_key"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzaW0tdXNlciJ9.c2ltdWxhdG9yLXNpZ25hdHVyZQ"
KNOWN = ("predictOrderbook", "polymarketChance", "kalshiChance", "assetPriceUpdate", "predictWalletEvents")
WALLET_TYPES = ("orderAccepted", "orderNotAccepted", "orderExpired", "orderCancelled", "orderTransactionSubmitted",
                "orderTransactionSuccess", "orderTransactionFailed")


class PredictfunSimulator(Simulator):
    name = "predictfun"

    def __init__(self, settings=None, *, api_key: str | None = API_KEY, jwt: str = JWT) -> None:
        super().__init__(settings)
        self.api_key, self.jwt = api_key, jwt
        self.walks: dict[str, RandomWalk] = {}
        self.prices: dict[str, float] = {}
        self._ids = itertools.count(198198432)
        self.settlements: dict[str, dict] = {}
        self.heartbeats_missed = 0
        self.silenced: set[str] = set()

    def silence(self, topic: str) -> None:
        """Stop pushing one topic (heartbeats and other topics go on): a stale-but-open subscription."""
        self.faults_injected.append("silence")
        self.silenced.add(topic)

    def ws_url(self) -> str:
        return self.url("main", "/ws")

    def sample_frame(self) -> str:
        return '{"type":"M","topic":"kalshiChance/7","data":{"percentage":64.5,"timestamp":1736696400000}}'

    def check_handshake(self, host: str, path: str, headers: dict[str, str]) -> int | None:
        if self.api_key is not None and headers.get("x-api-key") != self.api_key:
            return 401
        return None

    async def serve_connection(self, host: str, conn: SimConn) -> None:
        conn.authed = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat, conn, nursery.cancel_scope)
            nursery.start_soon(self.run_pushes, conn, self._push)
            await self._requests(conn)
            nursery.cancel_scope.cancel()

    async def _requests(self, conn: SimConn) -> None:
        while True:
            msg = await self.receive_json(conn)
            if msg is None:
                await self.send(conn, {"type": "R", "requestId": -1, "success": False,
                                       "error": {"code": "invalid_json", "message": "invalid JSON"}})
                continue
            method, rid = msg.get("method"), msg.get("requestId")
            if method == "heartbeat":
                conn.received_heartbeat = msg.get("data")
                continue
            if method not in ("subscribe", "unsubscribe"):
                continue
            for topic in msg.get("params") or []:
                error = self._check_topic(topic)
                if error:
                    await self.send(conn, {"type": "R", "requestId": rid, "success": False,
                                           "error": {"code": error, "message": f"cannot subscribe to {topic.split('/')[0]}"}})
                    break
                if method == "subscribe":
                    conn.subscriptions.add(topic)
                else:
                    conn.subscriptions.discard(topic)
            else:
                await self.send(conn, {"type": "R", "requestId": rid, "success": True, "data": None})

    def _check_topic(self, topic) -> str | None:
        if not isinstance(topic, str) or topic.split("/")[0] not in KNOWN or "/" not in topic:
            return "invalid_topic"
        if topic.startswith("predictWalletEvents/") and (self.reject_auth or topic.split("/", 1)[1] != self.jwt):
            return "invalid_credentials"
        return None

    async def _heartbeat(self, conn: SimConn, scope: trio.CancelScope) -> None:
        conn.received_heartbeat = None
        while True:
            await trio.sleep(self.settings.heartbeat_interval)
            if self._quiesced:
                continue  # sending no heartbeats, so expecting no echo
            sent = getattr(conn, "sent_heartbeat", None)
            if sent is not None and conn.received_heartbeat != sent:
                self.heartbeats_missed += 1
                with trio.move_on_after(1):
                    await conn.ws.aclose(1000, "heartbeat not answered")
                scope.cancel()
                return
            conn.sent_heartbeat = int(time.time() * 1000)
            await self.send(conn, {"type": "M", "topic": "heartbeat", "data": conn.sent_heartbeat})

    async def _push(self, conn: SimConn) -> None:
        live = sorted(conn.subscriptions - self.silenced)
        if not live:
            return
        topic = self.rng.choice(live)
        name, _, param = topic.partition("/")
        now_ms = int(time.time() * 1000)
        if name == "predictOrderbook":
            data = self._book(param, now_ms)
        elif name in ("polymarketChance", "kalshiChance"):
            p = self.walks.setdefault(topic, RandomWalk(self.rng)).step()
            data = {"percentage": round(p * 100, 2), "timestamp": now_ms}
        elif name == "assetPriceUpdate":
            price = self.prices.setdefault(param, {"1": 84532.17, "2": 3123.45, "3": 612.3}.get(param, 10.0))
            price = round(price * (1 + self.rng.gauss(0, 0.0005)), 2)
            self.prices[param] = price
            data = {"price": price, "publishTime": now_ms // 1000, "timestamp": now_ms}
        else:
            data = self._wallet_event(now_ms)
        await self.send(conn, {"type": "M", "topic": topic, "data": data})

    def _book(self, market: str, now_ms: int) -> dict:
        mid = self.walks.setdefault(f"book/{market}", RandomWalk(self.rng)).step()
        if market not in self.settlements or self.rng.random() < 0.2:
            self.settlements[market] = {"id": str(next(self._ids)), "kind": "LIMIT", "marketId": int(market) if market.isdigit() else market,
                                        "outcome": self.rng.choice(["Yes", "No"]), "price": f"{mid:.2f}",
                                        "side": self.rng.choice(["Bid", "Ask"])}
        asks = [[round(mid + 0.01 * (i + 1), 2), self.rng.randint(100, 2000)] for i in range(3)]
        bids = [[round(mid - 0.01 * (i + 1), 2), self.rng.randint(100, 2000)] for i in range(3)]
        ts = float(now_ms) if self.rng.random() < 0.3 else now_ms  # sometimes a float, as seen live
        return {"marketId": int(market) if market.isdigit() else market, "updateTimestampMs": ts, "asks": asks,
                "bids": bids, "version": 1, "orderCount": 20, "lastOrderSettled": self.settlements[market],
                "settlementsPending": {"asks": [], "bids": []}}

    def _wallet_event(self, now_ms: int) -> dict:
        kind = self.rng.choice(WALLET_TYPES)
        key = "type" if self.rng.random() < 0.7 else "eventType"
        return {key: kind, "orderId": str(next(self._ids)), "orderHash": "0x" + "ab" * 32, "timestamp": now_ms,
                "details": {"marketId": 42, "outcome": "YES", "quoteType": "BID", "quantity": "18",
                            "quantityFilled": "5", "price": "0.40"}, "fill": {}, "fee": {}}

    async def reconnect_notice(self, grace_ms: int = 500) -> None:
        """Tell every client to reconnect, keep serving for graceMs, then close with 1001."""
        self.faults_injected.append("reconnect_notice")
        conns = list(self.connections)
        for conn in conns:
            try:
                await self.send(conn, {"type": "M", "topic": "system",
                                       "data": {"event": "reconnect", "reason": "server_shutdown", "graceMs": grace_ms}})
            except (tw.ConnectionClosed, trio.BrokenResourceError):
                pass
        await trio.sleep(grace_ms / 1000)
        for conn in conns:
            with trio.move_on_after(1):
                try:
                    await conn.ws.aclose(1001, "server shutdown")
                except (tw.ConnectionClosed, trio.BrokenResourceError):
                    pass
