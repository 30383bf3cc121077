"""Property tests: any JSON (and valid envelopes with wrong field types) into every decoder gives
records or a DecodeError, never another exception."""

from __future__ import annotations

import json
import os

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.errors import DecodeError
from recorder.records import RECORD_TYPES, from_row
from recorder.writer import Buffers
from recorder.venues import intots, outpoll, predictfun
from recorder.venues import base
from recorder.venues.base import FrameMeta

META = FrameMeta(venue="v", feed="f", conn_id="c", seq=1, ts_recv=1_760_000_000_000_000)
scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                           max_leaves=20)
DECODERS = [
    *(outpoll.make_decoder(outpoll.FeedSpec(stream=s)) for s in outpoll.DEFAULT_URLS),
    *(intots.make_decoder(intots.FeedSpec(stream=s, event_id="1", symbol="S")) for s in intots.STREAMS),
    predictfun.make_decoder(predictfun.FeedSpec(topics=("kalshiChance/1",))),
]
TYPES = ["PRICES_DATA", "PRICES_DATA_DELTA", "probability", "UPDATE_HISTORY", "HISTORY", "TRADE", "ORDER_UPDATE",
         "TPSL_UPDATE", "success", "trade", "init", "initial", "chart_update", "price_update", "M", "R"]
TOPICS = ["predictOrderbook/1", "polymarketChance/1", "kalshiChance/1", "assetPriceUpdate/1", "predictWalletEvents/***",
          "heartbeat", "system"]
KEYS = ["e", "o", "d", "t", "p", "q", "id", "ts", "b", "a", "c", "l", "i", "s", "trade", "trades", "amount", "market",
        "ratios", "timestamp", "values", "event_id", "price", "symbol", "data", "topic", "marketId", "bids", "asks",
        "updateTimestampMs", "lastOrderSettled", "percentage", "orderId", "details", "type", "eventType", "token"]
# Field values: wrong types at every level, kept shallow so thousands of examples stay fast.
fields = scalars | st.lists(scalars | st.lists(scalars, max_size=3), max_size=3) | st.dictionaries(
    st.sampled_from(KEYS), scalars | st.lists(scalars | st.lists(scalars, max_size=2), max_size=3), max_size=4)
envelopes = st.fixed_dictionaries(
    {"t": st.sampled_from(TYPES), "type": st.sampled_from(TYPES), "topic": st.sampled_from(TOPICS)},
    optional={k: fields for k in KEYS if k not in ("t", "type", "topic")})
# `make soak` sets FUZZ_EXAMPLES higher.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))


def check(text: str) -> None:
    for d in DECODERS:
        try:
            records = d.decode(text, META)
        except DecodeError:
            continue
        assert isinstance(records, list)
        if records:  # whatever a decoder accepts must convert into its table's Arrow schema
            buffers = Buffers()
            for r in records:
                if type(r) is tuple:
                    assert from_row(r).table in RECORD_TYPES  # a row stands for a well-formed record
                    buffers.add_row(*r)
                else:
                    buffers.add(r)
            buffers.cut()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_is_records_or_a_reject(value):
    """Arbitrary JSON never raises anything but DecodeError."""
    check(json.dumps(value))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes)
def test_valid_envelopes_with_wrong_field_types(value):
    """Known message types with fields of any type never raise anything but DecodeError."""
    check(json.dumps(value))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_records_or_a_reject(text):
    """Non-JSON text is a reject."""
    check(text)


numbers = (st.integers(min_value=-(10**20), max_value=10**20) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([0, 1, 0.5, True, False, 1e300, -1e300, 10**400, 9e12, 1_712_160_300, "0.5", None]))
points = st.fixed_dictionaries({"t": st.just("UPDATE_HISTORY"), "e": st.sampled_from(["ev", "ev2", 7, None]),
                                "o": st.lists(st.sampled_from(["y", "n", 3, None]), max_size=2),
                                "d": st.fixed_dictionaries({"t": numbers, "p": numbers}) | st.sampled_from([None, [], 1])})


def _outcome(decoder, call):
    try:
        return [from_row(r) if type(r) is tuple else r for r in call()], None, decoder.points.items()
    except DecodeError as exc:
        return None, str(exc), decoder.points.items()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(points, min_size=1, max_size=4))
def test_outpoll_fast_chance_path_equals_the_checked_path(frames):
    """The inline fast path for live chance points gives exactly what the fully checked path gives:
    the same rows, the same rejections with the same message, the same dedupe window."""
    fast = outpoll.make_decoder(outpoll.FeedSpec(stream="chance"))
    checked = outpoll.make_decoder(outpoll.FeedSpec(stream="chance"))
    for msg in frames + frames:  # twice: the second time dedupe must drop the same points
        text = json.dumps(msg)
        got = _outcome(fast, lambda: fast.decode(text, META))
        parsed = base.parse_json(text)
        want = _outcome(checked, lambda: checked._chance(parsed, META, [base.obj(parsed.get("d"), "d")], source="live"))
        assert got == want, text


# Whole runs of frames as the live path hands them over: live points of both tags, with numbers in
# every JSON spelling, other messages, malformed frames, and copies of earlier frames.
def _spelled(n: float) -> st.SearchStrategy[str]:
    n = float(n)
    return st.sampled_from([repr(n), f"{n:.17g}", f"{n:e}", f"{n:E}", json.dumps(int(n)) if n.is_integer() else repr(n)])


