"""The append-only journal of everything received: frames and connection events.

Every frame is appended here before it is decoded; Parquet is derived from the journal. On disk:
`<dir>/<segment:010d>.wal`, each a run of entries

    u32 body length | u32 crc32(body) | body
    body = u8 kind | i64 ts_recv_us | i64 seq | u16+feed | u16+venue | u16+conn_id | text (utf-8)

A FRAMES entry holds the frames one socket read delivered (stamped with one receive time):
    text = u32 count | count x u32 utf-8 length | the frames' utf-8, back to back
with `seq` the first frame's; frame i has seq + i. One header and one checksum per run of frames
is most of what makes journaling cheap; such an entry is written, and lost to a torn tail, whole.

A position is (segment, offset). Appends are queued in memory (the event loop never waits on
disk); `sync()` writes and fsyncs them from a worker thread (group commit). Reading stops at the first short or corrupt entry of a segment, cuts the segment there
and warns: a torn tail is expected after a crash and never fatal.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Iterator

import attrs

from .fsutil import fsync_dir

def _ascii_frames(texts: list[str]) -> tuple[bytes, bytes] | None:
    """A run's frames one after another and their lengths as packed little-endian u32, if every
    frame is ASCII (its characters are its UTF-8); None otherwise. _speedups.ascii_frames is the
    same in one pass, where the package was built with its C part."""
    joined = "".join(texts)
    if not joined.isascii():
        return None
    return joined.encode("ascii"), struct.pack(f"<{len(texts)}I", *map(len, texts))


try:
    from ._speedups import ascii_frames
except ImportError:
    ascii_frames = _ascii_frames

log = logging.getLogger(__name__)

_HEAD = struct.Struct("<II")
_FIXED = struct.Struct("<Bqq")  # kind, ts_recv, seq
_LEN = struct.Struct("<H")
SUFFIX = ".wal"
Position = tuple[int, int]


class Kind(enum.IntEnum):
    FRAME = 1  # a received frame; text = the frame (secrets removed)
    OPEN = 2  # connection established; text = url (secrets removed)
    SUBSCRIBED = 3  # venue confirmed auth/subscription; text empty
    CLOSE = 4  # connection ended; text = reason
    FRAMES = 5  # frames received together; text = their count, lengths and bytes (see above)


@attrs.frozen(kw_only=True)
class Entry:
    kind: Kind
    ts_recv: int
    seq: int
    feed: str
    venue: str
    conn_id: str
    text: str


def names_prefix(feed: str, venue: str, conn_id: str) -> bytes:
    """The length-prefixed feed, venue and connection id, as stored in an entry body."""
    parts = []
    for s in (feed, venue, conn_id):
        b = s.encode()
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def encode_parts(kind: int, ts_recv: int, seq: int, prefix: bytes, text: str) -> bytes:
    body = _FIXED.pack(kind, ts_recv, seq) + prefix + text.encode()
    return _HEAD.pack(len(body), zlib.crc32(body)) + body


_COUNT = struct.Struct("<I")


def encode_frames(ts_recv: int, first_seq: int, prefix: bytes, texts: list[str]) -> bytes:
    return encode_frames_blobs(ts_recv, first_seq, prefix, [t.encode() for t in texts])[0]


def encode_frames_blobs(ts_recv: int, first_seq: int, prefix: bytes, blobs: list[bytes]) -> tuple[bytes, list[int]]:
    """A FRAMES entry of UTF-8 frames, and their lengths (the frames are the entry's last bytes)."""
    lengths = list(map(len, blobs))
    return _frames_entry(ts_recv, first_seq, prefix, struct.pack(f"<{len(lengths)}I", *lengths), b"".join(blobs)), lengths


def _frames_entry(ts_recv: int, first_seq: int, prefix: bytes, packed: bytes, blob: bytes) -> bytes:
    """The entry, the frames' lengths packed as little-endian u32. The checksum runs over the head
    and then the frames, so the frames are copied once (into the entry)."""
    head = b"".join((_FIXED.pack(Kind.FRAMES, ts_recv, first_seq), prefix, _COUNT.pack(len(packed) // 4), packed))
    return b"".join((_HEAD.pack(len(head) + len(blob), zlib.crc32(blob, zlib.crc32(head))), head, blob))


def split_frames(data: memoryview | bytes) -> list[str]:
    """The frames of a FRAMES entry's text part."""
    (n,) = _COUNT.unpack_from(data, 0)
    lengths = struct.unpack_from(f"<{n}I", data, 4)
    start = 4 + 4 * n
    blob = bytes(data[start:])
    if len(blob) != sum(lengths):
        raise ValueError(f"frame lengths add up to {sum(lengths)} bytes, the entry holds {len(blob)}")
    texts = []
    if blob.isascii():  # nearly always: one decode, then slices (characters are bytes)
        whole, off = blob.decode("ascii"), 0
        for length in lengths:
            texts.append(whole[off : off + length])
            off += length
    else:
        off = 0
        for length in lengths:
            texts.append(str(blob[off : off + length], "utf-8"))
            off += length
    return texts


def encode(e: Entry) -> bytes:
    return encode_parts(e.kind, e.ts_recv, e.seq, names_prefix(e.feed, e.venue, e.conn_id), e.text)


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:010d}{SUFFIX}"


def segments(directory: Path) -> list[int]:
    return sorted(int(p.stem) for p in directory.glob(f"*{SUFFIX}") if p.stem.isdigit())


_FIXED_LEN0 = struct.Struct("<BqqH")  # kind, ts_recv, seq, length of feed


def read_segment_fields(path: Path, start: int = 0) -> Iterator[tuple[int, tuple]]:
    """Entries of one segment from `start`, as plain tuples (kind, ts_recv, seq, feed, venue, conn_id, text): replay's fast path."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    view = memoryview(data)
    names: dict[bytes, tuple[str, str, str, int]] = {}  # name prefix -> (feed, venue, conn_id, its length)
    off, end = 0, len(data)
    while off < end:
        bad = None
        if end - off < _HEAD.size:
            bad = "a truncated entry header"
        else:
            length, crc = _HEAD.unpack_from(data, off)
            body = view[off + _HEAD.size : off + _HEAD.size + length]
            if len(body) < length:
                bad = f"a truncated entry ({len(body)} of {length} bytes)"
            elif zlib.crc32(body) != crc:
                bad = "a checksum mismatch"
        if bad:
            cut = start + off
            log.warning("journal %s: %s at offset %d; cutting %d bytes there", path.name, bad, cut, end - off)
            with open(path, "r+b") as f:
                f.truncate(cut)
                f.flush()
                os.fsync(f.fileno())
            return
        try:
            fields = _fields(body, names)
        except (ValueError, UnicodeDecodeError, struct.error) as exc:
            log.warning("journal %s: undecodable entry at offset %d (%s); skipped", path.name, start + off, exc)
            off += _HEAD.size + length
            continue
        off += _HEAD.size + length
        yield start + off, fields


def _fields(body: memoryview, names: dict) -> tuple:
    kind, ts, seq, n1 = _FIXED_LEN0.unpack_from(body, 0)
    o = _FIXED.size
    n2 = int.from_bytes(body[o + 2 + n1 : o + 4 + n1], "little")
    n3 = int.from_bytes(body[o + 4 + n1 + n2 : o + 6 + n1 + n2], "little")
    end = o + 6 + n1 + n2 + n3
    key = bytes(body[o:end])
    cached = names.get(key)
    if cached is None:
        if len(names) > 10_000:
            names.clear()
        feed = str(body[o + 2 : o + 2 + n1], "utf-8")
        venue = str(body[o + 4 + n1 : o + 4 + n1 + n2], "utf-8")
        conn_id = str(body[o + 6 + n1 + n2 : end], "utf-8")
        cached = names[key] = (feed, venue, conn_id)
    if kind == Kind.FRAMES:
        return (kind, ts, seq, *cached, split_frames(body[end:]))
    return (kind, ts, seq, *cached, str(body[end:], "utf-8"))


def read_fields_from(directory: Path, pos: Position) -> Iterator[tuple[Position, tuple]]:
    """Like read_from, with plain tuples (see read_segment_fields); a FRAMES entry comes as one
    tuple whose last field is the list of its frames."""
    for number in segments(directory):
        if number < pos[0]:
            continue
        start = pos[1] if number == pos[0] else 0
        for off, fields in read_segment_fields(segment_path(directory, number), start):
            yield (number, off), fields


def read_from(directory: Path, pos: Position) -> Iterator[tuple[Position, Entry]]:
    """Every entry after `pos`, across segments, with the position after each. The frames of a
    FRAMES entry come as FRAME entries, each with the position after the whole run."""
    for position, f in read_fields_from(directory, pos):
        if f[0] == Kind.FRAMES:
            for i, text in enumerate(f[6]):
                yield position, Entry(kind=Kind.FRAME, ts_recv=f[1], seq=f[2] + i, feed=f[3], venue=f[4],
                                      conn_id=f[5], text=text)
        else:
            yield position, Entry(kind=Kind(f[0]), ts_recv=f[1], seq=f[2], feed=f[3], venue=f[4], conn_id=f[5],
                                  text=f[6])


class Journal:
    """Appends entries on the event loop (memory only); a worker thread writes and fsyncs them.

    `append()` encodes the entry and queues the bytes with the position they end at: no system
    call, so a slow disk never stalls the read loop. `sync()`, run in a worker thread by the
    group-commit task and before every Parquet commit, writes everything queued, in order, and
    fsyncs it. `durable` is the position up to which entries are on disk.
    """

    def __init__(self, directory: Path, *, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        existing = segments(directory)
        self._number = (existing[-1] + 1) if existing else 1
        self._offset = 0
        self._queue: collections.deque[tuple[int, bytes, Position]] = collections.deque()
        self._file = None
        self._file_number = 0
        self._good: Position = (0, 0)  # (segment, size) known fsynced
        self._sync_lock = threading.Lock()
        self.durable: Position = (self._number, 0)
        # Bytes appended (by the event loop only) and bytes written and fsynced (by sync() only): two
        # counters, each with one writer, so neither thread's update can be lost.
        self._appended_bytes = 0
        self._synced_bytes = 0
        self._prefixes: dict[tuple[str, str, str], bytes] = {}

    @property
    def queued_bytes(self) -> int:
        """Bytes appended and not yet on disk (what the journal holds in memory)."""
        return self._appended_bytes - self._synced_bytes

    @property
    def position(self) -> Position:
        """The position after the last appended entry."""
        return (self._number, self._offset)

    def append(self, entry: Entry) -> Position:
        return self._queue_bytes(encode(entry))

    def append_frames(self, feed: str, venue: str, conn_id: str, first_seq: int, ts_recv: int,
                      texts: list[str]) -> tuple[memoryview, memoryview | bytes]:
        """One FRAMES entry for frames received together: the hot path. Returns the frames' UTF-8
        bytes (a view of the entry's tail, one after another) and their byte lengths as packed
        little-endian u32 (as the entry stores them), from which the raw table's payload column
        is built without encoding or counting the frames a second time."""
        key = (feed, venue, conn_id)
        prefix = self._prefixes.get(key)
        if prefix is None:
            if len(self._prefixes) > 1000:
                self._prefixes.clear()
            prefix = self._prefixes[key] = names_prefix(feed, venue, conn_id)
        n = len(texts)
        if n == 1:  # a run of one (light traffic): the plainer single-frame entry
            blob = texts[0].encode()
            body = _FIXED.pack(Kind.FRAME, ts_recv, first_seq) + prefix + blob
            entry = _HEAD.pack(len(body), zlib.crc32(body)) + body
            self._queue_bytes(entry)
            return memoryview(entry)[len(entry) - len(blob):], _COUNT.pack(len(blob))
        ascii = ascii_frames(texts)
        if ascii is not None:  # nearly always: the run's characters are its bytes, lengths in characters
            blob, packed = ascii
            entry, size = _frames_entry(ts_recv, first_seq, prefix, packed, blob), len(blob)
        else:
            entry, lengths = encode_frames_blobs(ts_recv, first_seq, prefix, [t.encode() for t in texts])
            size = sum(lengths)
        self._queue_bytes(entry)
        view = memoryview(entry)
        start = len(entry) - size  # the entry ends: u32 count, n x u32 lengths, the frames
        return view[start:], view[start - 4 * n : start]

    def _queue_bytes(self, data: bytes) -> Position:
        if self._offset and self._offset + len(data) > self._segment_bytes:
            self._number += 1
            self._offset = 0
        self._offset += len(data)
        end = (self._number, self._offset)
        self._queue.append((self._number, data, end))
        self._appended_bytes += len(data)
        return end

    def sync(self) -> Position:
        """Write and fsync everything appended so far (call from a worker thread).

        On a disk error (ENOSPC, EIO) nothing is lost: the bytes a partial write left are cut off,
        the entries not yet fsynced go back to the front of the queue, in order, and the error is
        raised; the next call writes them again."""
        with self._sync_lock:
            items = []
            while self._queue:
                items.append(self._queue.popleft())
            done = 0  # items[:done] are durable
            try:
                start = 0
                for i, (number, _data, _end) in enumerate(items):
                    if number != self._file_number:
                        self._write(items[start:i])
                        if self._file is not None:
                            self._fsync()
                            done = i
                        self._switch(number)
                        start = i
                self._write(items[start:])
                if self._file is not None:
                    self._fsync()
                done = len(items)
            except OSError:
                self._synced_bytes += sum(len(d) for _, d, _ in items[:done])
                self._restore(items[done:])
                raise
            self._synced_bytes += sum(len(d) for _, d, _ in items)
            if items and items[-1][2] > self.durable:
                self.durable = items[-1][2]
            return self.durable

    def _write(self, items: list) -> None:
        if items:
            data = b"".join(d for _, d, _ in items)
            self._file.write(data)
            self._file.flush()

    def _fsync(self) -> None:
        os.fsync(self._file.fileno())
        self._good = (self._file_number, self._file.tell())

    def _restore(self, items: list) -> None:
        """After a failed write: cut the current segment back to its last fsynced size, requeue."""
        for item in reversed(items):
            self._queue.appendleft(item)
        if self._file is not None:
            good = self._good[1] if self._good[0] == self._file_number else 0
            try:
                self._file.close()
            except OSError:
                pass  # close() flushes: the buffer may fail again on a full disk; the bytes are requeued
            with open(segment_path(self.directory, self._file_number), "r+b") as f:
                f.truncate(good)
            self._file = open(segment_path(self.directory, self._file_number), "ab", buffering=0)

    def _switch(self, number: int) -> None:
        if self._file is not None:
            self._file.close()
        self._file = open(segment_path(self.directory, number), "ab", buffering=0)  # OSError: caller retries
        self._file_number = number
        self._good = (number, self._file.tell())
        fsync_dir(self.directory)

    def remove_before(self, pos: Position) -> int:
        """Delete segments wholly before `pos` (their entries are all committed)."""
        removed = 0
        for number in segments(self.directory):
            if number < pos[0]:
                segment_path(self.directory, number).unlink(missing_ok=True)
                removed += 1
        return removed

    def close(self) -> None:
        self.sync()
        with self._sync_lock:
            if self._file is not None:
                self._file.close()
                self._file = None
