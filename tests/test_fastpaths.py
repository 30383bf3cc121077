"""Run-at-a-time fast paths (decode_run) against decoding frame by frame: for every venue and message
type that has one, whole runs of generated frames (well formed, malformed, repeated, in every JSON
spelling of their numbers) give exactly the same tables, counts, rejects and dedupe state."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.pipeline import Pipeline
from recorder.venues import intots, outpoll, predictfun
from recorder.writer import Buffers, Columns

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000")) // 4
TS = 1_760_000_000_000_000


def _rows(batch):  # timestamps as integers: datetime cannot hold every microsecond count a column can
    cols = [c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c for c in batch.columns]
    return zip(*(c.to_pylist() for c in cols))


def run_pipeline(tmp, make, runs: list[list[str]], *, by_runs: bool, venue: str):
    """Every run twice through a pipeline (the second time dedupe must drop the same rows), by
    decode_run or frame by frame; what the flush holds, the counts and the decoder's state."""
    p = Pipeline(tmp, tmp, lambda feed: make(), batch_rows=3)
    decoder = p._decoder("f")
    assert callable(getattr(decoder, "decode_run", None))
    if not by_runs:
        p._runners["f"] = None
    seq = 1
    for run in runs + runs:
        p._apply_frames("f", venue, "c", seq, TS + seq * 3_600_000_000, run)  # an hour apart: days change
        seq += len(run)
    rows_buffered = p.buffers.rows
    flush = p.buffers.cut()
    tables = {key: sorted((r for b in batches for r in _rows(b)), key=repr) for key, batches in flush.partitions.items()}
    schemas = {key: [b.schema for b in batches] for key, batches in flush.partitions.items()}
    stats = p.stats["f"]
    state = json.loads(json.dumps(decoder.state()))
    return tables, rows_buffered, flush.rows, (stats.frames, stats.rows, stats.rejects), state, schemas


def assert_same(tmp_factory, make, runs, venue):
    fast = run_pipeline(tmp_factory.mktemp("p"), make, runs, by_runs=True, venue=venue)
    slow = run_pipeline(tmp_factory.mktemp("p"), make, runs, by_runs=False, venue=venue)
    assert fast[:5] == slow[:5]
    assert repr(sorted(fast[0].items())) == repr(sorted(slow[0].items()))  # -0.0 is not 0.0 in a row
    for key, schemas in fast[5].items():  # what each path hands the writer has the table's schema
        assert all(s == schemas[0] for s in schemas + slow[5][key]), key


def spelled(values) -> st.SearchStrategy[str]:
    """A number in several JSON spellings (and, drawn from `values`, a few that are not numbers)."""
    def spell(v):
        if not isinstance(v, float):
            return st.just(json.dumps(v))
        forms = [repr(v), f"{v:.17g}", f"{v:e}"]
        if v.is_integer() and abs(v) < 1e20:
            forms.append(str(int(v)))
        return st.sampled_from(forms)
    return st.sampled_from(values).flatmap(spell)


# --- predict.fun: order books (with settlements) and relayed chances -------------------------

prices = st.one_of(spelled([0.5, 0.61, 0.6, 0.0, 1.0, 100.0, 1500.0, 0.30000000000000004, 1e308, -2.5,
                           12345678901234567890123.0, "0.5", True, None, 1.5, 5e-324]),
                   st.sampled_from(["-0", "-0.0", "0E0", "1E+2", "2.5e-3", "1e-400", "1.7976931348623159e308"]))
level = st.one_of(st.tuples(prices, prices, st.sampled_from(["", " ", "\n"])).map(lambda pq: f"[{pq[0]},{pq[2]}{pq[1]}]"),
                  st.sampled_from(["[0.5]", "[0.5,1,2]", '["0.5",1]', "[]", "null", "[1e400,1]", "0.5", '["|",1]',
                                   "[[0.5,1]]", "[ 0.5 , 1 ]"]))
levels = st.one_of(st.lists(level, max_size=4).map(lambda ls: "[" + ",".join(ls) + "]"),
                   st.sampled_from(["null", "[]", '"x"', "{}", "[5]", "[ ]", "[0.5,1]", "[[0.5,1],5]", "[[[0.5,1]]]",
                                    " [ [0.5,1] ] "]),
                   # more levels than levels.py's table of shapes holds
                   st.integers(60, 70).map(lambda k: "[" + ",".join(f"[{0.5 + i / 100},{i}]" for i in range(k)) + "]"))
ids = st.sampled_from(['"1001"', '"1002"', "1003", "123", '"123"', "null", "true", "1.5", "18446744073709551615",
                       "18446744073709551616", '"\\u00e9"'])
