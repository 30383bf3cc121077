"""A lake on object storage: moto's S3 emulator (not AWS) on loopback. pyarrow writes, DuckDB's
httpfs reads and merges; a kill at a commit point and a server failing uploads lose nothing."""

from __future__ import annotations

import subprocess
import threading
import time

from lakehelp import lake_settings
from pgserver import postgres  # noqa: F401 (the fixture)
from s3server import SECRET, s3  # noqa: F401 (the fixture)
from test_lake_crash import run_writer, writer_args

from recorder.store.lake import LakeStore
from recorder.store.maintenance import maintain


def check_s3_lake(settings, durable: dict[str, int]) -> int:
    with LakeStore(settings).open_dataset() as ds:
        raw = ds.sql("SELECT conn_id, seq, count(*) AS n FROM raw GROUP BY ALL").to_pylist()
        chance = ds.sql("SELECT count(*) AS n FROM chance").to_pylist()[0]["n"]
        ledger = ds.sql("SELECT writer, flush, count(*) AS n FROM lake.recorder_ledger GROUP BY ALL").to_pylist()
    assert all(r["n"] == 1 for r in raw), "a frame is in the lake twice"
    assert all(r["n"] == 1 for r in ledger), "a flush is in the ledger twice"
    seqs: dict[str, list[int]] = {}
    for r in raw:
        seqs.setdefault(r["conn_id"], []).append(r["seq"])
    for conn, want in durable.items():
        got = sorted(seqs.get(conn, []))
        assert got == list(range(1, len(got) + 1)), f"{conn}: frames missing in the middle"
        assert len(got) >= want, f"{conn}: {want} fsynced, {len(got)} in the lake"
    assert chance == len(raw)
    return len(raw)


def test_s3_lake_survives_a_kill_and_failing_uploads(postgres, s3, tmp_path):
    """Into an S3 lake: a writer killed between its checkpoint and the catalog commit recovers
    exactly; then uploads fail for four seconds in the middle of a run (503 from the server) and
    the writer keeps everything and finishes; maintenance merges over httpfs. Every frame once,
    and the S3 secret is in no log line."""
    settings = lake_settings(postgres, tmp_path / "unused")
    settings = type(settings)(catalog=settings.catalog, data_path=f"s3://{s3.bucket}/lake-{tmp_path.name}/",
                              password_env=settings.password_env, password=settings.password)
    status, durable1 = run_writer(tmp_path, settings, 1, 8_000, crash_at="checkpointed:2")
    assert status == 137
    proc = subprocess.Popen(writer_args(tmp_path, settings, 2, 150_000, "run", "--pause=0.002", "--max-age=0.3"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("ready")

    def outage() -> None:
        time.sleep(1.0)
        s3.failing.set()  # longer than the S3 client's own retries (3 attempts), so a flush fails
        time.sleep(4.0)
        s3.failing.clear()

    t = threading.Thread(target=outage)
    t.start()
    out, err = proc.communicate(timeout=120)
    t.join()
    assert proc.returncode == 0 and "closed" in out, err[-2000:]
    assert s3.proxy.failed > 0, "no upload failed: the outage missed the run"
    assert "works again" in err and SECRET not in err
    assert not maintain(settings).skipped
    frames = check_s3_lake(settings, {"run1": durable1, "run2": 150_000})
    assert frames >= durable1 + 150_000
