"""Cycle planning: which accounts are due, in what order, and how they are packed into requests.

Each account belongs to one of 256 shards (sha256 of its id). Within a cycle, shard k becomes due at
cycleStart + k * cycleLength / 256, so the load spreads over the whole cycle and the schedule is
*derived*: no per-account write is needed to know that an account is due again. The reporter keeps a
cursor (shard, last account id reported in it); everything at or before the cursor is done for this
cycle, so a crash resumes instead of starting over.

Pure Python: no boto3, no clock; "now" is always passed in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .. import clock

NSHARDS = 256
NEW_KEY = "new"
# Sparse due-index key of accounts Atlassian refused (400) on their own: out of the shard walk, countable.
QUARANTINE_KEY = "quarantine"
MAX_BATCH = 90
STATE_PK = "reporter"


def shard_of(account_id: str) -> int:
    return int.from_bytes(hashlib.sha256(account_id.encode()).digest(), "big") % NSHARDS


def report_key_for_shard(shard: int) -> str:
    if not 0 <= shard < NSHARDS:
        raise ValueError("shard out of range")
    return "s#%03d" % shard  # noqa: UP031 - the key format is documented in this form


def report_key_for(account_id: str) -> str:
    return report_key_for_shard(shard_of(account_id))


@dataclass(frozen=True)
class PendingAnswer:
    """An answer already counted in the cursor but whose effects may not all have happened yet.

    It is written in the same checkpoint that moves the cursor past the batch, so a crash right after
    Atlassian answered neither reports the batch again nor loses a `closed`; the next tick re-applies it
    (every effect is idempotent: conditional registry writes, an idempotent erasure consumer).
    """

    cycle: int
    reported_at: str
    closed: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    new: tuple[str, ...] = ()  # new accounts reported in the batch, to move into their shard

    def __bool__(self) -> bool:
        return bool(self.closed or self.updated or self.new)


@dataclass
class CycleState:
    cycle: int
    cycle_start: datetime
    cycle_length: timedelta
    cycle_source: str = "default"
    pending_cycle_length: timedelta | None = None  # from Cycle-Period; applied at the next boundary
    pending_cycle_source: str | None = None
    shard: int = 0  # the shard being worked on; NSHARDS once the whole cycle is done
    last_account_id: str | None = None  # last account reported in `shard`; None: none yet
    reported_in_cycle: int = 0
    seq: int = 0  # bumped by every checkpoint; a conditional write on it keeps runs from racing
    last_error: str | None = None
    last_tick_at: datetime | None = None
    pending: PendingAnswer | None = None
    at_risk: int = 0  # accounts of the last batch that every credential was refused for
    retry_not_before: datetime | None = None  # a Retry-After that did not fit in a tick

    @classmethod
    def initial(cls, now: datetime, cycle_length: timedelta) -> CycleState:
        return cls(cycle=1, cycle_start=now, cycle_length=cycle_length)

    @property
    def cycle_done(self) -> bool:
        return self.shard >= NSHARDS

    @property
    def next_cycle_start(self) -> datetime:
        return self.cycle_start + self.cycle_length

    def shard_start(self, shard: int) -> datetime:
        return self.cycle_start + self.cycle_length * shard / NSHARDS

    def to_item(self) -> dict[str, Any]:
        """DynamoDB attribute-value form (low-level client), pk = "reporter"."""
        item: dict[str, Any] = {
            "pk": {"S": STATE_PK},
            "cycle": {"N": str(self.cycle)},
            "cycleStart": {"S": clock.format_rfc3339(self.cycle_start)},
            "cycleLengthSeconds": {"N": _seconds(self.cycle_length)},
            "cycleSource": {"S": self.cycle_source},
            "shard": {"N": str(self.shard)},
            "reportedInCycle": {"N": str(self.reported_in_cycle)},
            "seq": {"N": str(self.seq)},
        }
        if self.pending_cycle_length is not None:
            item["pendingCycleLengthSeconds"] = {"N": _seconds(self.pending_cycle_length)}
            item["pendingCycleSource"] = {"S": self.pending_cycle_source or "Cycle-Period"}
        if self.last_account_id is not None:
            item["lastAccountId"] = {"S": self.last_account_id}
        if self.last_error:
            item["lastError"] = {"S": self.last_error}
        if self.last_tick_at is not None:
            item["lastTickAt"] = {"S": clock.format_rfc3339(self.last_tick_at)}
        if self.at_risk:
            item["atRisk"] = {"N": str(self.at_risk)}
        if self.retry_not_before is not None:
            item["retryNotBefore"] = {"S": clock.format_rfc3339(self.retry_not_before)}
        if self.pending:
            item["pendingCycle"] = {"N": str(self.pending.cycle)}
            item["pendingReportedAt"] = {"S": self.pending.reported_at}
            for name, ids in (
                ("pendingClosed", self.pending.closed),
                ("pendingUpdated", self.pending.updated),
                ("pendingNew", self.pending.new),
            ):
                if ids:
                    item[name] = {"SS": sorted(set(ids))}
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> CycleState:
        def s(name: str) -> str | None:
            value = item.get(name)
            return value["S"] if value else None

        def n(name: str) -> float | None:
            value = item.get(name)
            return float(value["N"]) if value else None

        pending = n("pendingCycleLengthSeconds")
        last_tick = s("lastTickAt")
        not_before = s("retryNotBefore")

        def ids(name: str) -> tuple[str, ...]:
            value = item.get(name)
            return tuple(sorted(value["SS"])) if value else ()

        answer = None
        if "pendingCycle" in item:
            answer = PendingAnswer(
                cycle=int(n("pendingCycle") or 0),
                reported_at=s("pendingReportedAt") or "",
                closed=ids("pendingClosed"),
                updated=ids("pendingUpdated"),
                new=ids("pendingNew"),
            )
        return cls(
            cycle=int(n("cycle") or 1),
            cycle_start=clock.parse_rfc3339(s("cycleStart") or ""),
            cycle_length=timedelta(seconds=n("cycleLengthSeconds") or 0),
            cycle_source=s("cycleSource") or "default",
            pending_cycle_length=timedelta(seconds=pending) if pending is not None else None,
            pending_cycle_source=s("pendingCycleSource"),
            shard=int(n("shard") or 0),
            last_account_id=s("lastAccountId"),
            reported_in_cycle=int(n("reportedInCycle") or 0),
            seq=int(n("seq") or 0),
            last_error=s("lastError"),
            last_tick_at=clock.parse_rfc3339(last_tick) if last_tick else None,
            pending=answer or None,
            at_risk=int(n("atRisk") or 0),
            retry_not_before=clock.parse_rfc3339(not_before) if not_before else None,
        )


def _seconds(delta: timedelta) -> str:
    value = delta.total_seconds()
    return str(int(value)) if value == int(value) else repr(value)


def due_shard_limit(state: CycleState, now: datetime) -> int:
    """Highest shard whose start is at or before `now` (-1 if none yet); shards 0..limit are due."""
    if now < state.cycle_start:
        return -1
    elapsed = now - state.cycle_start
    # Integer microseconds avoid float rounding at exact shard boundaries.
    per_shard_us = _micros(state.cycle_length)
    limit = (_micros(elapsed) * NSHARDS) // per_shard_us if per_shard_us else NSHARDS - 1
    return min(NSHARDS - 1, int(limit))


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def oldest_overdue_seconds(state: CycleState, now: datetime) -> float:
    """How long the oldest due-but-unreported shard has been due: now minus the start of the cursor's
    shard (the next cycle's start once the cycle is done) when that start has passed, else 0.

    The cursor's shard may already be finished up to its last account, so this errs late by at most one
    shard's width, never early. Accounts held back to fill a batch count as due-but-unreported.
    """
    start = state.shard_start(min(state.shard, NSHARDS))
    return max(0.0, (now - start).total_seconds())


def describe(state: CycleState, now: datetime) -> dict[str, Any]:
    """The operator's view of the state (`gdprctl status`): counts only, never an account id."""
    length = state.cycle_length.total_seconds()
    position = min(state.shard, NSHARDS)
    return {
        "cycle": state.cycle,
        "cycleStart": clock.format_rfc3339(state.cycle_start),
        "cycleLengthSeconds": length,
        "cycleSource": state.cycle_source,
        "pendingCycleLengthSeconds": (
            state.pending_cycle_length.total_seconds() if state.pending_cycle_length is not None else None
        ),
        "pendingCycleSource": state.pending_cycle_source if state.pending_cycle_length is not None else None,
        "position": {
            "shard": position,
            "shards": NSHARDS,
            "cycleFraction": round(position / NSHARDS, 4),
            "accountsReportedInCycle": state.reported_in_cycle,
        },
        "dueShardsNow": max(0, due_shard_limit(state, now) + 1 - position) if position < NSHARDS else 0,
        "oldestOverdueSeconds": oldest_overdue_seconds(state, now),
        "atRisk": state.at_risk,
        "answerBeingApplied": len(state.pending.closed) + len(state.pending.updated) + len(state.pending.new)
        if state.pending
        else 0,
        "retryNotBefore": clock.format_rfc3339(state.retry_not_before) if state.retry_not_before else None,
        "lastError": state.last_error,
        "lastTickAt": clock.format_rfc3339(state.last_tick_at) if state.last_tick_at else None,
        "asOf": clock.format_rfc3339(now),
    }


def can_roll_over(state: CycleState, now: datetime) -> bool:
    return state.cycle_done and now >= state.next_cycle_start


def roll_over(state: CycleState, now: datetime) -> CycleState:
    """Starts the next cycle at the previous one's end, with any pending Cycle-Period applied.

    If the service was away for more than a whole cycle, the new cycle starts now rather than in the
    past, so the missed time is not made up by reporting every account twice in quick succession.
    """
    if not can_roll_over(state, now):
        raise ValueError("the cycle cannot roll over yet")
    length, source = state.cycle_length, state.cycle_source
    if state.pending_cycle_length is not None:
        length, source = state.pending_cycle_length, state.pending_cycle_source or "Cycle-Period"
    start = state.next_cycle_start
    if now >= start + length:
        start = now
    return replace(
        state,
        cycle=state.cycle + 1,
        cycle_start=start,
        cycle_length=length,
        cycle_source=source,
        pending_cycle_length=None,
        pending_cycle_source=None,
        shard=0,
        last_account_id=None,
        reported_in_cycle=0,
    )


def note_cycle_period(state: CycleState, period: timedelta | None, source: str) -> bool:
    """Keeps the last valid Cycle-Period as pending (applied at the next boundary); True if changed."""
    if period is None:
        return False
    if period == state.cycle_length:
        changed = state.pending_cycle_length is not None
        state.pending_cycle_length = state.pending_cycle_source = None
        return changed
    if period == state.pending_cycle_length:
        return False
    state.pending_cycle_length, state.pending_cycle_source = period, source
    return True


# ------------------------------------------------------------------ batching
@dataclass(frozen=True)
class Candidate:
    account_id: str
    updated_at: datetime
    shard: int | None  # None for a new account (outside the shard walk, never moves the cursor)

    @property
    def is_new(self) -> bool:
        return self.shard is None


@dataclass
class Batcher:
    """Packs candidates into requests of at most `size`, across shard boundaries.

    Full batches come out as soon as they fill; a partial batch only on `flush()`, which the run calls
    at the end of a cycle's last shard, or when new accounts are waiting. That is what makes requests
    per cycle = ceil(accounts / 90) instead of one partial request per shard.
    """

    size: int = MAX_BATCH
    pending: list[Candidate] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.size <= MAX_BATCH:
            raise ValueError(f"batch size must be 1..{MAX_BATCH}")

    def add(self, candidate: Candidate) -> list[Candidate] | None:
        self.pending.append(candidate)
        if len(self.pending) >= self.size:
            batch, self.pending = self.pending[: self.size], self.pending[self.size :]
            return batch
        return None

    def flush(self) -> list[Candidate] | None:
        if not self.pending:
            return None
        batch, self.pending = self.pending[: self.size], self.pending[self.size :]
        return batch

    @property
    def has_new(self) -> bool:
        return any(c.is_new for c in self.pending)

    def __len__(self) -> int:
        return len(self.pending)


def cursor_after(batch: list[Candidate], shard: int, last_account_id: str | None) -> tuple[int, str | None]:
    """The resume position once `batch` was reported: its last walked (non-new) account, if any."""
    walked = [c for c in batch if c.shard is not None]
    if not walked:
        return shard, last_account_id
    last = walked[-1]
    return last.shard, last.account_id  # type: ignore[return-value]