settled = st.one_of(
    st.builds(lambda i, m, o, s, p: "{" + ",".join(x for x in [f'"id":{i}', m, o, s, p, '"kind":"LIMIT"'] if x) + "}",
              ids, st.sampled_from(["", '"marketId":123', '"marketId":"m2"', '"marketId":null']),
              st.sampled_from(["", '"outcome":"No"', '"outcome":null', '"outcome":1']),
              st.sampled_from(["", '"side":"Bid"', '"side":null']),
              st.sampled_from(["", '"price":"0.80"', '"price":0.8', '"price":"abc"', '"price":"nan"', '"price":null',
                               '"price":"1e999"', '"price":true', '"price":1'])),
    st.sampled_from(["null", "{}", "[]", '"x"']))
book_data = st.builds(
    lambda m, t, b, a, s: "{" + ",".join(x for x in [m, t, f'"bids":{b}' if b else "", f'"asks":{a}' if a else "",
                                                      f'"lastOrderSettled":{s}' if s else "", '"version":1'] if x) + "}",
    st.sampled_from(["", '"marketId":123', '"marketId":"123"', '"marketId":"m7"', '"marketId":null',
                     '"marketId":1.0', '"marketId":true', '"marketId":"\\ud800"']),
    st.one_of(st.just(""), spelled([1736696400000.0, 1736696400000.5, 0.0, -1.0, 9.3e15, 1e300, "1", None])
              .map(lambda t: f'"updateTimestampMs":{t}')),
    st.one_of(st.just(""), levels), st.one_of(st.just(""), levels), st.one_of(st.just(""), settled))
chance_data = st.builds(
    lambda p, t: "{" + ",".join(x for x in [p, t] if x) + "}",
    st.one_of(spelled([64.5, 0.0, 100.0, 12.0, 100.5, -1.0, "50", None, True]).map(lambda p: f'"percentage":{p}'),
              st.just("")),
    st.one_of(st.just(""), spelled([1736696400000.0, 1736696400000.0007, 1e300, 9.3e15, None, "1"])
              .map(lambda t: f'"timestamp":{t}')))
pushes = st.one_of(
    st.builds(lambda m, d: f'{{"type":"M","topic":"predictOrderbook/{m}","data":{d}}}', st.sampled_from(["123", "m7"]),
              book_data),
    st.builds(lambda o, m, d: f'{{"type":"M","topic":"{o}/{m}","data":{d}}}',
              st.sampled_from(["polymarketChance", "kalshiChance"]), st.sampled_from(["7", "8"]), chance_data),
    st.sampled_from([
        '{"type":"M","topic":"heartbeat","data":1736696400000}', '{"type":"R","requestId":1,"success":true,"data":null}',
        '{"type":"M","topic":"assetPriceUpdate/1","data":{"price":84532.17,"timestamp":1736696400123}}',
        '{"type":"M","topic":"predictOrderbook/1"}', '{"type":"M","topic":"predictOrderbook/1","data":null}',
        '{"type":"M","topic":7,"data":{}}', '{"type":"X","topic":"predictOrderbook/1","data":{}}', "not json", "[1,2]",
        '{"type":"M","topic":"predictOrderbook/1","data":{"bids":[[0.5,1]]},"data":{"bids":[[0.4,1]]}}',
        '{"type":"M","topic":"predictOrderbook/1","data":{"bids":[[NaN,1]]}}',
        '{"type":"M","topic":"predictOrderbook/1","data":{"x":1e400,"bids":[[0.5,1]]}}',
        '{"type":"M","topic":"predictOrderbook/1","data":{"x":"\\ud800","bids":[[0.5,1]]}}',
        '{"type":"M","topic":"kalshiChance/1","data":{"percentage":50,"timestamp":1736696400000,"percentage":60}}',
        '{"type":"M","topic":"predictOrderbook/1","data":{"bids":[[0.5,1]]},"type":"R"}']))


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(st.lists(pushes, min_size=1, max_size=6), min_size=1, max_size=4))
def test_predictfun_run_decoder_equals_decoding_frame_by_frame(tmp_path_factory, compiled, runs):
    """predict.fun books, settlements and relayed chances: decode_run gives exactly the tables,
    counts, rejects and dedupe windows that decode() frame by frame gives, with the Python first
    pass (msgspec and levels.RunLevels) and with the compiled reader (recorder/_speedups.c)."""
    make = lambda: _every_run(predictfun.make_decoder(predictfun.FeedSpec(topics=("predictOrderbook/123",))),  # noqa: E731
                              compiled)
    assert_same(tmp_path_factory, make, runs, "predictfun")


