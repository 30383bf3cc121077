"""Named queries: the SQL files in `queries/`, their header comments, and parameter parsing.

A query file starts with comment lines:

    -- NAME: what it is for (continued on indented comment lines)
    -- param NAME: TYPE[ = DEFAULT]. What it means.
    -- columns: a, b, c

Types: string, timestamp (ISO 8601, or epoch seconds; `now`), interval (30s, 5m, 1h, 1d, or
'5 minutes'), integer, number. A default of `any` means NULL (no filter); no default means the
parameter is required.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import attrs

from .errors import QueryError
from .timeutil import UTC

# The top-level queries/ folder, mapped into the package as recorder.named_queries at build time
# (pyproject.toml), so the installed wheel carries it.
QUERY_PACKAGE = "recorder.named_queries"
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")
_UNITS = {
    "us": 1, "ms": 1_000, "s": 1_000_000, "sec": 1_000_000, "second": 1_000_000, "seconds": 1_000_000,
    "m": 60_000_000, "min": 60_000_000, "minute": 60_000_000, "minutes": 60_000_000,
    "h": 3_600_000_000, "hour": 3_600_000_000, "hours": 3_600_000_000,
    "d": 86_400_000_000, "day": 86_400_000_000, "days": 86_400_000_000,
}
TYPES = ("string", "timestamp", "interval", "integer", "number")


@attrs.frozen(kw_only=True)
class Param:
    name: str
    type: str
    default: str | None  # None: required
    doc: str


@attrs.frozen(kw_only=True)
class NamedQuery:
    name: str
    purpose: str
    params: tuple[Param, ...]
    columns: tuple[str, ...]
    sql: str

    def bind(self, given: dict[str, str], *, now: dt.datetime | None = None) -> dict[str, Any]:
        """Parse the given text parameters into typed values for DuckDB; errors name the parameter."""
        known = {p.name for p in self.params}
        unknown = sorted(set(given) - known)
        if unknown:
            raise QueryError(f"query {self.name!r} has no parameter {unknown[0]!r}; it takes: {', '.join(sorted(known))}")
        now = now or dt.datetime.now(UTC)
        values = {}
        for p in self.params:
            raw = given.get(p.name, p.default)
            if raw is None:
                raise QueryError(f"query {self.name!r} needs --param {p.name}=<{p.type}> ({p.doc})")
            values[p.name] = parse_value(p, raw, now)
        return values


def parse_value(p: Param, raw: str, now: dt.datetime) -> Any:
    if raw == "any" and p.default == "any":
        return None
    try:
        if p.type == "string":
            return raw
        if p.type == "timestamp":
            return parse_time(raw, now)
        if p.type == "interval":
            return parse_interval(raw)
        if p.type == "integer":
            return int(raw)
        if p.type == "number":
            return float(raw)
    except ValueError as exc:
        raise QueryError(f"parameter {p.name}={raw!r} is not a valid {p.type}: {exc}") from None
    raise QueryError(f"parameter {p.name} has unknown type {p.type!r}")


def parse_time(raw: str, now: dt.datetime) -> dt.datetime:
    """ISO 8601 (naive is UTC), epoch seconds, or `now`."""
    text = raw.strip()
    if text == "now":
        return now
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return dt.datetime.fromtimestamp(float(text), UTC)
    try:
        t = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ValueError("use ISO 8601 like 2026-03-15T14:30:00Z, epoch seconds, or now") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def parse_interval(raw: str) -> int:
    """An interval in microseconds, from '30s', '5m', '1h', '1d' or '5 minutes'."""
    m = _INTERVAL.match(raw.lower())
    if not m or m.group(2) not in _UNITS:
        raise ValueError("use a number and a unit: 30s, 5m, 1h, 1d")
    us = int(float(m.group(1)) * _UNITS[m.group(2)])
    if us <= 0:
        raise ValueError("it must be positive")
    return us


def parse_file(path: Path | Traversable) -> NamedQuery:
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("--"):
            break
        header.append(line)
    if not header or ":" not in header[0]:
        raise QueryError(f"{path}: the first line must be '-- {path.stem}: what it is for'")
    purpose_lines = [header[0].split(":", 1)[1].strip()]
    params, columns = [], ()
    for line in header[1:]:
        body = line[2:].strip()
        if body.startswith("param "):
            m = re.match(r"param\s+(\w+)\s*:\s*(\w+)\s*(?:=\s*(\S+))?\s*\.\s*(.*)$", body)
            if not m or m.group(2) not in TYPES:
                raise QueryError(f"{path}: cannot read parameter line {line!r}")
            params.append(Param(name=m.group(1), type=m.group(2), default=m.group(3), doc=m.group(4)))
        elif body.startswith("columns:"):
            columns = tuple(c.strip() for c in body.split(":", 1)[1].split(","))
        elif line.startswith("--   ") and not params:
            purpose_lines.append(body)
    return NamedQuery(name=path.name.removesuffix(".sql"), purpose=" ".join(purpose_lines), params=tuple(params), columns=columns,
                      sql="\n".join(lines))


@functools.cache
def catalog(directory: Path | Traversable | None = None) -> dict[str, NamedQuery]:
    """The named queries of `directory` (default: the ones shipped in the package), by name."""
    folder = directory if directory is not None else resources.files(QUERY_PACKAGE)
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return {q.name: q for q in map(parse_file, files)}


def get(name: str) -> NamedQuery:
    queries = catalog()
    if name not in queries:
        raise QueryError(f"unknown query {name!r}; named queries: {', '.join(queries)}")
    return queries[name]
