"""One clock for every component, so a whole cycle can run in seconds in tests and in the sandbox."""

from __future__ import annotations

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


def parse_rfc3339(value: str) -> datetime:
    """Parses an RFC 3339 timestamp ('Z' or offset); raises ValueError with no echo of the value."""
    if not isinstance(value, str) or "T" not in value:
        raise ValueError("not an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError("RFC 3339 timestamp without a UTC offset")
    return parsed.astimezone(UTC)


def format_rfc3339(when: datetime) -> str:
    """Millisecond precision with 'Z', as Atlassian's examples show (2018-10-25T23:08:51.382Z)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