def _every_run(decoder, compiled: bool = False):
    """The run-at-a-time path for runs of any length (short ones go frame by frame by default), by
    the compiled reader or the Python first pass."""
    decoder.small_run = 0
    if compiled:
        assert decoder.compiled, "recorder._speedups is not built (a C compiler and Python's headers are needed)"
    decoder.compiled = compiled
    return decoder


CONTROL_FRAMES = [
    '{"type":"M","topic":"heartbeat","data":1736696400000}', '{"type": "M", "topic": "heartbeat", "data": 1}',
    '{"type":"M","topic":"system","data":{"event":"reconnect","reason":"deploy"}}',
    '{"type":"R","requestId":1,"success":true,"data":null}', '{"type": "R", "requestId": 2, "success": false}',
    '{"type":"\\u0052","requestId":1,"success":true}', '{"type":"M","topic":"heart\\u0062eat","data":1}',
    '{"type":"R","requestId":1,"success":false,"error":{"code":"invalid_credentials"}}']


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.one_of(pushes, st.sampled_from(CONTROL_FRAMES)), min_size=1, max_size=8))
def test_predictfun_quiet_runs_need_no_control_side(texts):
    """Protocol.quiet(run) is True only when on_frame() would do nothing for every frame of it (the
    feed then skips on_frame for the run); runs of plain pushes are quiet."""
    protocol = predictfun.make_protocol(predictfun.FeedSpec(topics=("predictOrderbook/1",)), (), "ws://x")
    protocol.on_open(0.0)
    if protocol.quiet(texts):
        assert all(protocol.on_frame(t) is predictfun.NOTHING for t in texts)
    if not any(t in CONTROL_FRAMES for t in texts) and all("\\u" not in t for t in texts):
        assert protocol.quiet(texts) or any("heartbeat" in t or "system" in t or '"R"' in t for t in texts)
    assert not protocol.quiet(texts + [CONTROL_FRAMES[0]])


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.lists(st.one_of(pushes, st.sampled_from(CONTROL_FRAMES)), min_size=1, max_size=6), min_size=1,
                max_size=4))
def test_predictfun_data_only_runs_need_no_control_side(runs):
    """After decode_run, the decoder's `data_only` (the feed then skips the control side for the
    run) is True only when on_frame() would do nothing for every frame of that run, run after run;
    and a run of plain book pushes is data only."""
    from bench.sender import payloads
    from recorder.venues.base import FrameMeta

    protocol = predictfun.make_protocol(predictfun.FeedSpec(topics=("predictOrderbook/1",)), (), "ws://x")
    protocol.on_open(0.0)
    decoder = _every_run(predictfun.make_decoder(predictfun.FeedSpec(topics=("predictOrderbook/1",))), True)
    meta = FrameMeta(venue="predictfun", feed="f", conn_id="c", seq=1, ts_recv=TS)
    books = [p.decode() for p in payloads("books", 4)]
    chance = '{"type":"M","topic":"kalshiChance/7","data":{"percentage":64.5,"timestamp":1736696400000}}'
    mixed = [books[0], chance, books[1]]
    for texts in [books, *runs, mixed, books]:
        decoder.decode_run(texts, meta, Buffers(), lambda i: None)
        if decoder.data_only:
            assert all(protocol.on_frame(t) is predictfun.NOTHING for t in texts), texts
        if any(t in CONTROL_FRAMES for t in texts):
            assert not decoder.data_only
        if texts is books or texts is mixed:  # books the reader took, a relayed chance searched
            assert decoder.data_only


def test_short_predictfun_runs_go_frame_by_frame_and_long_ones_at_once():
    """Without the compiled reader, a run shorter than SMALL_RUN is decoded frame by frame (slow(i)
    for each, in order): reading a run's levels at once has a fixed cost a one-frame run would pay
    alone; a longer run is not. The compiled reader takes every run whole."""
    from bench.sender import payloads
    from recorder.venues.base import FrameMeta

    texts = [p.decode() for p in payloads("books", predictfun.SMALL_RUN)]
    for compiled in (False, True):
        for run, expect_slow in ((texts[:1], [0]), (texts[:-1], list(range(len(texts) - 1))), (texts, [])):
            decoder, slow = predictfun.make_decoder(predictfun.FeedSpec(topics=("predictOrderbook/123",))), []
            assert decoder.compiled, "recorder._speedups is not built"
            decoder.compiled = compiled
            meta = FrameMeta(venue="predictfun", feed="f", conn_id="c", seq=1, ts_recv=TS)
            decoder.decode_run(run, meta, Buffers(), slow.append)
            # The compiled reader has no such fixed cost: it takes runs of any length.
            assert slow == ([] if compiled else expect_slow)


