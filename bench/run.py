"""`make bench`: every figure side by side with its reference, in one run. Prints a table and
writes bench-out/results.json. Not part of `make test`.

    python -m bench.run [--frames N] [--repeats R] [--memory-frames N] [--query-scale S] [--skip-queries]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

OUT = Path("bench-out")
# Mixes measured on both transports, and mixes measured on the default transport (websockets) only.
BOTH_TRANSPORTS = ("small", "book")
WEBSOCKETS_ONLY = ("books", "trades", "realistic")
LABELS = {"small": "small chance updates (~95 B)", "book": "order books, one market (~300 B)",
          "books": "order books, 200 markets, 8 levels a side (~500 B)", "trades": "InTots trades (~185 B)",
          "realistic": "1,000 outcomes: books, chances, settlements (~315 B)"}


def pinned(args: list[str], cpu: int) -> list[str]:
    """args run on one CPU (taskset), when the machine has two or more and taskset is there: the
    sender on CPU 0, every client on CPU 1."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *args]
    return args


@contextmanager
def sender_running(mix: str, frames: int) -> Iterator[int]:
    """A sender process for the mix, killed on exit; yields its port."""
    proc = subprocess.Popen(pinned([sys.executable, "-m", "bench.sender", "--mix", mix, "--frames", str(frames)], 0),
                            stdout=subprocess.PIPE, text=True)
    try:
        yield int(proc.stdout.readline().split()[1])
    finally:
        proc.kill()


