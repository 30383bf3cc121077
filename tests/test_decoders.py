"""Venue decoders on realistic frames (from the venues' pages), and the sans-IO protocols."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from recorder.config import Secret
from recorder.errors import DecodeError
from recorder import records
from recorder.records import Account, Book, Chance, Price, Trade
from recorder.venues import intots, outpoll, predictfun
from recorder.venues.base import NOTHING, FrameMeta, UnknownMessage

TS = 1_760_000_000_000_000


def meta(venue, seq=1):
    return FrameMeta(venue=venue, feed="f", conn_id="c", seq=seq, ts_recv=TS)


def as_records(items):
    """Decoders return records, or on hot paths the same as rows: compare them as records."""
    return [records.from_row(r) if type(r) is tuple else r for r in items]


def dec(module, frames, **spec):
    spec_obj = module.FeedSpec(**spec)
    d = module.make_decoder(spec_obj)
    out = []
    for i, f in enumerate(frames, 1):
        out.extend(as_records(d.decode(f if isinstance(f, str) else json.dumps(f), meta(module.VENUE, i))))
    return out, d


# --- Outpoll ---------------------------------------------------------------------------------

def test_outpoll_book_snapshot_then_delta_merges_state():
    """A delta with only some fields is merged into the outcome's last state."""
    rows, _ = dec(outpoll, [
        {"t": "PRICES_DATA", "e": "ev", "d": [{"o": "y", "c": 0.55, "b": 0.54, "a": 0.56}, {"o": "n", "c": 0.45, "b": 0.44, "a": 0.46}]},
        {"t": "PRICES_DATA_DELTA", "e": "ev", "d": [{"o": "y", "b": 0.53}]},
    ], stream="order_book", events=("ev",))
    assert [(r.outcome, r.best_bid, r.best_ask, r.last) for r in rows] == [
        ("y", 0.54, 0.56, 0.55), ("n", 0.44, 0.46, 0.45), ("y", 0.53, 0.56, 0.55)]
    assert all(isinstance(r, Book) and r.market == "ev" and r.ts_event is None for r in rows)


def test_outpoll_snapshot_after_reconnect_records_only_changes():
    """The snapshot re-sent on resubscribe adds no rows for unchanged outcomes."""
    snap = {"t": "PRICES_DATA", "e": "ev", "d": [{"o": "y", "c": 0.5, "b": 0.4, "a": 0.6}]}
    rows, _ = dec(outpoll, [snap, snap], stream="order_book", events=("ev",))
    assert len(rows) == 1


def test_outpoll_chance_points_each_outcome_and_dedupes_latest():
    """One point applies to every outcome in `o`; the latest value replayed on subscribe is not repeated."""
    point = {"t": "UPDATE_HISTORY", "e": "ev", "o": ["y", "z"], "d": {"t": 1712160300, "p": 0.67}}
    latest = {"t": "probability", "e": "ev", "o": ["y"], "d": {"t": 1712160300, "p": 0.67}}
    rows, _ = dec(outpoll, [point, latest, {"t": "success", "d": "ok"}], stream="chance")
    assert [(r.outcome, r.probability, r.ts_event) for r in rows] == [("y", 0.67, 1712160300_000_000),
                                                                       ("z", 0.67, 1712160300_000_000)]
    assert all(isinstance(r, Chance) and r.origin == "outpoll" for r in rows)


def test_outpoll_history_response_is_source_history():
    """The chart backfill answer becomes chance rows marked history."""
    rows, _ = dec(outpoll, [{"t": "HISTORY", "e": "ev", "o": ["y"], "d": [{"t": 1, "p": 0.1}, {"t": 2, "p": 0.2}]}],
                  stream="chance")
    assert [(r.source, r.probability) for r in rows] == [("history", 0.1), ("history", 0.2)]


