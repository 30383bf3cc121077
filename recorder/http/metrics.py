"""GET /metrics: the Prometheus text exposition, from prometheus_client on a registry of its own.

Nothing is counted for the metrics: a custom collector turns a Snapshot (status.py) of the counters
the pipeline, the feeds and the storage tasks already keep into metric families at scrape time, so
the per-frame path is exactly what it is with the listener off. prometheus_client writes the
format (escaping, histogram buckets, the content type); it is not on the hot path, so there is
nothing to gain by writing the format here.

The names and labels below are a contract: dashboards, deploy/prometheus/alerts.yml and outside
checks rely on them (README, "Running it in production").
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..feedstate import REASONS
from ..schema import TABLES
from ..storagestats import Durations
from .status import Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def families(snap: Snapshot) -> list[Metric]:
    """Every metric family, from one snapshot (pure)."""
    return [*_feed_families(snap), *_storage_families(snap)]


def _feed_families(snap: Snapshot) -> Iterator[Metric]:
    frames = CounterMetricFamily("recorder_frames", "Frames received (equals the raw rows written, once flushed).",
                                 labels=("feed", "venue"))
    rows = CounterMetricFamily("recorder_rows", "Rows committed to Parquet, by table.", labels=("feed", "table"))
    rejects = CounterMetricFamily("recorder_rejects", "Frames that could not be decoded (kept in rejects).",
                                  labels=("feed",))
    conns = CounterMetricFamily("recorder_connections", "Connections ended (or refused), by reason.",
                                labels=("feed", "reason"))
    up = GaugeMetricFamily("recorder_feed_up", "1 while connected and subscribed, else 0.", labels=("feed",))
    age = GaugeMetricFamily("recorder_last_frame_age_seconds", "Seconds since the feed's last frame (since it"
                            " started, before the first).", labels=("feed",))
    sub_age = GaugeMetricFamily("recorder_subscription_age_seconds", "Seconds since a subscription the venue must"
                                " keep feeding last sent data (accurate to 5% of stale_seconds).",
                                labels=("feed", "subscription"))
    gap = CounterMetricFamily("recorder_gap_seconds", "Seconds not connected and subscribed since start.",
                              labels=("feed",))
    stale = GaugeMetricFamily("recorder_feed_stale_seconds", "The feed's configured stale_seconds.",
                              labels=("feed",))
    paused = GaugeMetricFamily("recorder_feed_paused", "1 while the feed waits at the memory cap (not reading its"
                               " socket), else 0.", labels=("feed",))
    paused_s = CounterMetricFamily("recorder_feed_paused_seconds", "Seconds the feed waited at the memory cap.",
                                   labels=("feed",))
    for f in snap.feeds:
        v = f.view
        frames.add_metric((v.name, v.venue), f.frames)
        for table in TABLES:
            rows.add_metric((v.name, table), f.rows_written.get(table, 0))
        rejects.add_metric((v.name,), f.rejects)
        for reason in REASONS:
            conns.add_metric((v.name, reason), v.connections.get(reason, 0))
        up.add_metric((v.name,), 1.0 if v.up else 0.0)
        age.add_metric((v.name,), f.last_frame_age)
        for sub, a in sorted(v.subscriptions.items()):
            sub_age.add_metric((v.name, sub), a)
        gap.add_metric((v.name,), v.gap_seconds)
        stale.add_metric((v.name,), v.stale_seconds)
        paused.add_metric((v.name,), 1.0 if f.paused else 0.0)
        paused_s.add_metric((v.name,), f.paused_seconds)
    yield from (frames, rows, rejects, conns, up, age, sub_age, gap, stale, paused, paused_s)


def _histogram(name: str, doc: str, d: Durations) -> HistogramMetricFamily:
    buckets = [(repr(float(b)), c) for b, c in zip(d.bounds, d.counts)] + [("+Inf", d.counts[-1])]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=d.total)


def _storage_families(snap: Snapshot) -> Iterator[Metric]:
    st = snap.storage
    yield GaugeMetricFamily("recorder_buffered_rows", "Rows decoded and waiting for the next Parquet flush.",
                            value=st.buffered_rows)
    yield GaugeMetricFamily("recorder_journal_backlog_bytes", "Journal bytes appended but not yet written to disk.",
                            value=st.journal_backlog_bytes)
    yield GaugeMetricFamily("recorder_held_bytes", "Bytes held in memory for the disk (journal queue, buffered rows,"
                            " a flush not yet committed); feeds pause at recorder_memory_limit_bytes.",
                            value=st.held_bytes)
    yield GaugeMetricFamily("recorder_memory_limit_bytes", "storage.max_memory_mb, in bytes.",
                            value=st.memory_limit_bytes)
    yield _histogram("recorder_flush_duration_seconds", "Seconds per Parquet commit (journal fsync, files,"
                     " checkpoint, renames).", st.flush_durations)
    yield GaugeMetricFamily("recorder_last_flush_timestamp_seconds", "Unix time of the last Parquet commit (the"
                            " start time before the first).", value=st.last_flush)
    yield _histogram("recorder_journal_fsync_duration_seconds", "Seconds per journal group commit (write and"
                     " fsync).", st.fsync_durations)
    yield CounterMetricFamily("recorder_disk_errors", "Failed journal writes and Parquet flushes (each retried).",
                              value=st.disk_errors)
    busy = GaugeMetricFamily("recorder_storage_busy_seconds", "Seconds the running flush or fsync has taken so"
                             " far (0 when idle).", labels=("task",))
    busy.add_metric(("flush",), st.flush_busy)
    busy.add_metric(("fsync",), st.fsync_busy)
    yield busy
    yield GaugeMetricFamily("recorder_flush_max_age_seconds", "The configured storage.max_age_seconds.",
                            value=st.flush_max_age)
    yield GaugeMetricFamily("recorder_start_time_seconds", "Unix time the daemon started.", value=snap.started)


class SnapshotCollector:
    """A prometheus_client collector over a snapshot taken at each scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> list[Metric]:
        return families(self._snapshot())


def make_registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