# --- InTots trades -------------------------------------------------------------------------

trade_items = st.builds(
    lambda a, m, e, t, n: "{" + ",".join(x for x in [a, m, e, t, n, '"avatar":"x"'] if x) + "}",
    st.sampled_from(['"amount":50000', '"amount":100', '"amount":0', '"amount":-5', '"amount":50000.0',
                     '"amount":9223372036854775807', '"amount":-9223372036854775808', '"amount":18446744073709551615',
                     '"amount":"5"', '"amount":true', '"amount":null', '"amount":1e30', '"amount":0.5', ""]),
    st.sampled_from(['"market":"mkt_001"', '"market":"mkt_002"', '"market":7', '"market":null', '"market":"\\u00e9"', ""]),
    st.sampled_from(['"event":"Will ETH hit $5k?"', '"event":null', '"event":3', ""]),
    st.sampled_from(['"token":"Yes"', '"token":"No"', '"token":null', ""]),
    st.sampled_from(['"name":"alice"', '"name":"bob"', '"name":null', '"name":["x"]', ""]))
intots_frames = st.one_of(
    trade_items.map(lambda t: f'{{"type":"trade","trade":{t}}}'),
    st.lists(trade_items, max_size=4).map(lambda ts: f'{{"type":"init","trades":[{",".join(ts)}]}}'),
    st.lists(trade_items, max_size=3).map(lambda ts: f'{{"type":"initial","trades":[{",".join(ts)}]}}'),
    st.sampled_from(['{"type":"trade"}', '{"type":"trade","trade":null}', '{"type":"chart_update","ratios":[0.5]}',
                     '{"type":1}', "not json", "", '{"trade":{"amount":1,"market":"m"},"type":"trade","type":"init"}',
                     '{"type":"trade","trade":{"amount":1,"market":"m","name":"\\ud800"}}']))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(intots_frames, min_size=1, max_size=6), min_size=1, max_size=4))
def test_intots_trade_run_decoder_equals_decoding_frame_by_frame(tmp_path_factory, runs):
    """InTots live trades: decode_run gives exactly the tables, counts, rejects and the recent-trades
    window that decode() frame by frame gives; history replays after them are matched the same."""
    make = lambda: intots.make_decoder(intots.FeedSpec(stream="trades"))  # noqa: E731
    assert_same(tmp_path_factory, make, runs, "intots")


def test_intots_recent_trades_of_the_previous_checkpoint_form_still_match():
    """Checkpoints written before recent trades were tuples held their JSON text: a replay of
    those trades after an upgrade is still not recorded twice."""
    d = intots.make_decoder(intots.FeedSpec(stream="trades"))
    d.restore({"recent": ['["mkt_001","e","Yes",50000,"alice"]'], "points": []})
    trade = {"amount": 50000, "name": "alice", "token": "Yes", "event": "e", "market": "mkt_001"}
    from recorder.venues.base import FrameMeta

    meta = FrameMeta(venue="intots", feed="f", conn_id="c", seq=1, ts_recv=TS)
    assert d.decode(json.dumps({"type": "init", "trades": [trade, trade]}), meta)[0].trader == "alice"
    assert len(d.decode(json.dumps({"type": "init", "trades": [trade, trade]}), meta)) == 0


