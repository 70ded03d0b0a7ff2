"""One clock for every component, so a whole cycle can run in seconds in tests and in the sandbox."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, the sandbox's accelerated time)."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(**delta)
            return self._now


_clock: SystemClock | ManualClock = SystemClock()


def install(clock: SystemClock | ManualClock) -> None:
    global _clock
    _clock = clock


def now() -> datetime:
    return _clock.now()


# RFC 3339 section 5.6 date-time: full date, T (or t, or the space the RFC's note allows), full time with
# optional fraction, Z or a +hh:mm offset. Not the other ISO 8601 forms fromisoformat also takes.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")
_LOCAL = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?")  # the same without a zone


def parse_rfc3339(value: str) -> datetime:
    """Parses an RFC 3339 timestamp ('Z' or offset); raises ValueError with no echo of the value."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        if isinstance(value, str) and _LOCAL.fullmatch(value):
            raise ValueError("RFC 3339 timestamp without a UTC offset")
        raise ValueError("not an RFC 3339 timestamp")
    text = value[:10] + "T" + value[11:-1] + "+00:00" if value[-1] in "Zz" else value[:10] + "T" + value[11:]
    head, dot, rest = text.partition(".")
    if dot:  # fromisoformat takes at most microseconds: keep 6 fraction digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + rest[:min(digits, 6)].ljust(6, "0") + rest[digits:]
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):  # 2026-02-30, 24:00:00, or beyond year 1..9999 once in UTC
        raise ValueError("not an RFC 3339 timestamp") from None


def format_rfc3339(when: datetime) -> str:
    """Millisecond precision with 'Z', as Atlassian's examples show (2018-10-25T23:08:51.382Z). The year
    is always four digits (strftime's %Y is not, below 1000), so the strings sort like the instants."""
    utc = when.astimezone(UTC)
    return f"{utc.year:04d}-" + utc.strftime("%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
