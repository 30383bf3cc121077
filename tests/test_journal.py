"""The journal: round trip, segment rotation, torn and corrupt tails cut (never fatal)."""

from __future__ import annotations

import os
import struct
import zlib

import pytest

from helpers import frame
from recorder import journal as jr


def write(directory, n, **kw):
    j = jr.Journal(directory, **kw)
    for i in range(1, n + 1):
        j.append(frame(i))
    j.close()
    return j


def test_round_trip(tmp_path):
    """Every appended entry is read back identical, with increasing positions."""
    write(tmp_path, 50)
    got = list(jr.read_from(tmp_path, (0, 0)))
    assert [e for _, e in got] == [frame(i) for i in range(1, 51)]
    positions = [p for p, _ in got]
    assert positions == sorted(positions)


def test_segments_rotate_and_read_across(tmp_path):
    """Small segments rotate; reading from a mid position resumes exactly after it."""
    write(tmp_path, 200, segment_bytes=2000)
    assert len(jr.segments(tmp_path)) > 5
    got = list(jr.read_from(tmp_path, (0, 0)))
    assert len(got) == 200
    pos, _ = got[99]
    rest = [e.seq for _, e in jr.read_from(tmp_path, pos)]
    assert rest == list(range(101, 201))


def test_torn_tail_is_cut_with_a_warning(tmp_path, caplog):
    """A half-written last entry is cut off; everything before it is read."""
    write(tmp_path, 10)
    (seg,) = jr.segments(tmp_path)
    path = jr.segment_path(tmp_path, seg)
    size = path.stat().st_size
    os.truncate(path, size - 7)
    got = [e.seq for _, e in jr.read_from(tmp_path, (0, 0))]
    assert got == list(range(1, 10))
    assert "truncated" in caplog.text
    assert path.stat().st_size < size - 7  # the torn bytes are gone
    assert [e.seq for _, e in jr.read_from(tmp_path, (0, 0))] == list(range(1, 10))


def test_corrupt_entry_is_cut(tmp_path, caplog):
    """A flipped byte fails the checksum: the segment is cut there, not read as garbage."""
    write(tmp_path, 10)
    path = jr.segment_path(tmp_path, jr.segments(tmp_path)[0])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    got = [e.seq for _, e in jr.read_from(tmp_path, (0, 0))]
    assert got == list(range(1, len(got) + 1)) and 0 < len(got) < 10
    assert "checksum" in caplog.text


def test_new_journal_starts_a_new_segment_and_removes_old(tmp_path):
    """Opening again never appends to an old (possibly torn) segment; committed ones can be removed."""
    write(tmp_path, 5)
    j = jr.Journal(tmp_path)
    j.append(frame(6))
    j.sync()
    assert jr.segments(tmp_path) == [1, 2]
    assert j.remove_before((2, 0)) == 1
    assert [e.seq for _, e in jr.read_from(tmp_path, (0, 0))] == [6]
    j.close()


def test_durable_position_follows_sync(tmp_path):
    """Appends are in memory until sync(); `durable` then reaches the last appended position."""
    j = jr.Journal(tmp_path)
    end = j.append(frame(1))
    assert j.durable < end
    assert list(jr.read_from(tmp_path, (0, 0))) == []
    j.sync()
    assert j.durable == end
    assert len(list(jr.read_from(tmp_path, (0, 0)))) == 1
    j.close()


def run_of_frames(j, first: int, texts: list[str]):
    return j.append_frames("f1", "v", "c1", first, 1_760_000_000_000_000 + first, texts)


def test_a_run_of_frames_reads_back_as_single_frames_in_order(tmp_path):
    """A FRAMES entry (one socket read) comes back as FRAME entries numbered from its first seq,
    non-ASCII text intact, interleaved in order with single entries."""
    j = jr.Journal(tmp_path)
    j.append(frame(1))
    run_of_frames(j, 2, ['{"p":"é"}', "plain", "", "日本語 ok"])
    j.append(frame(6))
    run_of_frames(j, 7, ["x" * 70_000])
    j.close()
    got = [e for _, e in jr.read_from(tmp_path, (0, 0))]
    assert [e.seq for e in got] == [1, 2, 3, 4, 5, 6, 7]
    assert {e.kind for e in got} == {jr.Kind.FRAME}
    assert [e.text for e in got[1:5]] == ['{"p":"é"}', "plain", "", "日本語 ok"]
    assert got[6].text == "x" * 70_000 and got[2].ts_recv == 1_760_000_000_000_002


@pytest.mark.parametrize("texts", [["a", "bc", ""], ['{"p":1}'] * 600, ["plain", "é"], ["x" * 70_000, "y"],
                                   ["\ud800", "ok"], [""] * 3])
def test_a_run_is_the_same_entry_with_and_without_the_compiled_join(tmp_path, monkeypatch, texts):
    """_speedups.ascii_frames (one pass in C) gives the entry, frame bytes and lengths the Python
    join gives, and declines a run with a non-ASCII text (lone surrogates too) to it."""
    assert jr.ascii_frames is not jr._ascii_frames, "recorder._speedups is not built"
    if any(not t.isascii() for t in texts):
        assert jr.ascii_frames(texts) is None
    out = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(jr, "ascii_frames", jr._ascii_frames)
        (tmp_path / str(compiled)).mkdir()
        j = jr.Journal(tmp_path / str(compiled))
        try:
            data, lengths = j.append_frames("f", "v", "c", 5, 1_760_000_000_000_000, texts)
        except UnicodeEncodeError:  # a lone surrogate has no UTF-8: the same error either way
            out.append("UnicodeEncodeError")
            continue
        out.append((bytes(data), bytes(lengths), [d for _, d, _ in j._queue]))
        j.close()
    assert out[0] == out[1]


def test_a_torn_run_of_frames_is_cut_whole(tmp_path, caplog):
    """A run written in part is one entry with one checksum: it is cut whole, the runs before it stay."""
    j = jr.Journal(tmp_path)
    run_of_frames(j, 1, [f"a{i}" for i in range(10)])
    run_of_frames(j, 11, [f"b{i}" for i in range(10)])
    j.close()
    path = jr.segment_path(tmp_path, jr.segments(tmp_path)[0])
    os.truncate(path, path.stat().st_size - 3)
    assert [e.seq for _, e in jr.read_from(tmp_path, (0, 0))] == list(range(1, 11))
    assert "truncated" in caplog.text


def test_a_run_whose_lengths_disagree_is_skipped_not_misread(tmp_path, caplog):
    """A run whose stored lengths do not add up (a writer bug, checksum intact) is skipped with a
    warning naming the offset; the entries after it are still read."""
    j = jr.Journal(tmp_path)
    prefix = jr.names_prefix("f1", "v", "c1")
    good = jr.encode_frames(1, 1, prefix, ["abc", "de"])
    body = bytearray(good[8:])
    count_at = len(body) - 5 - 8  # u32 count, then two u32 lengths, then 5 bytes of text
    body[count_at + 4] = 9  # first length 3 -> 9
    bad = struct.pack("<II", len(body), zlib.crc32(bytes(body))) + bytes(body)
    j._queue_bytes(bad)
    run_of_frames(j, 3, ["after"])
    j.close()
    assert [e.text for _, e in jr.read_from(tmp_path, (0, 0))] == ["after"]
    assert "undecodable entry" in caplog.text