def test_outpoll_trades_once_per_id():
    """Activity / last-trades prints become trades; a repeated id is dropped."""
    t = {"t": "TRADE", "e": "ev", "o": "y", "d": {"id": "t1", "p": 0.61, "q": 25, "s": "BUY", "ts": 1712160300}}
    rows, _ = dec(outpoll, [t, t], stream="last_trades")
    (r,) = rows
    assert isinstance(r, Trade) and (r.trade_id, r.price, r.size, r.side, r.notional) == ("t1", 0.61, 25.0, "BUY", 0.61 * 25)


def test_outpoll_private_streams():
    """Order updates, TP/SL, balance snapshot and bare balance deltas become account rows."""
    rows, _ = dec(outpoll, [
        {"t": "ORDER_UPDATE", "d": {"i": "o1", "u": "u", "s": "SUCCESS"}},
        {"t": "TPSL_UPDATE", "d": {"i": "o2", "u": "u", "a": "x", "q": 100, "tpp": 0.95, "slp": 0.1, "s": "ACTIVE"}},
    ], stream="orders")
    assert [(r.kind, r.order_id, r.status) for r in rows] == [("ORDER_UPDATE", "o1", "SUCCESS"), ("TPSL_UPDATE", "o2", "ACTIVE")]
    rows, _ = dec(outpoll, [
        {"t": "success", "d": {"l": [{"i": "USD", "b": 1250.5, "f": 1200.0}]}, "r": None},
        {"u": "u", "a": "USD", "aop": 0.5, "c": 50.0, "b": 1200.5, "f": 1150.0},
    ], stream="balances")
    assert [r.kind for r in rows] == ["balance_snapshot", "balance_delta"]
    assert all(isinstance(r, Account) and json.loads(r.payload) for r in rows)


def test_outpoll_unknown_types():
    """Unknown types on public streams are rejects; on private streams they are kept as account rows."""
    with pytest.raises(UnknownMessage, match="unknown message type t='NEW_THING'"):
        dec(outpoll, [{"t": "NEW_THING", "e": "x"}], stream="order_book", events=("x",))
    rows, _ = dec(outpoll, [{"t": "ORDER_FILLED", "d": {"i": "o9"}}], stream="order_feed")
    assert rows[0].kind == "ORDER_FILLED"


def test_outpoll_signature_matches_an_independent_computation():
    """HMAC-SHA256 over timestamp+GET+path with the base64url secret (re-padded), base64url unpadded."""
    raw_secret = b"\x01\x02secret-bytes\xff"
    secret = base64.urlsafe_b64encode(raw_secret).decode().rstrip("=")  # arrives without padding
    want = base64.urlsafe_b64encode(hmac.new(raw_secret, b"1712160300GET/order/ws", hashlib.sha256).digest())
    assert outpoll.signature(secret, "1712160300", "/order/ws") == want.decode().rstrip("=")
    frame = json.loads(outpoll.auth_frame("op_k_1", secret, 1712160300.7, "/balance/ws"))
    assert frame["d"]["timestamp"] == "1712160300" and frame["t"] == "AUTH"


def test_outpoll_protocol_auth_then_fatal_on_rejection():
    """Private streams send AUTH first; a credentials error is fatal (back off, no retry storm)."""
    spec = outpoll.FeedSpec(stream="orders")
    p = outpoll.make_protocol(spec, (Secret(env="K", value="op_k"), Secret(env="S", value="c2VjcmV0")), "wss://h/order/ws")
    frames, subscribed = p.on_open(1712160300)
    assert json.loads(frames[0])["t"] == "AUTH" and not subscribed
    assert p.on_frame('{"t":"error","d":{"error":"Invalid or missing credentials"}}').fatal
    p2 = outpoll.make_protocol(spec, (Secret(env="K", value="op_k"), Secret(env="S", value="c2VjcmV0")), "wss://h/order/ws")
    assert p2.on_frame('{"t":"SUCCESS","d":{"message":"AUTH successful"},"r":null}').subscribed