def test_level_columns_become_arrow_lists_of_price_size_structs():
    """Book levels added flat (counts and values per run) come out as the schema's
    list<struct<price, size>>, row by row, a copy (the live page's peek) holds the same rows, and a
    null ts_event puts its row in the partition of its receive time."""
    import numpy as np

    b = Buffers(batch_rows=100)
    cols = b.columns("book", "predictfun", (("feed", "f"), ("conn_id", "c"), ("outcome", "Yes"), ("last", None)),
                     "ts_event", nullable=("ts_event", "best_bid", "best_ask"))
    assert isinstance(cols, Columns)
    a_ts, a_recv, a_seq, a_m, a_bb, a_ba, a_depth = cols.appenders(
        "ts_event", "ts_recv", "seq", "market", "best_bid", "best_ask", "depth")
    rows = [(((0.5, 1.0), (0.4, 2.0)), ()), ((), ((0.6, 3.0),))]
    for i, (bids, asks) in enumerate(rows):
        a_ts(None if i else TS - 86_400_000_000)
        a_recv(TS)
        a_seq(i + 1)
        a_m("m")
        a_bb(bids[0][0] if bids else None)
        a_ba(asks[0][0] if asks else None)
        a_depth(len(bids) + len(asks))
    for name, side in (("bids", 0), ("asks", 1)):
        counts = np.array([len(r[side]) for r in rows], np.int32)
        cols.levels(name).extend(counts, np.array([x for r in rows for lv in r[side] for x in lv], np.float64))
    assert b.held_bytes >= 2 * 2 * 4 + 6 * 8  # the level arrays are counted
    with pytest.raises(ValueError, match="decoder bug"):
        cols.levels("bids").extend(np.array([1], np.int32), np.array([0.5], np.float64))
    assert cols.levels("bids")[0] == ((0.5, 1.0), (0.4, 2.0)) and cols.levels("asks")[1] == ((0.6, 3.0),)
    b.rows += 2
    peek = b.peek("book").to_table()
    assert peek.column("bids").to_pylist() == [[{"price": 0.5, "size": 1.0}, {"price": 0.4, "size": 2.0}], []]
    flush = b.cut()
    days = {key[2]: batches[0] for key, batches in flush.partitions.items()}
    assert sorted(days) == [TS // 86_400_000_000 - 1, TS // 86_400_000_000]
    first, second = days[TS // 86_400_000_000 - 1], days[TS // 86_400_000_000]
    assert first.column("bids").to_pylist() == [[{"price": 0.5, "size": 1.0}, {"price": 0.4, "size": 2.0}]]
    assert first.column("asks").to_pylist() == [[]]
    assert second.column("asks").to_pylist() == [[{"price": 0.6, "size": 3.0}]]
    assert second.column("best_bid").to_pylist() == [None] and second.column("depth").to_pylist() == [1]
    assert first.schema == second.schema == b._schemas["book"]


def test_well_formed_pushes_and_trades_take_the_fast_path():
    """The common frames (a book with a settlement, a relayed chance, a live trade, Outpoll book
    snapshots, deltas and trade prints, an asset price) never reach slow(): the property tests above compare something the fast
    path really did."""
    from bench.sender import payloads
    from recorder.venues.base import FrameMeta

    cases = [(predictfun.make_decoder(predictfun.FeedSpec(topics=("predictOrderbook/123",))), "predictfun",
              [p.decode() for p in payloads("book", 50)] + [
                  '{"type":"M","topic":"kalshiChance/7","data":{"percentage":12,"timestamp":1736696400000}}']),
             (intots.make_decoder(intots.FeedSpec(stream="trades")), "intots", [p.decode() for p in payloads("trades", 50)]),
             (outpoll.make_decoder(outpoll.FeedSpec(stream="order_book", events=("ev",))), "outpoll",
              ['{"t":"PRICES_DATA","e":"ev","d":[{"o":"y","c":0.55,"b":0.54,"a":0.56},{"o":"n","c":0.45,"b":0.44,"a":0.46}]}',
               '{"t":"PRICES_DATA_DELTA","e":"ev","d":[{"o":"y","b":0.53}]}']),
             (outpoll.make_decoder(outpoll.FeedSpec(stream="last_trades")), "outpoll",
              ['{"t":"TRADE","e":"ev","o":"y","d":{"id":"t1","p":0.61,"q":25,"s":"BUY","ts":1712160300}}']),
             (intots.make_decoder(intots.FeedSpec(stream="asset_price", symbol="BTCUSDT")), "intots",
              ['{"type":"price_update","symbol":"BTCUSDT","price":8734521}']),
             (intots.make_decoder(intots.FeedSpec(stream="chart", event_id="42")), "intots",  # the simulator's forms
              ['{"type":"chart_update","timestamp":"2026-03-15T14:30:05Z","ratios":{"Yes":6450,"No":3550}}',
               '{"type":"chart_update","event_id":42,"ratios":[{"timestamp":"2026-03-15T14:30:06.250000Z",'
               '"values":[0.65,0.35]}]}', '{"type":"chart_update","ratios":[0.66,0.34]}'])]
    for decoder, venue, texts in cases:
        b, slow = Buffers(), []
        meta = FrameMeta(venue=venue, feed="f", conn_id="c", seq=1, ts_recv=TS)
        assert decoder.decode_run(texts, meta, b, slow.append) >= len(texts) and slow == []


# --- InTots chart points: the seed form, the long-docs list and the flat list ---------------------

chart_numbers = st.one_of(spelled([0.65, 0.35, 0.0, 1.0, 0.5, 6450.0, 3550.0, 10000.0, 10001.0, -0.1, 1e308,
                                   0.30000000000000004, "0.5", True, None]),
                          st.sampled_from(["1e400", "[]", "{}"]))
stamps = st.sampled_from(['"2026-03-15T14:30:05Z"', '"2026-03-15T14:30:05.123456Z"', '"2026-03-15T14:30:05+02:00"',
                          '"2026-03-15T14:30:05"', '"2026-03-15 14:30:06.5Z"', '"yesterday"', "1712160300", "null"])
ratio_keys = st.sampled_from(["Yes", "No", "YES", "no", "Maybe", "\u00e9"])
value_lists = st.lists(chart_numbers, max_size=3).map(lambda vs: "[" + ",".join(vs) + "]")
chart_points = st.builds(lambda t, v: "{" + ",".join(x for x in [t, v] if x) + "}",
                         st.one_of(st.just(""), stamps.map(lambda t: f'"timestamp":{t}')),
                         st.one_of(value_lists.map(lambda v: f'"values":{v}'), st.just(""), st.just('"values":null')))
ratios = st.one_of(
    st.lists(st.tuples(ratio_keys, chart_numbers), max_size=3).map(
        lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}"),  # the seed form (keys may repeat)
    st.lists(chart_points, min_size=1, max_size=3).map(lambda ps: "[" + ",".join(ps) + "]"),
    value_lists, st.sampled_from(["null", '"x"', "5", '[{"values":[0.5]},0.5]', '[0.5,{"values":[0.5]}]']))
chart_frames = st.one_of(
    st.builds(lambda k, e, t, r: "{" + ",".join(x for x in [f'"type":"{k}"', e, t, f'"ratios":{r}' if r else ""] if x) + "}",
              st.sampled_from(["chart_update", "chart_update", "chart_update", "init", "initial"]),
              st.sampled_from(["", '"event_id":42', '"event_id":"42"', '"event_id":"ev-9"', '"event_id":null',
                               '"event_id":18446744073709551616', '"event_id":1.5']),
              st.one_of(st.just(""), stamps.map(lambda t: f'"timestamp":{t}')), st.one_of(ratios, st.just(""))),
    st.sampled_from(['{"type":"chart_update","ratios":[0.6,0.4],"type":"init"}', "not json", '{"type":"trade"}',
                     '{"type":"chart_update","timestamp":"2026-03-15T14:30:05Z","ratios":{"Yes":6450},'
                     '"timestamp":"2026-03-15T14:30:06Z"}']))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(chart_frames, min_size=1, max_size=6), min_size=1, max_size=4), st.booleans())
