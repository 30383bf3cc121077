"""Order book levels read a run of frames at a time, without a Python object per level.

A venue sends each side of a book as a JSON list of [price, size] pairs. The run-at-a-time
decoders keep each side as the JSON text the venue sent (msgspec.Raw) and hand all of a run's
sides to `RunLevels`, which
- checks each side's shape with two C calls on the whole run (only numbers, commas and brackets,
  exactly two numbers per level: anything else, strings, nulls inside, extra values, whitespace
  excepted, is left to the frame-by-frame path);
- parses every number of the run in one Arrow call (correctly rounded, as Python's float() and
  the JSON parsers of the checked path read them) into one flat float64 array;
- sends a book with a value that is not finite, or a negative zero (which the checked path's
  parser reads from "-0" as +0.0), to the frame-by-frame path;
- gives each book a content hash of its levels (Python's hash of the tuple of its values), the
  same in every process and computed the same way by the frame-by-frame path (`levels_hash`), for
  the dedupe key.

The column buffers then take the kept books' levels as flat arrays (`writer._Levels`), and Arrow
builds the list<struct<price, size>> column from them when a batch is sealed.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NUMBER_CHARS = b"0123456789.eE+-"
_SPACE = b" \t\n\r"  # JSON whitespace: never inside a number
_SEP = b"|"  # between sides while checking their shapes (a '|' can only be inside a string: not a level list)


def _pattern(k: int) -> bytes:
    """A side of k levels with its numbers (and spaces) removed."""
    return b"[]" if k == 0 else b"[[" + b",],[" * (k - 1) + b",]]"


_PATTERNS = {_pattern(k): k for k in range(65)}
_PATTERNS[b"null"] = 0  # the checked path reads a null side as no levels


def side_count(pattern: bytes) -> int:
    """The number of levels of a side given its pattern (numbers and spaces removed); -1 if it is
    not a list of [number, number] lists. (0 for "[]", and also for "[5]": see RunLevels.)"""
    k = _PATTERNS.get(pattern)
    if k is not None:
        return k
    k = (len(pattern) - 1) // 4
    return k if k > 0 and pattern == _pattern(k) else -1


# --- the content hash ------------------------------------------------------------------------


def levels_hash(bids, asks) -> int:
    """The content hash of one book's levels given as (price, size) pairs: Python's hash of the
    tuple of its values in order (bids' prices and sizes, then asks'). The hash of a float depends
    only on its value and a tuple's only on its items' (no per-process seed): the same in every
    process, and what RunLevels gives a book with these values (the dedupe key's last part)."""
    return hash(tuple(chain.from_iterable(bids + asks)))


# --- a run's levels ----------------------------------------------------------------------------


_COMMA_TO_ZERO = bytes.maketrans(b",", b"0")


def _numbers(sides: list) -> np.ndarray | None:
    """Every number of these well-shaped, non-empty sides, in order, as float64 (one Arrow cast);
    None if Arrow cannot read one of them.

    The numbers are cut out of the text without copying each: a string array whose offsets are the
    commas' positions, so that every number after the first starts with its comma, turned into a
    '0' ("0.5,1,0.4" -> "0.5", "01", "00.4"): a leading zero changes no value. A negative number
    would read "0-1": then the text is split at its commas instead."""
    text = b",".join(sides).translate(None, b"[]" + _SPACE)
    if not text:
        return np.zeros(0, np.float64)
    if text[0] == 45 or b",-" in text:  # "-"
        arr = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(np.array([0, len(text)], np.int32)),
                                                     pa.py_buffer(text)])
        strings = pc.split_pattern(arr, ",").flatten()
    else:
        commas = np.flatnonzero(np.frombuffer(text, np.uint8) == 44)
        offsets = np.empty(len(commas) + 2, np.int32)
        offsets[0], offsets[-1] = 0, len(text)
        offsets[1:-1] = commas
        strings = pa.Array.from_buffers(pa.string(), len(commas) + 1,
                                        [None, pa.py_buffer(offsets), pa.py_buffer(text.translate(_COMMA_TO_ZERO))])
    try:
        return strings.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return None


def _readable(sides: list, counts: list[int], j: int) -> bool:
    v = _numbers([sides[i] for i in (2 * j, 2 * j + 1) if counts[i]])
    return v is not None and len(v) == 2 * (counts[2 * j] + counts[2 * j + 1])