def test_outpoll_protocol_calls_a_run_quiet_only_when_no_frame_needs_the_control_side():
    """quiet(run) lets the feed skip on_frame for a whole run: never before the subscription is
    confirmed, never when a frame of the run is an error reply (even in the middle of a run)."""
    spec = outpoll.FeedSpec(stream="chance", chance_subs=(("ev", ("y",)),))
    p = outpoll.make_protocol(spec, (), "wss://h/chance/ws")
    point = '{"t":"UPDATE_HISTORY","e":"ev","o":["y"],"d":{"t":1,"p":0.5}}'
    error = '{"t":"error","d":{"error":"unknown event"}}'
    assert not p.quiet([point])  # not subscribed yet: the first data frame must reach on_frame
    assert p.on_frame(point).subscribed
    runs = [[point] * 3, [point, error, point], [error], ['{"t":"PING"}', point]]
    for run in runs:
        controls = [p.on_frame(t) for t in run]
        if p.quiet(run):
            assert all(c is NOTHING for c in controls), run
    assert not p.quiet([point, error, point]) and p.quiet([point] * 3)
    assert intots.make_protocol(intots.FeedSpec(stream="trades", event_id="1", symbol="S"), (), "wss://x").quiet([point])


# --- InTots ----------------------------------------------------------------------------------

TRADE = {"amount": 50000, "name": "alice", "token": "Yes", "event": "Will ETH hit $5k?", "market": "mkt_001", "avatar": "x"}


def test_intots_trade_amount_in_cents():
    """amount is integer cents: notional is dollars, notional_minor keeps the integer."""
    rows, _ = dec(intots, [{"type": "trade", "trade": TRADE}], stream="trades")
    (r,) = rows
    assert (r.notional, r.notional_minor, r.trader, r.outcome, r.ts_event, r.market) == (500.0, 50000, "alice", "Yes", None, "mkt_001")


def test_intots_history_after_reconnect_is_not_recorded_twice():
    """The init replay drops the trades already recorded (by content), keeps the ones missed."""
    other = {**TRADE, "amount": 100}
    missed = {**TRADE, "name": "bob"}
    rows, d = dec(intots, [{"type": "init", "trades": [TRADE]}, {"type": "trade", "trade": other},
                           {"type": "initial", "trades": [TRADE, other, missed]}], stream="trades")
    assert [(r.trader, r.notional_minor, r.source) for r in rows] == [
        ("alice", 50000, "history"), ("alice", 100, "live"), ("bob", 50000, "history")]
    # the state survives a restart
    d2 = intots.make_decoder(d.spec)
    d2.restore(json.loads(json.dumps(d.state())))
    assert d2.decode(json.dumps({"type": "init", "trades": [TRADE, other, missed]}), meta("intots")) == []


def test_intots_identical_trades_are_counted_not_collapsed():
    """Two identical live trades stay two; a replay holding both adds nothing."""
    rows, _ = dec(intots, [{"type": "trade", "trade": TRADE}, {"type": "trade", "trade": TRADE},
                           {"type": "init", "trades": [TRADE, TRADE, TRADE]}], stream="trades")
    assert len(rows) == 3


def test_intots_chart_all_three_forms():
    """Seed dict form (0..10000), list-of-points form (0..1) and flat list (receive time) all decode."""
    rows, _ = dec(intots, [
        {"type": "chart_update", "timestamp": "2026-03-15T14:30:05Z", "ratios": {"Yes": 6450, "No": 3550}},
        {"type": "init", "event_id": 42, "ratios": [{"timestamp": "2026-03-15T14:29:00Z", "values": [0.65, 0.35]}]},
        {"type": "chart_update", "ratios": [0.66, 0.34]},
    ], stream="chart", event_id="42")
    assert [(r.outcome, r.probability, r.source, r.ts_event is None) for r in rows] == [
        ("Yes", 0.645, "live", False), ("No", 0.355, "live", False), ("Yes", 0.65, "history", False),
        ("No", 0.35, "history", False), ("Yes", 0.66, "live", True), ("No", 0.34, "live", True)]
    assert {r.market for r in rows} == {"42"}


