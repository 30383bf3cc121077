"""The daemon's state at one instant (a Snapshot), and what /status, /healthz and `recorder status`
make of it. `take_snapshot` reads the live objects (the feeds' states, the pipeline's counters, the
storage tasks' stats) on the event loop, without waiting on anything; everything else here is a
pure function of a Snapshot, so it is tested without a daemon.

Nothing secret is in a Snapshot: feed names, venues, connection ids, subscription names (topics
and event ids from the config, never credentials), counts, times and the dataset root.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Iterable

import attrs

from ..feedstate import FeedView
from ..storagestats import Durations


@attrs.frozen(kw_only=True)
class FeedSnap:
    view: FeedView
    frames: int
    rejects: int
    rows: int  # rows decoded from frames (every table but raw), as the pipeline counts them
    last_frame_age: float  # seconds; since the feed started when no frame came yet
    rows_written: dict[str, int]  # table -> rows committed to Parquet
    paused: bool = False  # waiting at the memory cap (storage.max_memory_mb): not reading its socket
    paused_seconds: float = 0.0


@attrs.frozen(kw_only=True)
class StorageSnap:
    root: str
    buffered_rows: int
    journal_backlog_bytes: int
    last_flush: float  # wall clock
    flushes: int
    disk_errors: int
    flush_busy: float  # seconds the running commit has taken so far (0: idle)
    fsync_busy: float
    deadline: float  # /healthz: busy longer than this is wedged
    flush_max_age: float
    flush_durations: Durations
    fsync_durations: Durations
    held_bytes: int = 0  # everything held in memory for the disk (journal queue, buffers, a flush)
    memory_limit_bytes: int = 0  # storage.max_memory_mb


@attrs.frozen(kw_only=True)
class Snapshot:
    time: float  # wall clock
    started: float  # wall clock the daemon started
    feeds: tuple[FeedSnap, ...]
    storage: StorageSnap


@attrs.frozen(kw_only=True)
class Sources:
    """The live objects a snapshot is read from (what the supervisor hands the HTTP window)."""

    config: Any  # config.Config
    pipeline: Any  # pipeline.Pipeline
    feeds: tuple  # feed.Feed, one per configured feed
    started: float  # wall clock


def take_snapshot(src: Sources, now_mono: float, now_wall: float) -> Snapshot:
    p = src.pipeline
    written: dict[str, dict[str, int]] = {}
    for (feed, table), n in p.storage_stats.rows_written.items():
        written.setdefault(feed, {})[table] = n
    feeds = []
    for f in src.feeds:
        stats = p.stats.get(f.cfg.name)
        if stats is not None and stats.last_frame:
            age = max(0.0, now_wall - stats.last_frame / 1e6)
        else:
            age = max(0.0, now_mono - f.state.started_mono)
        feeds.append(FeedSnap(view=f.state.view(now_mono, now_wall, age), frames=stats.frames if stats else 0,
                              rejects=stats.rejects if stats else 0, rows=stats.rows if stats else 0,
                              last_frame_age=age, rows_written=written.get(f.cfg.name, {}),
                              paused=getattr(f, "paused", False), paused_seconds=getattr(f, "paused_seconds", 0.0)))
    s = p.storage_stats
    journal = p.journal
    http = src.config.http
    storage = StorageSnap(
        root=str(p.root), buffered_rows=p.buffers.rows, journal_backlog_bytes=journal.queued_bytes if journal else 0,
        last_flush=s.last_flush, flushes=s.flushes, disk_errors=s.disk_errors,
        flush_busy=_busy(s.flush_busy_since, now_mono), fsync_busy=_busy(s.fsync_busy_since, now_mono),
        deadline=http.storage_deadline if http else 120.0, flush_max_age=src.config.storage.policy.max_age,
        flush_durations=s.flush_durations, fsync_durations=s.fsync_durations,
        held_bytes=p.held_bytes,
        memory_limit_bytes=p.memory.limit_bytes if p.memory is not None else 0)
    return Snapshot(time=now_wall, started=src.started, feeds=tuple(feeds), storage=storage)


def _busy(since: float | None, now: float) -> float:
    return 0.0 if since is None else max(0.0, now - since)


# --- /healthz ---------------------------------------------------------------------------------


def health(snap: Snapshot) -> tuple[bool, str]:
    """(healthy, one-line reason). Healthy while the event loop answers (it is answering this) and
    no storage worker has been busy on one flush or fsync longer than its deadline."""
    st = snap.storage
    for what, busy in (("a Parquet flush", st.flush_busy), ("a journal fsync", st.fsync_busy)):
        if busy > st.deadline:
            return False, f"storage wedged: {what} has been running for {busy:.0f} s (deadline {st.deadline:g} s)"
    return True, "ok"


# --- /status ----------------------------------------------------------------------------------


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _r(x: float) -> float:
    return round(x, 3)


def feed_status(f: FeedSnap) -> dict:
    v = f.view
    return {
        "name": v.name, "venue": v.venue, "state": v.state, "conn_id": v.conn_id, "since": iso(v.since),
        "frames": f.frames, "rows": f.rows, "rejects": f.rejects, "last_frame_age_seconds": _r(f.last_frame_age),
        "subscriptions": {k: _r(a) for k, a in sorted(v.subscriptions.items())},
        "next_reconnect": iso(v.next_reconnect) if v.state == "backing off" else None,
        "stale_seconds": v.stale_seconds, "connections_ended": dict(v.connections),
        "seconds_not_connected": _r(v.gap_seconds), "rows_written": dict(sorted(f.rows_written.items())),
        "paused_for_memory": f.paused, "seconds_paused_for_memory": _r(f.paused_seconds),
    }


def status(snap: Snapshot) -> dict:
    """The /status document."""
    ok, reason = health(snap)
    st = snap.storage
    return {
        "time": iso(snap.time), "started": iso(snap.started), "uptime_seconds": _r(snap.time - snap.started),
        "healthy": ok, "health": reason,
        "feeds": [feed_status(f) for f in snap.feeds],
        "storage": {
            "root": st.root, "buffered_rows": st.buffered_rows, "journal_backlog_bytes": st.journal_backlog_bytes,
            "last_flush": iso(st.last_flush), "last_flush_age_seconds": _r(snap.time - st.last_flush),
            "flushes": st.flushes, "disk_errors": st.disk_errors,
            "held_bytes": st.held_bytes, "memory_limit_bytes": st.memory_limit_bytes,
        },
    }


# --- `recorder status` --------------------------------------------------------------------------


def exit_code(doc: dict) -> int:
    """0 when every feed is subscribed and fresh, 1 otherwise (2, unreachable, is the caller's)."""
    return 0 if all(f.get("state") == "subscribed" for f in doc.get("feeds", [])) else 1


def _age(x: Any) -> str:
    if not isinstance(x, (int, float)) or math.isnan(x):
        return "-"
    return f"{x:.1f}s" if x < 120 else f"{x / 60:.0f}m" if x < 7200 else f"{x / 3600:.1f}h"


def render_table(doc: dict) -> str:
    """The status as a readable table (what `recorder status` prints)."""
    rows = [("FEED", "STATE", "FRAMES", "ROWS", "REJECTS", "LAST FRAME", "SINCE", "NOTE")]
    for f in doc.get("feeds", []):
        subs = f.get("subscriptions") or {}
        stale = [k for k, a in subs.items() if a > f.get("stale_seconds", math.inf)]
        note = ""
        if stale:
            note = "stale: " + ", ".join(f"{k} {_age(subs[k])}" for k in stale)
        elif f.get("next_reconnect"):
            note = f"reconnect at {f['next_reconnect']}"
        elif f.get("conn_id"):
            note = f["conn_id"]
        rows.append((f.get("name", "?"), f.get("state", "?"), str(f.get("frames", 0)), str(f.get("rows", 0)),
                     str(f.get("rejects", 0)), _age(f.get("last_frame_age_seconds")), f.get("since") or "-", note))
    out = _columns(rows)
    st = doc.get("storage", {})
    out.append("")
    out.append(f"storage {st.get('root')}: {st.get('buffered_rows', 0)} rows buffered, "
               f"{st.get('journal_backlog_bytes', 0)} journal bytes not yet written, last flush "
               f"{_age(st.get('last_flush_age_seconds'))} ago ({st.get('flushes', 0)} flushes), "
               f"{st.get('disk_errors', 0)} disk errors")
    out.append(f"health: {doc.get('health', '?')}")
    return "\n".join(out)


def _columns(rows: Iterable[tuple[str, ...]]) -> list[str]:
    rows = list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
