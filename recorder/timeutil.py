"""Time conversions. Everything inside the recorder is integer microseconds since the epoch, UTC."""

from __future__ import annotations

import datetime as dt

from .errors import DecodeError

UTC = dt.timezone.utc
_EPOCH_DATE = dt.date(1970, 1, 1)
US_PER_DAY = 86_400_000_000




# Times must fit Arrow's timestamp[us] (int64). Outside this (about +-292,000 years), a venue's
# time is nonsense; a frame carrying one is rejected instead of failing the whole flush.
MAX_US = 2**63 - 1


def _checked(us: float, value: float, unit: str) -> int:
    if not -MAX_US <= us <= MAX_US:
        raise DecodeError(f"time {value!r} {unit} is out of range")
    return round(us)  # round() of a float is an int


def seconds_to_us(value: float) -> int:
    return _checked(float(value) * 1_000_000, value, "s")


def ms_to_us(value: float) -> int:
    return _checked(float(value) * 1000, value, "ms")


def iso_to_us(text: str) -> int:
    """Parse an ISO 8601 time ('2026-03-15T14:30:05Z'); a naive time is taken as UTC."""
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_datetime(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=us)






def day_name(day: int) -> str:
    return (_EPOCH_DATE + dt.timedelta(days=day)).isoformat()