def test_intots_chart_one_outcome_one_name_in_every_form():
    """A point sent live in the seed form and again as history in a value list is recorded once, under
    one name; a ratio key in another case is the same outcome; configured names replace Yes/No."""
    at = "2026-03-15T14:30:05Z"
    rows, _ = dec(intots, [
        {"type": "chart_update", "timestamp": at, "ratios": {"YES": 6450, "no": 3550}},
        {"type": "init", "event_id": 42, "ratios": [{"timestamp": at, "values": [0.645, 0.355]}]},
    ], stream="chart", event_id="42")
    assert [(r.outcome, r.probability) for r in rows] == [("Yes", 0.645), ("No", 0.355)]
    rows, _ = dec(intots, [{"type": "chart_update", "ratios": [0.2, 0.3, 0.5]}], stream="chart", event_id="42",
                  outcomes=("Low", "Mid", "High"))
    assert [(r.outcome, r.probability) for r in rows] == [("Low", 0.2), ("Mid", 0.3), ("High", 0.5)]


def test_intots_value_list_longer_than_the_outcomes_is_rejected():
    """Three values for the two default outcomes: a reject naming the fix, never a guessed name."""
    d = intots.make_decoder(intots.FeedSpec(stream="chart", event_id="42"))
    with pytest.raises(DecodeError, match="3 values for 2 known outcomes.*outcomes option"):
        d.decode(json.dumps({"type": "chart_update", "ratios": [0.2, 0.3, 0.5]}), meta("intots"))


def test_intots_price_scale():
    """Asset prices are scaled per feed (cents by default)."""
    rows, _ = dec(intots, [{"type": "price_update", "symbol": "BTCUSDT", "price": 8734521}], stream="asset_price",
                  symbol="BTCUSDT")
    assert rows[0].price == pytest.approx(87345.21) and isinstance(rows[0], Price)
    rows, _ = dec(intots, [{"type": "price_update", "symbol": "BTCUSDT", "price": 87345.21}], stream="asset_price",
                  symbol="BTCUSDT", price_scale=1.0)
    assert rows[0].price == 87345.21


# --- predict.fun ----------------------------------------------------------------------------

BOOK = {"marketId": 123, "updateTimestampMs": 1778974347572.0, "asks": [[0.62, 1500], [0.63, 800]],
        "bids": [[0.61, 2000], [0.6, 1200]], "version": 1, "orderCount": 20,
        "lastOrderSettled": {"id": "198198432", "kind": "LIMIT", "marketId": 123, "outcome": "No", "price": "0.80", "side": "Bid"},
        "settlementsPending": {"asks": [], "bids": []}}


def test_predictfun_book_and_settlement_once():
    """The whole book replaces; lastOrderSettled is one trade per id; a duplicate push adds nothing."""
    push = {"type": "M", "topic": "predictOrderbook/123", "data": BOOK}
    rows, _ = dec(predictfun, [push, push], topics=("predictOrderbook/123",))
    book, trade = rows
    assert book.bids == ((0.61, 2000.0), (0.6, 1200.0)) and book.best_ask == 0.62 and book.depth == 4
    assert book.ts_event == 1778974347572_000 and book.market == "123" and book.outcome == "Yes"
    assert (trade.trade_id, trade.price, trade.outcome, trade.side) == ("198198432", 0.8, "No", "Bid")
    newer = {**BOOK, "updateTimestampMs": 1778974347999, "bids": [[0.61, 100]]}
    rows, _ = dec(predictfun, [push, {"type": "M", "topic": "predictOrderbook/123", "data": newer}],
                  topics=("predictOrderbook/123",))
    assert [type(r).__name__ for r in rows] == ["Book", "Trade", "Book"]  # same settlement: no second trade


