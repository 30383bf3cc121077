"""All three simulators together, and a recorder config that subscribes to every stream of each:
what `recorder demo`, `recorder simulate` and the end-to-end tests use."""

from __future__ import annotations

import attrs
import trio

from .base import SimSettings
from .intots import IntotsSimulator
from .outpoll import API_KEY as OP_KEY, API_SECRET as OP_SECRET, OutpollSimulator
from .predictfun import API_KEY as PF_KEY, JWT as PF_JWT, PredictfunSimulator

# Environment for the simulators' credentials (the demo sets these; tests pass them as environ).
SIM_ENV = {"OUTPOLL_API_KEY": OP_KEY, "OUTPOLL_API_SECRET": OP_SECRET, "PREDICTFUN_API_KEY": PF_KEY,
           "PREDICTFUN_JWT": PF_JWT}
SECRETS = tuple(SIM_ENV.values())


@attrs.define
class Fleet:
    outpoll: OutpollSimulator
    intots: IntotsSimulator
    predictfun: PredictfunSimulator

    @property
    def all(self):
        return (self.outpoll, self.intots, self.predictfun)

    def urls(self) -> dict[str, str]:
        out = {f"outpoll {s}": self.outpoll.stream_url(s) for s in
               ("order_book", "chance", "orders", "balances", "order_feed", "activity", "last_trades")}
        out["intots base_url"] = self.intots.url_for("")
        out["predictfun"] = self.predictfun.ws_url()
        return out

    def feeds(self, *, transport: str = "websockets", stale_seconds: float = 10.0,
              backoff_initial: float = 0.1, backoff_max: float = 1.0) -> list[dict]:
        """[[feeds]] entries for every stream of every simulated venue."""
        common = {"transport": transport, "stale_seconds": stale_seconds, "backoff_initial_seconds": backoff_initial,
                  "backoff_max_seconds": backoff_max, "healthy_seconds": 1.0}
        op, it = self.outpoll, self.intots
        private = {"api_key_env": "OUTPOLL_API_KEY", "api_secret_env": "OUTPOLL_API_SECRET"}
        feeds = [
            {"name": "op-book", "venue": "outpoll", "stream": "order_book", "events": ["evt-1", "evt-2"],
             "url": op.stream_url("order_book")},
            {"name": "op-chance", "venue": "outpoll", "stream": "chance", "history_seconds": 3600,
             "subscriptions": [{"event": "evt-1", "outcomes": ["evt-1-yes", "evt-1-no"]}], "url": op.stream_url("chance")},
            {"name": "op-activity", "venue": "outpoll", "stream": "activity",
             "subscriptions": [{"event": "evt-1", "outcome": "evt-1-yes"}], "url": op.stream_url("activity")},
            {"name": "op-last-trades", "venue": "outpoll", "stream": "last_trades", "url": op.stream_url("last_trades")},
            {"name": "op-orders", "venue": "outpoll", "stream": "orders", "url": op.stream_url("orders"), **private},
            {"name": "op-balances", "venue": "outpoll", "stream": "balances", "url": op.stream_url("balances"), **private},
            {"name": "op-order-feed", "venue": "outpoll", "stream": "order_feed", "url": op.stream_url("order_feed"),
             **private},
            {"name": "it-trades", "venue": "intots", "stream": "trades", "base_url": it.url_for("")},
            {"name": "it-chart", "venue": "intots", "stream": "chart", "event_id": "42", "base_url": it.url_for("")},
            {"name": "it-btc", "venue": "intots", "stream": "asset_price", "symbol": "BTCUSDT", "base_url": it.url_for("")},
            {"name": "pf-main", "venue": "predictfun", "url": self.predictfun.ws_url(), "api_key_env": "PREDICTFUN_API_KEY",
             "topics": ["predictOrderbook/123", "polymarketChance/123", "kalshiChance/123", "assetPriceUpdate/1"]},
            {"name": "pf-wallet", "venue": "predictfun", "url": self.predictfun.ws_url(), "api_key_env": "PREDICTFUN_API_KEY",
             "jwt_env": "PREDICTFUN_JWT", "topics": ["predictWalletEvents"]},
        ]
        return [{**f, **common} for f in feeds]


async def start_fleet(nursery: trio.Nursery, settings: SimSettings | None = None) -> Fleet:
    settings = settings or SimSettings()
    fleet = Fleet(outpoll=OutpollSimulator(settings), intots=IntotsSimulator(settings),
                  predictfun=PredictfunSimulator(settings))
    for sim in fleet.all:
        await sim.start(nursery)
    return fleet