class RunLevels:
    """The levels of a run's books. `sides` holds two buffers per book, its bids' and its asks'
    JSON text. Per book j: `ok[j]` (False: the frame-by-frame path decides), `bids[j]` and
    `asks[j]` (level counts), `best_bid[j]`, `best_ask[j]` (the first level's price, read only
    where the side has a level) and `hash[j]` (levels_hash of its values); `keys[j]`, its dedupe
    key, is set by the decoder (which knows the markets and times). `kept_flags[j]` marks a book
    whose row is recorded; `kept()` gives their levels as flat arrays, for the column buffers."""

    __slots__ = ("ok", "bids", "asks", "best_bid", "best_ask", "hash", "keys", "kept_flags",
                 "_books", "_values", "_nb", "_na")

    def __init__(self, sides: list) -> None:
        n = len(sides) // 2
        pats = _SEP.join(sides).translate(None, _NUMBER_CHARS + _SPACE).split(_SEP)
        if len(pats) != len(sides):  # a '|' inside some side (in a string): look at each alone
            pats = [bytes(s).translate(None, _NUMBER_CHARS + _SPACE) for s in sides]
        counts = list(map(_PATTERNS.get, pats))
        if None in counts:
            counts = [side_count(p) for p in pats]
        if 0 in counts:  # "[5]" has the pattern of "[]": an empty side must be exactly "[]" (or "null")
            counts = [-1 if k == 0 and len(s) != 2 and p != b"null" else k for k, s, p in zip(counts, sides, pats)]
        ok = [True] * n if -1 not in counts else [counts[2 * j] >= 0 and counts[2 * j + 1] >= 0 for j in range(n)]
        while True:  # at most three rounds: all, then without unreadable books, then without bad values
            # (each round that does not break marks at least one more book not ok)
            if False in ok:
                books = [j for j in range(n) if ok[j]]
                nb = np.array([counts[2 * j] for j in books], np.int64)
                na = np.array([counts[2 * j + 1] for j in books], np.int64)
                values = _numbers([sides[i] for j in books for i in (2 * j, 2 * j + 1) if counts[i]])
            else:  # the common case: every book readable
                books = range(n)
                nb, na = np.array(counts[0::2], np.int64), np.array(counts[1::2], np.int64)
                values = _numbers(sides if 0 not in counts else [s for s, k in zip(sides, counts) if k])
            lengths = 2 * (nb + na)
            if values is None or len(values) != int(lengths.sum()):
                readable = [j for j in books if _readable(sides, counts, j)]
                if len(readable) == len(books):  # each alone reads, not all together: left to the checked path
                    readable = []
                ok = [False] * n
                for j in readable:
                    ok[j] = True
                continue
            bad = ~np.isfinite(values) | ((values == 0) & np.signbit(values))
            if bad.any():
                for b in np.unique(np.repeat(np.arange(len(books)), lengths)[bad]).tolist():
                    ok[books[b]] = False
                continue
            break
        starts = np.zeros(len(books), np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        vals = values.tolist()  # one C call; each book's hash is its values' tuple's (levels_hash)
        hashes = [hash(tuple(vals[s:s + k])) for s, k in zip(starts.tolist(), lengths.tolist())]
        last = max(len(values) - 1, 0)
        padded = values if len(values) else np.zeros(1, np.float64)
        best_bid = padded[np.minimum(starts, last)].tolist()
        best_ask = padded[np.minimum(starts + 2 * nb, last)].tolist()
        bids, asks = nb.tolist(), na.tolist()
        if len(books) < n:  # per book of the run (the books not ok have zeros: never read)
            full = [[0] * n for _ in range(5)]
            for k, j in enumerate(books):
                for column, source in zip(full, (bids, asks, best_bid, best_ask, hashes)):
                    column[j] = source[k]
            bids, asks, best_bid, best_ask, hashes = full
        self.ok, self.bids, self.asks, self.best_bid, self.best_ask, self.hash = ok, bids, asks, best_bid, best_ask, hashes
        self.kept_flags = [False] * n
        self._books, self._values, self._nb, self._na = books, values, nb, na

    def kept(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(bid counts, bid values, ask counts, ask values) of the kept books, in order: counts as
        int32, values as float64 price, size, price, size...; None if no book was kept."""
        books, flags = self._books, self.kept_flags
        keep = np.array(flags if len(books) == len(flags) else [flags[j] for j in books], bool)
        if not keep.any():
            return None
        nb, na = self._nb, self._na
        side_lengths = np.empty(2 * len(nb), np.int64)
        side_lengths[0::2] = 2 * nb
        side_lengths[1::2] = 2 * na
        out = []
        for first, counts in ((0, nb), (1, na)):
            sides = np.zeros(2 * len(nb), bool)
            sides[first::2] = keep
            out += [counts[keep].astype(np.int32), self._values[np.repeat(sides, side_lengths)]]
        return out[0], out[1], out[2], out[3]


class FlatLevels:
    """The levels of a run's books as the compiled reader gives them (recorder/_speedups.c): the
    RunLevels interface the decoder reads (`ok`, `bids`, `asks`, `best_bid`, `best_ask`,
    `kept_flags`, `kept()`) with `keys`, each book's dedupe key, and `depth`, made by the reader.
    Every book is ok (the reader declines the others); a side without levels has the best price
    None. The values come as two float64 buffers: every book's bids one after another, and every
    book's asks."""

    __slots__ = ("ok", "bids", "asks", "best_bid", "best_ask", "depth", "keys", "kept_flags", "_bid_values",
                 "_ask_values")

    def __init__(self, bids: list[int], asks: list[int], best_bid: list, best_ask: list, depth: list[int],
                 keys: list, bid_values: bytes, ask_values: bytes) -> None:
        n = len(bids)
        self.ok = [True] * n
        self.bids, self.asks, self.best_bid, self.best_ask, self.depth = bids, asks, best_bid, best_ask, depth
        self.keys = keys
        self.kept_flags = [False] * n
        self._bid_values, self._ask_values = bid_values, ask_values

    def kept(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """As RunLevels.kept()."""
        flags = self.kept_flags
        bid_values = np.frombuffer(self._bid_values, np.float64)
        ask_values = np.frombuffer(self._ask_values, np.float64)
        if all(flags):  # nearly every run: no book seen before
            return (np.array(self.bids, np.int32), bid_values, np.array(self.asks, np.int32), ask_values)
        if not any(flags):
            return None
        keep = np.array(flags, bool)
        nb, na = np.array(self.bids, np.int64), np.array(self.asks, np.int64)
        return (nb[keep].astype(np.int32), bid_values[np.repeat(keep, 2 * nb)],
                na[keep].astype(np.int32), ask_values[np.repeat(keep, 2 * na)])