def client(mode: str, transport: str, mix: str, port: int, frames: int, storage: dict | None = None,
           scrape_every: float | None = None) -> dict:
    args = [sys.executable, "-m", "bench.client", "--mode", mode, "--transport", transport, "--mix", mix,
            "--url", f"ws://127.0.0.1:{port}/ws", "--frames", str(frames), "--storage", json.dumps(storage or {})]
    if scrape_every:
        args += ["--scrape-every", str(scrape_every)]
    out = subprocess.run(pinned(args, 1), capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ingest(frames: int, repeats: int) -> dict:
    """Each client `repeats` times, the four interleaved round by round (so a slow spell of the
    machine hits them alike); the best run of each is its figure, every run is kept."""
    results: dict = {}
    for mix in BOTH_TRANSPORTS + WEBSOCKETS_ONLY:
        with sender_running(mix, frames) as port:
            for round_no in range(repeats):
                for transport in ("websockets", "trio-websocket") if mix in BOTH_TRANSPORTS else ("websockets",):
                    for mode in ("bare", "recorder"):
                        r = client(mode, transport, mix, port, frames)
                        key = f"{mix}/{transport}/{mode}"
                        best = results.get(key)
                        runs = (best or {}).get("runs", []) + [round(r["rate"])]
                        if best is None or r["rate"] > best["rate"]:
                            best = r
                        results[key] = {**best, "runs": runs}
                        print(f"  ingest {mix:9} {transport:14} {mode:8} round {round_no + 1}: {r['rate']:>10,.0f} frames/s"
                              f"  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    return results


SCRAPE_EVERY = 1.0  # seconds: Prometheus' default is 15 s and 5 s is already frequent; 1 s is the worst case here


def metrics_cost(frames: int, repeats: int) -> dict:
    """The full recorder on its default transport, small frames, with the window off and with it on
    and /metrics scraped every SCRAPE_EVERY s by another process: the two take turns, round by round,
    in the same run; the best run of each is its figure."""
    results: dict = {}
    with sender_running("small", frames) as port:
        for round_no in range(repeats):
            for label, every in (("off", None), ("on", SCRAPE_EVERY)):
                r = client("recorder", "websockets", "small", port, frames, scrape_every=every)
                best = results.get(label)
                runs = (best or {}).get("runs", []) + [round(r["rate"])]
                if best is None or r["rate"] > best["rate"]:
                    best = r
                results[label] = {**best, "runs": runs}
                print(f"  metrics {label:3} round {round_no + 1}: {r['rate']:>10,.0f} frames/s, event-loop CPU "
                      f"{r['loop_cpu_us_per_frame']:.2f} µs/frame" + (f", {r.get('scrapes', 0)} scrapes" if every else ""),
                      flush=True)
    results["scrape_every"] = SCRAPE_EVERY
    results["rate_on_over_off"] = results["on"]["rate"] / results["off"]["rate"]
    results["loop_cpu_on_over_off"] = results["on"]["loop_cpu_us_per_frame"] / results["off"]["loop_cpu_us_per_frame"]
    print(f"  metrics on / off: rate {results['rate_on_over_off']:.3f}, event-loop CPU per frame "
          f"{results['loop_cpu_on_over_off']:.3f}", flush=True)
    return results


def memory(frames: int) -> dict:
    results = {}
    with sender_running("small", frames) as port:
        for transport in ("websockets", "trio-websocket"):
            r = client("recorder", transport, "small", port, frames)
            results[transport] = r
            print(f"  memory {frames:,} frames on {transport}: peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"durable p50/p99 {r['durable_ms_p50']}/{r['durable_ms_p99']} ms, "
                  f"visible p50/p99 {r['visible_ms_p50']}/{r['visible_ms_p99']} ms", flush=True)
    return results


def ratios(ing: dict) -> dict:
    out = {}
    for mix in WEBSOCKETS_ONLY:
        out[mix] = {"recorder/bare, websockets": ing[f"{mix}/websockets/recorder"]["rate"] / ing[f"{mix}/websockets/bare"]["rate"]}
    for mix in BOTH_TRANSPORTS:
        g = lambda k: ing[f"{mix}/{k}"]["rate"]  # noqa: E731
        out[mix] = {
            # issue 5's reference is the bare trio-websocket client; issue 6 adds the bare websockets one
            "recorder on websockets / bare trio-websocket": g("websockets/recorder") / g("trio-websocket/bare"),
            "recorder/bare, websockets": g("websockets/recorder") / g("websockets/bare"),
            "recorder/bare, trio-websocket": g("trio-websocket/recorder") / g("trio-websocket/bare"),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300_000, help="frames per ingest run")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each ingest client; the best is reported")
    ap.add_argument("--memory-frames", type=int, default=1_000_000)
    ap.add_argument("--query-scale", type=float, default=1.0, help="1.0 = 10M chance rows")
    ap.add_argument("--skip-queries", action="store_true")
    ap.add_argument("--only-metrics", action="store_true", help="run only the metrics on/off ingest comparison")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    results: dict = {"machine": {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count(),
                                 "platform": platform.platform()},
                     "command": " ".join(["python -m bench.run"] + sys.argv[1:]), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "pinning": "taskset: sender on CPU 0, client on CPU 1" if pinned([], 0) else "none"}
    if a.only_metrics:
        print("ingest with the metrics endpoint off and on:", flush=True)
        results["metrics"] = metrics_cost(a.frames, a.repeats)
        (OUT / "metrics.json").write_text(json.dumps(results, indent=1))
        print(f"wrote {OUT / 'metrics.json'}")
        return
    print("ingest (one core for the sender, one for the client):", flush=True)
    results["ingest"] = ingest(a.frames, a.repeats)
    results["ingest_ratios"] = ratios(results["ingest"])
    for mix, rs in results["ingest_ratios"].items():
        for k, v in rs.items():
            print(f"  {mix:9} {k:46} {v:5.2f}")
    print("ingest with the metrics endpoint off and on:", flush=True)
    results["metrics"] = metrics_cost(a.frames, a.repeats)
    print("memory and latency (default flush policy):", flush=True)
    results["memory"] = memory(a.memory_frames)
    print("recovery:", flush=True)
    from bench import recovery

    results["recovery"] = recovery.run(OUT / "recovery")
    print(f"  replayed {results['recovery']['frames']:,} frames at {results['recovery']['replay_rate']:,.0f} frames/s",
          flush=True)
    if not a.skip_queries:
        print("queries (building the dataset takes a while):", flush=True)
        from bench import queries

        q = queries.run(OUT / "queries", scale=a.query_scale)
        results["queries"] = q
        for k in q["query_seconds_ideal"]:
            print(f"  {k:52} compacted {q['query_seconds_compacted'][k] * 1000:8.1f} ms  ideal "
                  f"{q['query_seconds_ideal'][k] * 1000:8.1f} ms  ratio {q['query_ratio_compacted_to_ideal'][k]:.2f}")
        for t, b in q["bytes_per_row_compacted"].items():
            print(f"  storage {t:8} {b:6.2f} bytes/row compacted, {q['bytes_per_row_ideal'][t]:6.2f} ideal")
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