def test_yes_and_no_are_one_name_whatever_the_case():
    """A settled order's outcome "YES" (the spelling of predict.fun's wallet events) and an InTots token
    "yes" are recorded as Yes, the name the book and chance rows use; other names stay as sent."""
    settled = {**BOOK["lastOrderSettled"], "outcome": "YES"}
    rows, _ = dec(predictfun, [{"type": "M", "topic": "predictOrderbook/123", "data": {**BOOK, "lastOrderSettled": settled}}],
                  topics=("predictOrderbook/123",))
    assert [r.outcome for r in rows] == ["Yes", "Yes"]
    rows, _ = dec(intots, [{"type": "trade", "trade": {**TRADE, "token": "yes"}},
                           {"type": "trade", "trade": {**TRADE, "token": "NO"}},
                           {"type": "trade", "trade": {**TRADE, "token": "Maybe"}}], stream="trades")
    assert [r.outcome for r in rows] == ["Yes", "No", "Maybe"]


def test_predictfun_chances_prices_wallet():
    """Relayed chances scale to 0..1 with their origin; prices and wallet events (type or eventType)."""
    rows, _ = dec(predictfun, [
        {"type": "M", "topic": "polymarketChance/7", "data": {"percentage": 64.5, "timestamp": 1736696400000}},
        {"type": "M", "topic": "kalshiChance/7", "data": {"percentage": 12, "timestamp": 1736696400000}},
        {"type": "M", "topic": "assetPriceUpdate/1", "data": {"price": 84532.17, "publishTime": 1736696400, "timestamp": 1736696400123}},
        {"type": "M", "topic": "predictWalletEvents/***", "data": {"eventType": "orderAccepted", "orderId": "123",
                                                                   "timestamp": 1736696400000, "details": {"marketId": 42}}},
        {"type": "M", "topic": "heartbeat", "data": 1736696400000},
        {"type": "R", "requestId": 1, "success": True, "data": None},
    ], topics=("polymarketChance/7",))
    assert [(type(r).__name__, getattr(r, "origin", None)) for r in rows] == [
        ("Chance", "polymarket"), ("Chance", "kalshi"), ("Price", None), ("Account", None)]
    assert rows[0].probability == 0.645 and rows[1].probability == 0.12
    assert rows[2].ts_event == 1736696400123_000 and rows[2].symbol == "1"
    assert (rows[3].kind, rows[3].order_id, rows[3].market, rows[3].stream) == ("orderAccepted", "123", "42", "wallet")


def test_predictfun_protocol_heartbeat_echo_and_notice():
    """Heartbeats are echoed unchanged; the reconnect notice and credential errors are signalled."""
    spec = predictfun.FeedSpec(topics=("kalshiChance/1", "predictWalletEvents"), jwt_env="J")
    p = predictfun.make_protocol(spec, (Secret(env="J", value="eyJ.secret.jwt"),), "wss://x/ws")
    frames, _ = p.on_open(0)
    assert json.loads(frames[1])["params"] == ["predictWalletEvents/eyJ.secret.jwt"]
    (echo,) = p.on_frame('{"type":"M","topic":"heartbeat","data":1736696400000}').send
    assert json.loads(echo) == {"method": "heartbeat", "data": 1736696400000}
    notice = '{"type":"M","topic":"system","data":{"event":"reconnect","reason":"server_shutdown","graceMs":7431}}'
    assert "server_shutdown" in p.on_frame(notice).reconnect
    fatal = p.on_frame('{"type":"R","requestId":2,"success":false,"error":{"code":"invalid_credentials","message":"x"}}').fatal
    assert fatal and "eyJ.secret.jwt" not in fatal
    assert p.on_frame('{"type":"R","requestId":1,"success":true,"data":null}').subscribed


