"""Helpers shared by tests: a tiny synthetic venue decoder and pipeline runners."""

from __future__ import annotations

import json
from pathlib import Path

from recorder import journal as jr
from recorder.errors import DecodeError
from recorder.pipeline import Pipeline
from recorder.records import Chance


class SyntheticDecoder:
    """Frames {"i": n, "m": market, "o": outcome, "p": prob, "t": us} -> one chance row each.

    Keeps a count in its state, so tests can check that state survives a crash."""

    def __init__(self) -> None:
        self.count = 0

    def decode(self, text, meta):
        try:
            d = json.loads(text)
            rec = Chance(ts_event=d["t"], market=d["m"], outcome=d["o"], probability=float(d["p"]), origin="synthetic",
                         **meta.common())
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"bad synthetic frame: {exc}") from None
        self.count += 1
        return [rec]

    def state(self):
        return {"count": self.count}

    def restore(self, state):
        self.count = state.get("count", 0)


def open_pipeline(root: Path, journal: Path | None = None, **kw) -> Pipeline:
    return Pipeline(root / "data", journal or root / "journal", lambda feed: SyntheticDecoder(), **kw).open()


def frame(i: int, *, ts: int = 1_760_000_000_000_000, market: str = "m1", conn: str = "c1", feed: str = "f1") -> jr.Entry:
    text = json.dumps({"i": i, "m": market, "o": "Yes", "p": (i % 100) / 100, "t": ts + i * 1000})
    return jr.Entry(kind=jr.Kind.FRAME, ts_recv=ts + i * 1000 + 5, seq=i, feed=feed, venue="synthetic", conn_id=conn,
                    text=text)


def session(kind: jr.Kind, conn: str, ts: int, text: str = "", feed: str = "f1") -> jr.Entry:
    return jr.Entry(kind=kind, ts_recv=ts, seq=0, feed=feed, venue="synthetic", conn_id=conn, text=text)
