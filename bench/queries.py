"""Query benchmark data: a 10-million-row chance dataset written by the recorder's own writer with
its default flush policy (100k rows per flush), then compacted; and the ideal layout (one sorted
file per partition) of the same rows. Book and trades tables of 1M rows each, likewise."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder import compact, layout, schema
from recorder.dataset import Dataset
from recorder.writer import Flush, sort_keys, write_files

T0 = 1_767_225_600_000_000  # 2026-01-01
DAY = 86_400_000_000
FLUSH_ROWS = 100_000  # the default storage.max_rows


def chance_batch(rng: random.Random, start: int, n: int, days: int) -> pa.RecordBatch:
    span = days * DAY
    ts = [T0 + (start + i) * (span // 10_000_000) for i in range(n)]  # time-ordered, as received
    cols = {
        "feed": pa.array(["bench"] * n), "ts_event": pa.array(ts, schema.TIMESTAMP),
        "ts_recv": pa.array([t + 150_000 for t in ts], schema.TIMESTAMP), "conn_id": pa.array(["c1"] * n),
        "seq": pa.array(range(start + 1, start + n + 1), pa.int64()),
        "market": pa.array([f"mkt-{rng.randrange(50):03d}" for _ in range(n)]),
        "outcome": pa.array([rng.choice(("Yes", "No")) for _ in range(n)]),
        "probability": pa.array([round(rng.random(), 4) for _ in range(n)]),
        "origin": pa.array(["outpoll"] * n), "source": pa.array(["live"] * n),
    }
    return pa.RecordBatch.from_pydict(cols, schema=schema.load("chance").file_schema)


def book_batch(rng, start, n, days):
    span = days * DAY
    ts = [T0 + (start + i) * (span // 1_000_000) for i in range(n)]
    levels = [tuple((round(0.5 - 0.01 * k, 2), float(rng.randint(1, 900))) for k in range(3)) for _ in range(n)]
    cols = {"feed": pa.array(["bench"] * n), "ts_event": pa.array(ts, schema.TIMESTAMP),
            "ts_recv": pa.array(ts, schema.TIMESTAMP), "conn_id": pa.array(["c1"] * n),
            "seq": pa.array(range(start + 1, start + n + 1), pa.int64()),
            "market": pa.array([f"mkt-{rng.randrange(50):03d}" for _ in range(n)]), "outcome": pa.array(["Yes"] * n),
            "bids": pa.array(levels, schema.load("book").file_schema.field("bids").type),
            "asks": pa.array(levels, schema.load("book").file_schema.field("asks").type),
            "best_bid": pa.array([l[0][0] for l in levels]), "best_ask": pa.array([l[0][0] + 0.02 for l in levels]),
            "last": pa.array([None] * n, pa.float64()), "depth": pa.array([6] * n, pa.int32())}
    return pa.RecordBatch.from_pydict(cols, schema=schema.load("book").file_schema)


def trade_batch(rng, start, n, days):
    span = days * DAY
    ts = [T0 + (start + i) * (span // 1_000_000) for i in range(n)]
    price = [round(rng.random(), 3) for _ in range(n)]
    size = [float(rng.randint(1, 500)) for _ in range(n)]
    cols = {"feed": pa.array(["bench"] * n), "ts_event": pa.array(ts, schema.TIMESTAMP),
            "ts_recv": pa.array(ts, schema.TIMESTAMP), "conn_id": pa.array(["c1"] * n),
            "seq": pa.array(range(start + 1, start + n + 1), pa.int64()),
            "market": pa.array([f"mkt-{rng.randrange(50):03d}" for _ in range(n)]), "event": pa.array([None] * n, pa.string()),
            "outcome": pa.array(["Yes"] * n), "side": pa.array([rng.choice(("BUY", "SELL")) for _ in range(n)]),
            "price": pa.array(price), "size": pa.array(size), "notional": pa.array([p * s for p, s in zip(price, size)]),
            "notional_minor": pa.array([None] * n, pa.int64()), "trader": pa.array([None] * n, pa.string()),
            "trade_id": pa.array([str(start + i) for i in range(n)]), "source": pa.array(["live"] * n)}
    return pa.RecordBatch.from_pydict(cols, schema=schema.load("trades").file_schema)


MAKERS = {"chance": (chance_batch, 10_000_000), "book": (book_batch, 1_000_000), "trades": (trade_batch, 1_000_000)}


def build(root: Path, *, scale: float = 1.0, days: int = 3) -> dict:
    """Write the recorder-layout dataset and the ideal one; returns row counts."""
    rng = random.Random(42)
    counts = {}
    flush_seq = 0
    ideal_parts: dict = {}
    for table, (make, rows) in MAKERS.items():
        rows = int(rows * scale)
        counts[table] = rows
        for start in range(0, rows, FLUSH_ROWS):
            batch = make(rng, start, min(FLUSH_ROWS, rows - start), days)
            day_idx = pc.divide(pc.cast(batch.column("ts_event"), pa.int64()), DAY)
            parts = {}
            for day in sorted(set(day_idx.to_pylist())):
                mask = pc.equal(day_idx, day)
                parts[(table, "outpoll", day)] = [batch.filter(mask)]
                ideal_parts.setdefault((table, day), []).append(batch.filter(mask))
            flush_seq += 1
            pairs = write_files(Flush(partitions=parts, rows=batch.num_rows), root / "recorded", instance="bench",
                                flush_seq=flush_seq)
            for tmp, final in pairs:
                layout.publish(tmp, final)
    for (table, day), batches in ideal_parts.items():
        t = pa.Table.from_batches(batches).sort_by(sort_keys(table))
        d = layout.partition_dir(root / "ideal", table, "outpoll", day)
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / "ideal.parquet", compression="zstd", row_group_size=1_000_000)
    return counts


QUERIES = {
    "chance_history (1m buckets, one market, one day)": ("chance_history", {"market": "mkt-007", "interval": "1m",
                                                          "start": "2026-01-02T00:00:00Z", "end": "2026-01-03T00:00:00Z"}),
    "latest": ("latest", {}),
    "book_at": ("book_at", {"market": "mkt-007", "at": "2026-01-02T12:00:00Z"}),
    "trade_volume (1h, one market)": ("trade_volume", {"market": "mkt-007", "interval": "1h"}),
}


def time_queries(*roots: Path, repeat: int = 9) -> list[dict]:
    """Best time of each query on each dataset, the datasets taking turns run by run (so a slow
    spell of the machine falls on both sides of a comparison alike)."""
    out: list[dict] = [{} for _ in roots]
    sets = [Dataset.open(r) for r in roots]
    try:
        for label, (name, params) in QUERIES.items():
            for ds in sets:
                ds.query(name, **params)  # warm the OS cache
            best = [float("inf")] * len(sets)
            for _ in range(repeat):
                for i, ds in enumerate(sets):
                    t = time.perf_counter()
                    ds.query(name, **params)
                    best[i] = min(best[i], time.perf_counter() - t)
            for i in range(len(sets)):
                out[i][label] = best[i]
    finally:
        for ds in sets:
            ds.close()
    return out


def storage(root: Path, counts: dict) -> dict:
    return {t: sum(f.stat().st_size for f in layout.data_files(root, t)) / n for t, n in counts.items()}


def run(work: Path, *, scale: float = 1.0) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    counts = build(work, scale=scale)
    built = time.perf_counter() - t
    files_before = len(layout.data_files(work / "recorded"))
    (before,) = time_queries(work / "recorded", repeat=2)
    t = time.perf_counter()
    compact.compact(work / "recorded")
    compact_s = time.perf_counter() - t
    after, ideal = time_queries(work / "recorded", work / "ideal")
    return {"rows": counts, "build_seconds": built, "files_before_compaction": files_before,
            "files_after_compaction": len(layout.data_files(work / "recorded")), "compact_seconds": compact_s,
            "query_seconds_uncompacted": before, "query_seconds_compacted": after, "query_seconds_ideal": ideal,
            "query_ratio_compacted_to_ideal": {k: after[k] / ideal[k] for k in after},
            "bytes_per_row_compacted": storage(work / "recorded", counts), "bytes_per_row_ideal": storage(work / "ideal", counts)}