@pytest.mark.parametrize("module, spec, text, message", [
    (outpoll, dict(stream="chance"), '{"t":"UPDATE_HISTORY","e":"x","o":["y"],"d":{"t":1,"p":1.5}}', "d.p must be a probability"),
    (outpoll, dict(stream="chance"), "{not json", "not JSON"),
    (intots, dict(stream="trades"), '{"type":"trade","trade":{"amount":"lots","market":"m"}}', "trade.amount must be an integer"),
    (predictfun, dict(topics=("x/1",)), '{"type":"M","topic":"predictOrderbook/1","data":{"bids":[[0.5]]}}', "must be \\[price, shares\\]"),
    (predictfun, dict(topics=("x/1",)), '[1,2]', "frame must be an object"),
    # a lone surrogate escape parses (json.loads) but no Arrow string can hold it: it crashed the flush
    (outpoll, dict(stream="chance"), '{"t":"UPDATE_HISTORY","e":"\\ud800","o":["y"],"d":{"t":1,"p":0.5}}', "lone surrogate"),
    (predictfun, dict(topics=("x/1",)), '{"type":"M","topic":"polymarketChance/1","data":{"m":"\\udfff"}}', "lone surrogate"),
])
def test_bad_frames_raise_decode_errors_quoting_the_problem(module, spec, text, message):
    """Malformed frames raise DecodeError naming the field and the bad value (they go to rejects)."""
    with pytest.raises(DecodeError, match=message):
        module.make_decoder(module.FeedSpec(**spec)).decode(text, meta(module.VENUE))


def test_dedupe_window_remembers_the_last_size_keys_and_forgets_older_ones():
    """Bounded(size) always knows the last `size` keys, never more than 2 x size, and what it saves
    in a checkpoint (the last `size`, oldest first) restores the same answers for those keys."""
    from recorder.venues.base import Bounded

    b = Bounded(100)
    for i in range(1000):
        assert b.add_new(i)
        assert all(k in b for k in range(max(0, i - 99), i + 1))
        assert sum(1 for k in range(i + 1) if k in b) <= 200
    assert not b.add_new(999) and 0 not in b
    saved = b.items()
    assert saved == list(range(900, 1000))
    restored = Bounded(100, saved)
    assert all(k in restored for k in saved) and not restored.add_new(950) and restored.add_new(1)


@pytest.mark.parametrize("module,frame,spec", [
    (outpoll, {"t": "UPDATE_HISTORY", "e": "ev", "o": ["y"], "d": {"t": 1e300, "p": 0.5}}, {"stream": "chance"}),
    (outpoll, '{"t":"UPDATE_HISTORY","e":"ev","o":["y"],"d":{"t":1' + "0" * 400 + ',"p":0.5}}', {"stream": "chance"}),
    (outpoll, {"t": "TRADE", "e": "ev", "o": "y", "d": {"id": "1", "p": 0.5, "q": 1, "ts": -1e200}}, {"stream": "last_trades"}),
    (predictfun, {"type": "M", "topic": "kalshiChance/1", "data": {"percentage": 50, "timestamp": 1e300}},
     {"topics": ("kalshiChance/1",)}),
    (intots, {"type": "trade", "trade": {"market": "m", "amount": 10**30}}, {"stream": "trades"}),
])
def test_numbers_beyond_the_columns_are_rejected_not_fatal(module, frame, spec):
    """A time or amount that cannot fit its int64 column is a DecodeError (the frame goes to
    rejects), never an exception that would stop the recorder or fail a flush (found by review:
    such a frame used to crash the pipeline, and again at every replay)."""
    d = module.make_decoder(module.FeedSpec(**spec))
    with pytest.raises(DecodeError, match="out of range"):
        d.decode(frame if isinstance(frame, str) else json.dumps(frame), meta(module.VENUE))


def test_point_window_reads_the_checkpoint_form_of_the_previous_version():
    """Checkpoints written before PointWindow held the points as a list of [market, outcome, t, p]:
    they still restore (an upgrade must not record the last points again)."""
    from recorder.venues.base import PointWindow

    w = PointWindow(10, [["ev", "y", 1.0, 0.5], ["ev", "n", 2.0, 0.25]])
    assert ("ev", "y", 1.0, 0.5) in w and not w.add_new(("ev", "n", 2.0, 0.25)) and w.add_new(("ev", "y", 3.0, 0.5))
    d = outpoll.make_decoder(outpoll.FeedSpec(stream="chance"))
    d.restore({"books": {}, "points": [["ev", "y", 1712160300.0, 0.3]], "trades": []})
    point = '{"t":"UPDATE_HISTORY","e":"ev","o":["y"],"d":{"t":1712160300,"p":0.3}}'
    assert d.decode(point, meta(outpoll.VENUE)) == []
