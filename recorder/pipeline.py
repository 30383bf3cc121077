"""Journal first, Parquet derived: the recorder's durable core.

    entry ─► journal.append ─► apply: raw row, decoder rows, session rows ─► Buffers
    cut()    (event loop)   : take the buffers, the journal position and the decoders' state
    commit() (worker thread): fsync the journal, the store writes the files (invisible), write the
                              checkpoint (position, state, what the store must publish), then the
                              store publishes them (plain: renames; lake: one catalog commit)

The checkpoint is the commit point. Recovery reads it, finishes its renames (roll forward),
deletes temporary files of flushes that never committed, then replays the journal from the
checkpoint's position through the decoders: what was fsynced is never lost, and what was
committed is never written twice. Connections left open by a crash get a `sessions` row closed
at their last frame.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Callable

import attrs
import orjson

from . import journal as jr
from .errors import DecodeError, JournalError
from .fsutil import write_atomic
from .records import Reject, Session
from .storagestats import StorageStats, rows_by_feed
from .store import Store, crashpoints
from .store.plain import PlainStore
from .timeutil import US_PER_DAY
from .venues.base import Decoder, FrameMeta, RawOnlyDecoder
from .writer import Buffers, Flush

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.json"
CRASH_REASON = "recorder stopped without closing this connection (crash or kill)"
DecoderFactory = Callable[[str], Decoder | None]


@attrs.define
class OpenSession:
    venue: str
    feed: str
    url: str
    connected: int
    subscribed: int | None = None
    first_frame: int | None = None
    last_frame: int | None = None
    frames: int = 0


@attrs.frozen(kw_only=True)
class Job:
    """One flush: the rows cut from the buffers and the state to commit with them."""

    flush: Flush
    flush_seq: int
    position: jr.Position
    state: str  # JSON: decoder states and open sessions at `position`


@attrs.frozen(kw_only=True)
class Staged:
    """A flush whose files are durable and named in the checkpoint, not yet published."""

    flush_seq: int
    pending: list  # the store's description of the files (JSON)


@attrs.define
class FeedStats:
    frames: int = 0
    rows: int = 0
    rejects: int = 0
    last_frame: int | None = None


def merge_jobs(jobs: list[Job]) -> Job:
    """Jobs cut one after another as one: every partition's batches in order, and the last job's
    number, journal position and state (it covers everything cut up to there)."""
    partitions: dict = {}
    for job in jobs:
        for key, batches in job.flush.partitions.items():
            partitions.setdefault(key, []).extend(batches)
    flush = Flush(partitions=partitions, rows=sum(j.flush.rows for j in jobs), nbytes=sum(j.flush.nbytes for j in jobs))
    last = jobs[-1]
    return Job(flush=flush, flush_seq=last.flush_seq, position=last.position, state=last.state)


def _dump_state(state: dict) -> str:
    """JSON of the decoders' state: their dedupe windows hold tens of thousands of keys and are
    dumped at every cut, so orjson; the standard library for anything orjson will not take."""
    try:
        return orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(state, separators=(",", ":"))


class Pipeline:
    """Owns the journal, the decoders and the buffers. Not thread-safe: one event loop drives it;
    only `commit()` runs in a worker thread, on a Job cut beforehand."""

    def __init__(self, root: Path, journal_dir: Path, decoder_factory: DecoderFactory, *, batch_rows: int = 8192,
                 segment_bytes: int = 64 * 1024 * 1024, store: Store | None = None) -> None:
        self.root = Path(root)
        self.store = store if store is not None else PlainStore(self.root)
        self.journal_dir = Path(journal_dir)
        self._factory = decoder_factory
        self._segment_bytes = segment_bytes
        self.buffers = Buffers(batch_rows=batch_rows)
        self.decoders: dict[str, Decoder] = {}
        self._runners: dict[str, Callable | None] = {}  # feed -> its decoder's decode_run, if any
        self.sessions: dict[str, OpenSession] = {}
        self.stats: dict[str, FeedStats] = {}
        self.flush_seq = 0
        self.committed: jr.Position = (0, 0)
        self.replayed = 0
        self.journal: jr.Journal | None = None
        self.unfinished: Job | None = None  # cut but not yet committed (a commit failed, or is running)
        self.staged: Staged | None = None  # in the checkpoint, not yet published (a publish failed)
        self.held: list[Job] = []  # cut, held back by the flusher (commit(defer_publish=True)): written with the next
        self.gate = None  # storage.FlushGate, set by the storage tasks: feeds wait at it when far behind
        self.storage_stats = StorageStats()  # for the daemon's window (/metrics, /status)
        self.memory = None  # memcap.MemoryCap, set by the storage tasks: feeds wait at it at storage.max_memory_mb
        self._lock_fd: int | None = None
        self.instance = ""

    # --- opening and recovery -------------------------------------------------------------

    def open(self) -> "Pipeline":
        """Lock the journal, recover from the last checkpoint, and start a new journal segment."""
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self.instance = self._instance_id()
        self.store.bind_writer(self.journal_dir, self.instance)
        checkpoint = self._read_checkpoint()
        self.flush_seq = checkpoint.get("flush_seq", 0)
        if checkpoint.get("pending"):
            self.staged = Staged(flush_seq=self.flush_seq, pending=checkpoint["pending"])
            self._publish_recovered()
        self.store.remove_strays(self.flush_seq)
        # A checkpoint older than what the store holds (moved away, restored from a backup): number
        # new flushes after the store's, so none is taken for one committed before.
        self.flush_seq = max(self.flush_seq, self.store.last_flush())
        self.committed = tuple(checkpoint.get("position", (0, 0)))
        self._restore(checkpoint)
        frames, frame, apply_frames = jr.Kind.FRAMES, jr.Kind.FRAME, self._apply_frames
        for _pos, (kind, ts, seq, feed, venue, conn_id, text) in jr.read_fields_from(self.journal_dir, self.committed):
            if kind == frames:
                apply_frames(feed, venue, conn_id, seq, ts, text)
                self.replayed += len(text)
                continue
            if kind == frame:
                apply_frames(feed, venue, conn_id, seq, ts, [text])
            else:
                self._apply(jr.Entry(kind=jr.Kind(kind), ts_recv=ts, seq=seq, feed=feed, venue=venue,
                                     conn_id=conn_id, text=text))
            self.replayed += 1
        if self.replayed:
            log.info("replayed %d journal entries beyond the last commit", self.replayed)
        self.journal = jr.Journal(self.journal_dir, segment_bytes=self._segment_bytes)
        for conn_id, s in list(self.sessions.items()):
            ts = s.last_frame or s.connected
            self.ingest(jr.Entry(kind=jr.Kind.CLOSE, ts_recv=ts, seq=0, feed=s.feed, venue=s.venue, conn_id=conn_id,
                                 text=CRASH_REASON))
        return self

    def _lock(self) -> None:
        fd = os.open(self.journal_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise JournalError(
                    f"journal {self.journal_dir} is in use by another recorder; give each recorder its own"
                    " storage.journal directory (they may share storage.root)") from None
            raise
        self._lock_fd = fd

    def _instance_id(self) -> str:
        path = self.journal_dir / "instance"
        if path.exists():
            return path.read_text().strip()
        instance = secrets.token_hex(4)
        write_atomic(path, instance.encode())
        return instance

    def _read_checkpoint(self) -> dict:
        path = self.journal_dir / CHECKPOINT
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise JournalError(f"checkpoint {path} is unreadable ({exc}); it is written atomically, so this"
                               " means outside damage: move it away to replay the whole journal") from None

    def _publish_recovered(self) -> None:
        """Publish the flush the checkpoint names (roll forward). A store that may be unreachable
        for a while (a lake's catalog) raises StoreUnavailable: the flush stays staged and the
        storage task publishes it before the next one, retrying; recording starts meanwhile."""
        from .store.errors import StoreUnavailable

        try:
            self._publish_staged()
        except StoreUnavailable as exc:
            log.warning("flush %d is staged but not yet published (%s); retrying from the storage task",
                        self.staged.flush_seq, exc)

    def _restore(self, checkpoint: dict) -> None:
        state = checkpoint.get("state") or {}
        for feed, decoder_state in state.get("decoders", {}).items():
            self._decoder(feed).restore(decoder_state)
        self.sessions = {cid: OpenSession(**s) for cid, s in state.get("sessions", {}).items()}

    def _decoder(self, feed: str) -> Decoder:
        d = self.decoders.get(feed)
        if d is None:
            d = self._factory(feed)
            if d is None:
                log.warning("feed %r is in the journal but not in the config: keeping its raw frames only", feed)
                d = RawOnlyDecoder()
            self.decoders[feed] = d
            self._runners[feed] = getattr(d, "decode_run", None)
        return d

    # --- the live path --------------------------------------------------------------------

    @property
    def held_bytes(self) -> int:
        """Bytes held in memory until they are written: the journal's queue, the buffered rows, and
        flushes cut but not yet committed (held back, or being committed) (memcap.py)."""
        return ((self.journal.queued_bytes if self.journal is not None else 0) + self.buffers.held_bytes
                + sum(job.flush.nbytes for job in self.unpublished_jobs()))

    def unpublished_jobs(self) -> list[Job]:
        """Flushes cut but not yet visible to readers (the live page adds their rows): held back
        by the flusher, and the one being committed. Their rows are in neither the buffers nor
        the store."""
        return self.held + ([self.unfinished] if self.unfinished is not None else [])

    def ingest(self, entry: jr.Entry) -> None:
        """Journal an entry, then decode it into the buffers."""
        self.journal.append(entry)
        self._apply(entry)

    def ingest_frames(self, feed: str, venue: str, conn_id: str, first_seq: int, ts_recv: int,
                      texts: list[str]) -> bool:
        """Frames received together (one socket read), numbered first_seq, first_seq + 1, ...:
        one journal entry, then each frame decoded into the buffers. The hot path. Returns True
        when the decoder found every frame a plain data push (its `data_only`, venues/base.py):
        nothing in the run for the control side."""
        data, lengths = self.journal.append_frames(feed, venue, conn_id, first_seq, ts_recv, texts)
        return self._apply_frames(feed, venue, conn_id, first_seq, ts_recv, texts, data, lengths)

    def _apply(self, e: jr.Entry) -> None:
        if e.kind == jr.Kind.FRAME:
            self._apply_frames(e.feed, e.venue, e.conn_id, e.seq, e.ts_recv, [e.text])
        elif e.kind == jr.Kind.OPEN:
            self.sessions[e.conn_id] = OpenSession(venue=e.venue, feed=e.feed, url=e.text, connected=e.ts_recv)
        elif e.kind == jr.Kind.SUBSCRIBED:
            s = self.sessions.get(e.conn_id)
            if s is not None and s.subscribed is None:
                s.subscribed = e.ts_recv
        elif e.kind == jr.Kind.CLOSE:
            s = self.sessions.pop(e.conn_id, None)
            if s is not None:
                self.buffers.add(Session(
                    venue=s.venue, feed=s.feed, ts_event=None, ts_recv=e.ts_recv, conn_id=e.conn_id, url=s.url,
                    connected=s.connected, subscribed=s.subscribed, first_frame=s.first_frame,
                    last_frame=s.last_frame, closed=e.ts_recv, close_reason=e.text, frames=s.frames))

    def _apply_frames(self, feed: str, venue: str, conn_id: str, first_seq: int, ts: int, texts: list[str],
                      data: memoryview | None = None, lengths: memoryview | bytes | None = None) -> bool:
        """Raw rows, then decoded rows of a run of frames. `data` and `lengths` are the run's
        UTF-8 bytes and packed u32 lengths when the journal has just encoded them (live path).
        Returns the decoder's `data_only` verdict on the run (see ingest_frames)."""
        n = len(texts)
        s = self.sessions.get(conn_id)
        if s is not None:
            s.frames += n
            s.last_frame = ts
            if s.first_frame is None:
                s.first_frame = ts
        stats = self.stats.get(feed)
        if stats is None:
            stats = self.stats[feed] = FeedStats()
        stats.frames += n
        stats.last_frame = ts
        buffers = self.buffers
        buffers.add_frames(venue, ts // US_PER_DAY, feed, ts, conn_id, first_seq, texts, data, lengths)  # raw rows
        decoder = self.decoders.get(feed) or self._decoder(feed)
        decode, decode_one = decoder.decode, self._decode_one
        rows = 0
        # One FrameMeta for the run, its seq moved frame by frame: decoders read it only during decode().
        meta = FrameMeta(venue=venue, feed=feed, conn_id=conn_id, seq=first_seq, ts_recv=ts)
        run = self._runners.get(feed)
        if run is not None:  # the decoder takes the whole run (see base.Decoder.decode_run)

            def slow(i: int) -> None:
                nonlocal rows
                meta.seq = first_seq + i
                rows += decode_one(decode, texts[i], meta, stats)

            fast = run(texts, meta, buffers, slow)
            buffers.rows += fast
            stats.rows += rows + fast
            return getattr(decoder, "data_only", False) is True
        seq = first_seq
        for text in texts:
            meta.seq = seq
            seq += 1
            rows += decode_one(decode, text, meta, stats)
        stats.rows += rows
        return False

    def _decode_one(self, decode, text: str, meta: FrameMeta, stats: FeedStats) -> int:
        """One frame through decode() into the buffers (or rejects); the rows it gave."""
        buffers = self.buffers
        try:
            records = decode(text, meta)
        except DecodeError as exc:
            stats.rejects += 1
            buffers.add(Reject(ts_event=None, error=str(exc), payload=text, **meta.common()))
            return 0
        for r in records:
            if type(r) is tuple:  # a record given as a row (records.py)
                buffers.add_row(*r)
            else:
                buffers.add(r)
        return len(records)

    # --- committing -----------------------------------------------------------------------

    def cut(self) -> Job:
        """Take what is buffered, with the journal position and state that go with it."""
        state = {
            "decoders": {feed: d.state() for feed, d in self.decoders.items()},
            "sessions": {cid: attrs.asdict(s) for cid, s in self.sessions.items()},
        }
        self.flush_seq += 1
        return Job(flush=self.buffers.cut(), flush_seq=self.flush_seq, position=self.journal.position,
                   state=_dump_state(state))

    def next_job(self) -> Job:
        """The job to commit next: the unfinished one if a commit failed, else a new cut."""
        if self.unfinished is None:
            self.unfinished = self.cut()
        return self.unfinished

    def commit(self, job: Job, *, defer_publish: bool = False) -> None:
        """Make a Job durable and visible (worker thread). Safe to call again after it failed:
        a job whose checkpoint is written is only published again, never written again.

        `defer_publish` (the flusher asks for it when the store's publish_interval has not passed
        since its last publish): the job is only held, in memory (its rows are in the journal,
        fsynced by the group commit, and the checkpoint stays behind them); the next commit
        writes the held jobs and its own as one flush, one file per partition, published at once."""
        if self.staged is not None and self.staged.flush_seq != job.flush_seq:
            self._publish_staged()  # recovered from the checkpoint: it goes first
        if defer_publish and self.staged is None:
            self.held.append(job)
        else:
            if self.staged is None:
                whole = merge_jobs(self.held + [job]) if self.held else job
                self.checkpoint(whole)
                self.storage_stats.add_written(rows_by_feed(whole.flush.partitions))
            self._publish_staged()
            self.committed = job.position
            self.held = []
            self.journal.remove_before(job.position)
        if self.unfinished is job:
            self.unfinished = None

    def checkpoint(self, job: Job) -> list:
        """Step 1 of a commit: fsync the journal, have the store write the files (durable, not
        yet visible), then the checkpoint naming them (the local commit point). Returns what the
        store still has to publish."""
        self.journal.sync()
        pending = self.store.checkpoint_files(job.flush, job.flush_seq)
        crashpoints.reach("files_written")
        head = {"version": 1, "instance": self.instance, "flush_seq": job.flush_seq, "rows": job.flush.rows,
                "position": list(job.position), "pending": pending}
        checkpoint = json.dumps(head)[:-1] + ', "state": ' + job.state + "}"
        write_atomic(self.journal_dir / CHECKPOINT, checkpoint.encode())
        self.staged = Staged(flush_seq=job.flush_seq, pending=pending)
        crashpoints.reach("checkpointed")
        return pending

    def _publish_staged(self) -> None:
        """Step 2: the store makes the staged files visible (recovery redoes this from the checkpoint)."""
        self.store.publish(self.staged.flush_seq, self.staged.pending)
        self.staged = None

    def close(self) -> None:
        """Commit what is left and release the journal (the daemon's last step)."""
        from .store.errors import StoreUnavailable

        if self.journal is not None:
            try:
                while (self.unfinished is not None or self.buffers.rows or self.journal.position != self.committed
                       or self.staged is not None or self.held):
                    self.commit(self.next_job())
            except StoreUnavailable as exc:
                self.journal.sync()
                log.error("%s: what was not committed is in the journal (fsynced) and is committed at the next"
                          " start", exc)
            self.journal.close()
            self.journal = None
        self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
