"""`make bench-peer`: the recorder against a widely used open-source feed handler, same run, same
core pinning. cryptofeed records a loopback Binance-style aggTrade stream (~200-byte frames, one
trade each) to Parquet; the recorder records InTots trade frames of the same size (one print each)
to Parquet, journaled, with every raw frame kept. Each runs `--repeats` times, the two taking
turns; every run is reported, and the ratio of the best runs and run by run. Not part of
`make test`. Writes bench-out/peer.json.

cryptofeed needs Python 3.13 or later: it is installed with pip into a throw-away venv
(bench-out/peer-venv) made by the first of $PEER_PYTHON, python3.13, python3.14 or
/root/.pyenv/versions/3.13.0/bin/python3.13 found. Without one the comparison is skipped, and
peer.json says so.

    python -m bench.peer [--frames N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run import OUT, client, pinned, sender_running

ROOT = Path(__file__).resolve().parent.parent
VENV = OUT / "peer-venv"
CANDIDATES = ("python3.13", "python3.14", "/root/.pyenv/versions/3.13.0/bin/python3.13")


def find_python() -> str | None:
    for name in filter(None, (os.environ.get("PEER_PYTHON"), *CANDIDATES)):
        path = shutil.which(name)
        if path is None:
            continue
        version = subprocess.run([path, "-c", "import sys; print(sys.version_info >= (3, 13))"], capture_output=True,
                                 text=True)
        if version.stdout.strip() == "True":
            return path
    return None


def peer_python() -> Path | None:
    """The throw-away venv's python with cryptofeed and pyarrow installed (made once)."""
    py = VENV / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import cryptofeed, pyarrow"], capture_output=True).returncode == 0:
        return py
    base = find_python()
    if base is None:
        return None
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "cryptofeed", "pyarrow"],
                   check=True)
    return py


def cryptofeed_run(py: Path, port: int, frames: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as out:
        args = pinned([str(py), str(ROOT / "bench" / "peer_cryptofeed.py"), "--url", f"ws://127.0.0.1:{port}",
                       "--frames", str(frames), "--out", out], 1)
        done = subprocess.run(args, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    py = peer_python()
    if py is None:
        result = {"skipped": "no Python 3.13 or later on this machine (cryptofeed needs it); set PEER_PYTHON"}
        print(result["skipped"])
    else:
        version = subprocess.run([py, "-c", "import cryptofeed, sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True).stdout.strip()
        runs: dict[str, list] = {"cryptofeed": [], "recorder": []}
        with sender_running("aggtrade", a.frames) as agg_port, sender_running("trades", a.frames) as trades_port:
            for round_no in range(a.repeats):
                cf = cryptofeed_run(py, agg_port, a.frames)
                rec = client("recorder", "websockets", "trades", trades_port, a.frames)
                runs["cryptofeed"].append(cf)
                runs["recorder"].append(rec)
                print(f"  round {round_no + 1}: cryptofeed {cf['rate']:>9,.0f} frames/s (peak RSS {cf['peak_rss_mb']:.0f} MB)"
                      f"  recorder {rec['rate']:>9,.0f} frames/s (peak RSS {rec['peak_rss_mb']:.0f} MB)"
                      f"  ratio {rec['rate'] / cf['rate']:.2f}", flush=True)
        best = {k: max(v, key=lambda r: r["rate"]) for k, v in runs.items()}
        result = {"python": version, "frames": a.frames, "runs": runs, "best": best,
                  "ratio_best": best["recorder"]["rate"] / best["cryptofeed"]["rate"],
                  "ratio_by_round": [r["rate"] / c["rate"] for r, c in zip(runs["recorder"], runs["cryptofeed"])],
                  "command": " ".join(["python -m bench.peer"] + sys.argv[1:])}
        print(f"  recorder / cryptofeed, best runs: {result['ratio_best']:.2f} (target >= 1.5)")
    (OUT / "peer.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {OUT / 'peer.json'}")


if __name__ == "__main__":
    main()
