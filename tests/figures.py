"""Scenario figures: each reliability scenario reports what it measured; `make soak` turns the
collected files into docs/RELIABILITY.md (tests/reliability_report.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

FIGURES = Path(os.environ.get("RELIABILITY_OUT", Path(__file__).resolve().parent.parent / "bench-out" / "reliability"))


def report(name: str, **figures) -> None:
    print(f"\n{name}: {figures}")
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{name}.json").write_text(json.dumps(figures, default=str))
