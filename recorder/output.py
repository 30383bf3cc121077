"""Rendering query results: an aligned text table, CSV, or JSON (an array of row objects with ISO
8601 UTC times, ready to feed a chart)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math

import pyarrow as pa

FORMATS = ("table", "csv", "json")


def _cell(value) -> object:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (dt.date, dt.timedelta)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_cell(v) for v in value]
    if isinstance(value, dict):
        return {k: _cell(v) for k, v in value.items()}
    return value


def rows(table: pa.Table) -> list[dict]:
    return [{k: _cell(v) for k, v in row.items()} for row in table.to_pylist()]


def render(table: pa.Table, fmt: str, *, max_rows: int | None = None) -> str:
    if fmt == "json":
        return json.dumps(rows(table), indent=None, separators=(",", ":"))
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(table.column_names)
        for row in rows(table):
            writer.writerow(json.dumps(v) if isinstance(v, (list, dict)) else v for v in row.values())
        return out.getvalue().rstrip("\n")
    data = rows(table)
    shown = data[:max_rows] if max_rows else data
    cells = [[_short(v) for v in row.values()] for row in shown]
    names = table.column_names
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    if len(shown) < len(data):
        lines.append(f"... {len(data) - len(shown)} more rows")
    lines.append(f"({len(data)} rows)")
    return "\n".join(lines)


def _short(value) -> str:
    if value is None:
        return ""
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