def test_intots_chart_run_decoder_equals_decoding_frame_by_frame(tmp_path_factory, runs, three):
    """InTots chart updates in every form: decode_run gives exactly the tables, counts, rejects and
    points window that decode() frame by frame gives (history after them deduplicated the same)."""
    outcomes = ("Yes", "No", "Maybe") if three else intots.DEFAULT_OUTCOMES
    make = lambda: intots.make_decoder(intots.FeedSpec(stream="chart", event_id="42", outcomes=outcomes))  # noqa: E731
    assert_same(tmp_path_factory, make, runs, "intots")


# --- Outpoll order books: snapshots and deltas merged into per-outcome state --------------------

price_values = st.one_of(spelled([0.55, 0.5, 0.0, 1.0, 0.30000000000000004, 1e308]),
                         st.sampled_from(["null", '"0.5"', "true", "1e400", "[]"]))
price_items = st.builds(
    lambda o, c, b, a: "{" + ",".join(x for x in [o, c, b, a] if x) + "}",
    st.sampled_from(['"o":"y"', '"o":"n"', '"o":7', '"o":null', '"o":18446744073709551616', '"o":"\\u00e9"', ""]),
    st.one_of(st.just(""), price_values.map(lambda v: f'"c":{v}')),
    st.one_of(st.just(""), price_values.map(lambda v: f'"b":{v}')),
    st.one_of(st.just(""), price_values.map(lambda v: f'"a":{v}')))
outpoll_books = st.one_of(
    st.builds(lambda t, e, items: f'{{"t":"{t}","e":{e},"d":[{",".join(items)}]}}',
              st.sampled_from(["PRICES_DATA", "PRICES_DATA_DELTA"]), st.sampled_from(['"ev"', '"ev2"', "5", "null"]),
              st.lists(price_items, max_size=3)),
    st.sampled_from(['{"t":"PING"}', '{"t":"SUBSCRIBED","e":"ev"}', "not json", '{"t":"PRICES_DATA","e":"ev"}',
                     '{"t":"PRICES_DATA","e":"ev","d":{}}', '{"t":"prices_data","e":"ev","d":[{"o":"y","b":0.4}]}',
                     '{"t":"PRICES_DATA_DELTA","e":"ev","d":[{"o":"y","b":0.4}],"t":"PRICES_DATA"}',
                     '{"t":"PRICES_DATA_DELTA","e":"ev","d":[{"o":"y","b":NaN}]}']))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(outpoll_books, min_size=1, max_size=6), min_size=1, max_size=4))