live_points = st.builds(
    lambda tag, e, o, t, p: f'{{"t":"{tag}","e":{json.dumps(e)},"o":[{json.dumps(o)}],"d":{{"t":{t},"p":{p}}}}}',
    st.sampled_from(["UPDATE_HISTORY", "probability"]), st.sampled_from(["ev", "ev2", "é"]), st.sampled_from(["y", "n"]),
    st.sampled_from([1_712_160_300, 1_712_160_300.5, 86_399.999999, 86_400, 0, -1.5, 8.9e12]).flatmap(_spelled),
    st.sampled_from([0.0, 0.3, 0.30000000000000004, 1.0, 1e-7, 0.5]).flatmap(_spelled))
others = st.sampled_from([
    '{"t":"PRICES_DATA_DELTA","e":"ev","d":[{"o":"y","b":0.4}]}', '{"t":"PING"}', "not json", "",
    '{"t":"HISTORY","e":"ev","o":["y"],"d":[{"t":1712160300,"p":0.3},{"t":1712160301,"p":0.4}]}',
    '{"t":"UPDATE_HISTORY","e":"ev","o":["y","n"],"d":{"t":1712160300,"p":0.3}}',
    '{"t":"UPDATE_HISTORY","e":"ev","o":["y"],"d":{"t":1712160300,"p":1.5}}',
    '{"t":"UPDATE_HISTORY","e":"ev","o":["y"],"d":{"t":1712160300,"p":NaN}}',
    '{"t":"UPDATE_HISTORY","t":"probability","e":"ev","o":["y"],"d":{"t":1712160300,"p":0.3}}',
    '{"t":"UPDATE_HISTORY","e":"ev","e":"ev2","o":["y"],"d":{"t":1712160300,"p":0.3,"p":0.4}}',
    '{"t":"UPDATE_HISTORY","e":"\\ud800","o":["y"],"d":{"t":1712160300,"p":0.3}}',
    '{"t":"UPDATE_HISTORY","e":"ev","o":["y"],"d":{"t":1e400,"p":0.3}}'])
frames_in_runs = st.lists(st.lists(live_points | others | points.map(json.dumps), min_size=1, max_size=6),
                          min_size=1, max_size=5)


def _run_pipeline(tmp, runs: list[list[str]], *, by_runs: bool):
    from recorder.pipeline import Pipeline

    p = Pipeline(tmp, tmp, lambda feed: outpoll.make_decoder(outpoll.FeedSpec(stream="chance")), batch_rows=3)
    decoder = p._decoder("f")
    if not by_runs:
        p._runners["f"] = None
    seq = 1
    for run in runs + runs:  # twice: the second time dedupe must drop the same points
        p._apply_frames("f", "outpoll", "c", seq, 1_760_000_000_000_000 + seq, run)
        seq += len(run)
    rows_buffered = p.buffers.rows
    flush = p.buffers.cut()
    def rows(batch):  # timestamps as integers: datetime cannot hold every microsecond count a column can
        cols = [c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c for c in batch.columns]
        return zip(*(c.to_pylist() for c in cols))

    tables = {key: sorted((r for b in batches for r in rows(b)), key=repr) for key, batches in flush.partitions.items()}
    stats = p.stats["f"]
    return tables, rows_buffered, flush.rows, (stats.frames, stats.rows, stats.rejects), decoder.points.items()


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_in_runs)
def test_outpoll_run_decoder_equals_decoding_frame_by_frame(tmp_path_factory, runs):
    """decode_run (msgspec, column buffers) gives exactly the tables, counts, rejects and dedupe
    window that decode() frame by frame gives, whatever the runs hold; rows on either side of
    midnight land in their own date partitions."""
    tmp = tmp_path_factory.mktemp("p")
    assert _run_pipeline(tmp, runs, by_runs=True) == _run_pipeline(tmp, runs, by_runs=False)


# Point keys from a small universe: live-like runs of increasing times, repeats, points from the
# past, several outcomes, the same time with another probability, and -0.0.
point_keys = st.tuples(st.sampled_from(["ev", "ev2"]), st.sampled_from(["y", "n"]),
                       st.sampled_from([0.0, -0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 1e9]) | st.integers(0, 40).map(float),
                       st.sampled_from([0.25, 0.5, 0.0, -0.0]))


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(point_keys, max_size=120), st.integers(min_value=0, max_value=120), st.sampled_from([1, 3, 8]))
def test_point_window_never_forgets_the_last_size_points_and_never_invents_one(keys, restart_at, size):
    """PointWindow against an exact model: a point among the last `size` points added is always
    known (add_new False); a point never added is always new (True); it holds at most 4 x size
    points, only points that were added; its checkpoint state (JSON and back) keeps all that."""
    w = base.PointWindow(size)
    added: list[tuple] = []  # every point add_new accepted, in order
    for i, key in enumerate(keys):
        if i == restart_at:
            w = base.PointWindow(size, json.loads(json.dumps(w.state())))
        new = w.add_new(key)
        recent = {k for k in added[-size:]}  # tuples compare 0.0 == -0.0, as the window does
        if key in recent:
            assert not new, (key, added[-size:])
        if key not in set(added):
            assert new, key
        if new:
            added.append(key)
        held = w.items()
        assert len(held) <= 4 * size
        assert set(held) <= set(added)
        assert all(k in w for k in added[-size:])
