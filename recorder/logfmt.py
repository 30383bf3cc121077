"""Log output: `log_format = "text"` (one readable line) or `"json"` (one JSON object per line, for
log shippers), with the same content.

A JSON line holds `time` (ISO 8601 UTC, microseconds), `level`, `logger`, `feed` (the feed a line
is about, or null), `event` (the message, as the text form has it after "feed NAME: "), and
`fields`: structured values a call site gives with `extra={"fields": {...}}`, plus `template`
(the message before its values were put in: a stable key to group lines by) and, when an
exception is logged, its traceback as `exception`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sys

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        feed = getattr(record, "feed", None)
        if feed is None and isinstance(record.msg, str) and record.msg.startswith("feed %s") and record.args:
            feed = str(record.args[0])
        if feed is not None and message.startswith(f"feed {feed}: "):
            message = message[len(f"feed {feed}: "):]
        fields = dict(getattr(record, "fields", None) or {})
        fields["template"] = str(record.msg)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        line = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name, "feed": feed, "event": message,
            "fields": fields,
        }
        line["fields"] = {k: _finite(v) for k, v in fields.items()}
        return json.dumps(line, default=str, ensure_ascii=False, allow_nan=False)


def _finite(value):
    """NaN and infinities are not JSON: null instead."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def setup(level: str = "info", fmt: str = "text", stream=None) -> None:
    """Configure the root logger (the `recorder` command's only logging setup)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
