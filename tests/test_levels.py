"""Book levels read a run at a time (recorder/venues/levels.py): which shapes take the fast path,
the content hash both paths put in the dedupe key (the same in every process), old checkpoint
keys, and sorted flush files when the rows already are in order."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recorder import layout
from recorder.venues import levels, predictfun
from recorder.venues.base import FrameMeta
from recorder.writer import Buffers

TS = 1_760_000_000_000_000


def _decoder():
    decoder = predictfun.make_decoder(predictfun.FeedSpec(topics=("predictOrderbook/123",)))
    decoder.small_run = 0  # the run-at-a-time path for runs of any length
    decoder.compiled = False  # levels.RunLevels (the compiled reader: tests/test_speedups.py)
    return decoder


def _push(data: str) -> str:
    return f'{{"type":"M","topic":"predictOrderbook/123","data":{data}}}'


def test_plain_sides_take_the_fast_path_and_odd_ones_the_checked_path():
    """Null, missing and empty sides, whitespace between tokens, exponents and more levels than the
    table of shapes holds are read by the run-at-a-time path, with their exact values; a
    negative zero, a bare number list, spaces inside "[ ]", a string, a third value or an
    infinite value go to the checked path."""
    many = "[" + ",".join(f"[{0.5 + i / 100},{i}]" for i in range(80)) + "]"
    fast = ['{"bids":null,"asks":[[0.6,1]]}', '{"asks":[[0.7,1]]}', '{"bids":[],"asks":[]}',
            '{"bids":[[0.5, 1E+2],\n[0.4,2.5e-3]],"asks":[[1e-400,12345678901234567890123]]}', f'{{"bids":{many}}}',
            '{"bids":[[-2.5,1]],"asks":[[0.6,-1]]}']
    slow = ['{"bids":[[-0,1]]}', '{"bids":[5]}', '{"bids":[ ]}', '{"bids":[["0.5",1]]}', '{"bids":[[0.5,1,2]]}',
            '{"bids":[[1e400,1]]}', '{"bids":[[0.5,1]],"asks":[["|",1]]}']
    texts = [_push(d) for d in fast + slow]
    b, sent = Buffers(), []
    meta = FrameMeta(venue="predictfun", feed="f", conn_id="c", seq=1, ts_recv=TS)
    assert _decoder().decode_run(texts, meta, b, sent.append) == len(fast)
    assert sent == list(range(len(fast), len(texts)))
    b.rows += len(fast)
    book = b.cut().partitions[("book", "predictfun", TS // 86_400_000_000)][0]
    assert book.column("bids").to_pylist()[3] == [{"price": 0.5, "size": 100.0}, {"price": 0.4, "size": 0.0025}]
    assert book.column("asks").to_pylist()[3] == [{"price": 0.0, "size": 1.2345678901234568e22}]
    assert len(book.column("bids").to_pylist()[4]) == 80 and book.column("depth").to_pylist()[4] == 80
    assert book.column("bids").to_pylist()[0] == [] and book.column("best_bid").to_pylist()[:3] == [None] * 3
    assert book.column("best_ask").to_pylist()[5] == 0.6 and book.column("best_bid").to_pylist()[5] == -2.5


def test_the_content_hash_is_the_same_in_every_process_and_on_both_paths():
    """levels_hash (the checked path) equals RunLevels' hash of the same text, and a process with
    another hash seed computes the same value: a restored dedupe window still matches."""
    bids, asks = ((0.31, 107.3), (0.3, 114.6)), ((0.33, 205.1),)
    run = levels.RunLevels([b"[[0.31,107.3],[0.3,114.6]]", b"[[0.33,205.1]]"])
    here = levels.levels_hash(bids, asks)
    assert run.ok == [True] and run.hash == [here] and (run.bids, run.asks) == ([2], [1])
    assert levels.levels_hash(asks, bids) != here and levels.levels_hash(bids, ()) != here
    code = ("from recorder.venues import levels; "
            "print(levels.levels_hash(((0.31, 107.3), (0.3, 114.6)), ((0.33, 205.1),)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True)
    assert int(out.stdout) == here


def test_a_restored_window_matches_new_keys_and_ignores_the_old_form():
    """A dedupe window saved with the new keys drops the same book after a restart; one saved
    before (('book', market, ts, hash of tuples)) restores without error and matches nothing."""
    text = _push('{"marketId":123,"updateTimestampMs":1736696400000,"bids":[[0.5,1]],"asks":[[0.6,2]]}')
    meta = FrameMeta(venue="predictfun", feed="f", conn_id="c", seq=1, ts_recv=TS)
    first = _decoder()
    assert len(first.decode(text, meta)) == 1
    state = json.loads(json.dumps(first.state()))
    again = _decoder()
    again.restore(state)
    assert again.decode(text, meta) == []
    assert again.decode_run([text], meta, Buffers(), lambda i: None) == 0
    old = _decoder()
    old.restore({"seen": [["book", "123", 1736696400000000, hash(((0.5, 1.0),) + ((0.6, 2.0),))]], "settled": []})
    assert len(old.decode(text, meta)) == 1


def test_flush_files_are_sorted_whether_or_not_the_rows_already_are():
    """write_sorted skips the sorted copy only when the rows are in order: interleaved
    connections come out sorted by (conn_id, seq) all the same."""
    sch = pa.schema([("conn_id", pa.string()), ("seq", pa.int64())])
    for conns, seqs in ((["a"] * 4, [1, 2, 3, 4]), (["b", "a", "b", "a"], [1, 1, 2, 2]), (["a"], [7])):
        out = io.BytesIO()
        layout.write_sorted(pa.table({"conn_id": conns, "seq": seqs}, schema=sch), out,
                            sort_by=[("conn_id", "ascending"), ("seq", "ascending")])
        got = pq.read_table(io.BytesIO(out.getvalue()))
        assert list(zip(got["conn_id"].to_pylist(), got["seq"].to_pylist())) == sorted(zip(conns, seqs))


def test_level_bytes_count_towards_the_flush_and_memory_limits():
    """Buffers.held_bytes counts the flat level arrays of column buffers not yet sealed."""
    b = Buffers(batch_rows=1000)
    texts = [_push(f'{{"updateTimestampMs":{1736696400000 + i},"bids":[[0.5,1],[0.4,2]],"asks":[[0.6,3]]}}')
             for i in range(100)]
    meta = FrameMeta(venue="predictfun", feed="f", conn_id="c", seq=1, ts_recv=TS)
    before = b.held_bytes
    b.rows += _decoder().decode_run(texts, meta, b, lambda i: None)
    cols = next(c for _v, c in b.containers("book"))
    assert cols.level_bytes == 100 * (2 * 4 + 6 * 8) and b.held_bytes - before >= cols.level_bytes
    assert np.isclose(cols.levels("asks")[99][0][0], 0.6)