def test_outpoll_book_run_decoder_equals_decoding_frame_by_frame(tmp_path_factory, runs):
    """Outpoll order-book snapshots and deltas: decode_run gives exactly the tables, counts, rejects
    and per-outcome book state that decode() frame by frame gives."""
    make = lambda: outpoll.make_decoder(outpoll.FeedSpec(stream="order_book", events=("ev",)))  # noqa: E731
    assert_same(tmp_path_factory, make, runs, "outpoll")


# --- Outpoll trade prints (activity, last trades) and InTots asset prices ----------------------

trade_prints = st.builds(
    lambda e, o, i, p, q, s, ts: '{"t":"TRADE",' + ",".join(x for x in [e, o, '"d":{' + ",".join(
        x for x in [i, p, q, s, ts] if x) + "}"] if x) + "}",
    st.sampled_from(['"e":"ev"', '"e":5', '"e":null', '"e":18446744073709551616', ""]),
    st.sampled_from(['"o":"y"', '"o":["y"]', '"o":[]', '"o":[7,"x"]', '"o":null', '"o":{}', '"o":[{}]', ""]),
    st.sampled_from(['"id":"t1"', '"id":"t2"', '"id":3', '"id":null', '"id":1.5', '"id":18446744073709551616', ""]),
    st.one_of(st.just(""), price_values.map(lambda v: f'"p":{v}')),
    st.one_of(st.just(""), price_values.map(lambda v: f'"q":{v}')),
    st.sampled_from(['"s":"BUY"', '"s":null', '"s":1', ""]),
    st.one_of(st.just(""), spelled([1712160300.0, 1712160300.5, 0.0, -1e200, 9.3e12, 9.3e15, None, "1"])
              .map(lambda t: f'"ts":{t}')))
outpoll_trades = st.one_of(trade_prints, st.sampled_from(
    ['{"t":"PING"}', '{"t":"SUBSCRIBED","e":"ev"}', "not json", '{"t":"TRADE","e":"ev"}', '{"t":"trade","e":"ev","d":{}}']))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(outpoll_trades, min_size=1, max_size=6), min_size=1, max_size=4))
def test_outpoll_trade_run_decoder_equals_decoding_frame_by_frame(tmp_path_factory, runs):
    """Outpoll trade prints: decode_run gives exactly the tables, counts, rejects and trade-id window
    that decode() frame by frame gives."""
    make = lambda: outpoll.make_decoder(outpoll.FeedSpec(stream="last_trades"))  # noqa: E731
    assert_same(tmp_path_factory, make, runs, "outpoll")


price_updates = st.one_of(
    st.builds(lambda p, s: '{"type":"price_update",' + ",".join(x for x in [p, s] if x) + "}",
              st.one_of(st.just(""), price_values.map(lambda v: f'"price":{v}')),
              st.sampled_from(['"symbol":"BTCUSDT"', '"symbol":"ETHUSDT"', '"symbol":null', '"symbol":7', ""])),
    st.sampled_from(['{"type":"trade","trade":{}}', "not json", '{"type":"price_update"}']))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(price_updates, min_size=1, max_size=6), min_size=1, max_size=4))
def test_intots_price_run_decoder_equals_decoding_frame_by_frame(tmp_path_factory, runs):
    """InTots asset prices: decode_run gives exactly the tables, counts and rejects decode() gives."""
    make = lambda: intots.make_decoder(intots.FeedSpec(stream="asset_price", symbol="BTCUSDT"))  # noqa: E731
    assert_same(tmp_path_factory, make, runs, "intots")


# --- The transport's own frame reader against websockets' parser --------------------------------

def _server_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = False) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([m | 127]) + n.to_bytes(8, "big")
    return head + (b"\0\0\0\0" if mask else b"") + payload


ws_frames = st.sampled_from([
    _server_frame(1, b'{"t":"UPDATE_HISTORY","e":"ev"}'), _server_frame(1, "é€😀".encode()), _server_frame(1, b""),
    _server_frame(1, b"x" * 200), _server_frame(1, b"y" * 70_000), _server_frame(1, b"z" * 2000),  # 2000 > limit
    _server_frame(2, b"\x00\x01"), _server_frame(9, b"ping"), _server_frame(10, b"pong"),
    _server_frame(1, b"frag-", fin=False), _server_frame(0, b"ment", fin=False), _server_frame(0, b"-end"),
    _server_frame(1, b"\xff\xfe"), _server_frame(1, b"rsv", rsv=0x40), _server_frame(1, b"masked", mask=True),
    _server_frame(3, b"bad opcode"), _server_frame(8, (1000).to_bytes(2, "big") + b"bye")])


@pytest.mark.parametrize("reader", ["python", "compiled"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ws_frames, max_size=12), st.lists(st.integers(1, 400), max_size=20))
def test_transport_reader_equals_the_protocol_parsing_every_frame(reader, frames, cuts):
    """Whatever the server sends (text, fragments, control frames, binary, oversized, bad UTF-8,
    reserved bits, masking, a close), cut into reads anywhere: the transport's own reader gives
    the same messages, replies, close and end state as websockets' parser given every byte, with
    its Python loop alone and with the compiled cutter of plain text frames (_speedups.c)."""
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    from recorder.transport import sansio
    from recorder.transport.sansio import SansIOConnection

    if reader == "compiled":
        assert sansio.cut_text_frames is not None, "recorder._speedups is not built"
    data = b"".join(frames)
    chunks, at = [], 0
    for c in cuts:
        chunks.append(data[at : at + c])
        at += c
    chunks.append(data[at:])

    def run(fast: bool):
        proto = ClientProtocol(parse_uri("ws://127.0.0.1:1/ws"), state=State.OPEN, max_size=1000)
        conn = SansIOConnection(None, proto, 1000)
        conn.own_reader = fast
        conn._cut = sansio.cut_text_frames if reader == "compiled" else None
        for chunk in chunks:
            if chunk:
                conn._receive(chunk)
        if conn._pending:
            proto.receive_data(conn._pending)
        proto.receive_eof()
        conn._take_events()
        return list(conn._messages), _unmasked(b"".join(proto.data_to_send())), proto.state, proto.close_code, conn._fragments

    assert run(True) == run(False)


def _unmasked(data: bytes) -> list[tuple[int, bytes]]:
    """The client's frames (pongs, close) as (first byte, payload): their masks are random."""
    out, i = [], 0
    while i < len(data):
        n, h = data[i + 1] & 0x7F, 2
        if n >= 126:
            h = 4 if n == 126 else 10
            n = int.from_bytes(data[i + 2 : i + h], "big")
        mask = data[i + h : i + h + 4]
        payload = bytes(b ^ mask[k % 4] for k, b in enumerate(data[i + h + 4 : i + h + 4 + n]))
        out.append((data[i], payload))
        i += h + 4 + n
    return out


def test_a_frame_nested_deeper_than_msgspec_recurses_is_decoded_as_frame_by_frame(tmp_path_factory):
    """msgspec raises RecursionError (not a ValueError) on a frame nested ~1,000 deep: every run
    decoder sends such a frame the checked way, which reads it (orjson goes to 1,024) or rejects it,
    and the run goes on."""
    deep = "[" * 1000 + "]" * 1000
    cases = {
        "predictfun": (lambda: _every_run(predictfun.make_decoder(predictfun.FeedSpec(topics=("predictOrderbook/1",)))),
                       ['{"type":"M","topic":"predictOrderbook/1","data":{"bids":[[0.5,1]],"x":' + deep + '}}',
                        '{"type":"M","topic":"kalshiChance/1","data":{"percentage":5,"x":' + deep + '}}']),
        "outpoll": (lambda: outpoll.make_decoder(outpoll.FeedSpec(stream="chance", chance_subs=(("evt-1", ("evt-1-yes",)),))),
                    ['{"t":"UPDATE_HISTORY","e":"evt-1","o":["evt-1-yes"],"d":{"t":1712160300,"p":0.5},"x":' + deep + '}']),
        "outpoll ": (lambda: outpoll.make_decoder(outpoll.FeedSpec(stream="order_book", events=("ev",))),
                     ['{"t":"BOOK","e":"ev","x":' + deep + '}']),
        "intots": (lambda: intots.make_decoder(intots.FeedSpec(stream="trades")),
                   ['{"type":"trade","trade":{"amount":5,"market":"m","x":' + deep + '}}']),
        "intots ": (lambda: intots.make_decoder(intots.FeedSpec(stream="chart", event_id="e1")),
                    ['{"type":"chart_update","ratios":[0.5,0.5],"x":' + deep + '}']),
    }
    for venue, (make, texts) in cases.items():
        assert_same(tmp_path_factory, make, [texts + texts], venue.strip())
