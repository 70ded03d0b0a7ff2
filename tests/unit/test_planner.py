"""Cycle planning: shards, the derived schedule, rollover, Cycle-Period, batching."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdpr_core.reporting.planner import (
    MAX_BATCH,
    NEW_KEY,
    NSHARDS,
    Batcher,
    Candidate,
    CycleState,
    PendingAnswer,
    can_roll_over,
    cursor_after,
    describe,
    due_shard_limit,
    note_cycle_period,
    oldest_overdue_seconds,
    report_key_for,
    report_key_for_shard,
    roll_over,
    shard_of,
)

T0 = datetime(2026, 1, 5, 9, 17, tzinfo=UTC)
WEEK = timedelta(days=7)


def state(**changes) -> CycleState:
    base = CycleState.initial(T0, WEEK)
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_shard_is_sha256_mod_256_and_keys_are_zero_padded():
    account = "5be24ad8b1653240376955d2"
    assert shard_of(account) == int(hashlib.sha256(account.encode()).hexdigest(), 16) % 256
    assert report_key_for_shard(0) == "s#000"
    assert report_key_for_shard(7) == "s#007"
    assert report_key_for_shard(255) == "s#255"
    assert report_key_for(account) == f"s#{shard_of(account):03d}"
    assert NEW_KEY == "new" and NSHARDS == 256
    for bad in (-1, 256):
        with pytest.raises(ValueError):
            report_key_for_shard(bad)


def test_shards_spread_accounts():
    counts = [0] * NSHARDS
    for i in range(25_600):
        counts[shard_of(f"acc-{i}")] += 1
    assert min(counts) > 50 and max(counts) < 160


def test_due_shard_limit_at_boundaries():
    s = state()
    per_shard = WEEK / NSHARDS
    assert due_shard_limit(s, T0 - timedelta(seconds=1)) == -1
    assert due_shard_limit(s, T0) == 0
    assert due_shard_limit(s, T0 + per_shard - timedelta(microseconds=1)) == 0
    assert due_shard_limit(s, T0 + per_shard) == 1
    assert due_shard_limit(s, T0 + per_shard * 255) == 255
    assert due_shard_limit(s, T0 + WEEK * 3) == 255


@given(st.integers(min_value=0, max_value=int(WEEK.total_seconds() * 1_000_000) - 1))
def test_due_shard_limit_is_the_last_shard_started(offset_us):
    s = state()
    now = T0 + timedelta(microseconds=offset_us)
    limit = due_shard_limit(s, now)
    assert 0 <= limit < NSHARDS
    assert s.shard_start(limit) <= now
    if limit + 1 < NSHARDS:
        assert s.shard_start(limit + 1) > now


def test_rollover_needs_a_finished_cursor_and_the_next_start():
    s = state(shard=255)
    assert not can_roll_over(s, T0 + WEEK)
    s.shard = NSHARDS
    assert not can_roll_over(s, T0 + WEEK - timedelta(seconds=1))
    assert can_roll_over(s, T0 + WEEK)
    with pytest.raises(ValueError):
        roll_over(state(), T0 + WEEK)
    nxt = roll_over(s, T0 + WEEK + timedelta(hours=1))
    assert (nxt.cycle, nxt.cycle_start, nxt.cycle_length) == (2, T0 + WEEK, WEEK)
    assert (nxt.shard, nxt.last_account_id, nxt.reported_in_cycle) == (0, None, 0)


def test_rollover_applies_a_pending_cycle_period_at_the_boundary():
    s = state(shard=NSHARDS)
    assert note_cycle_period(s, timedelta(days=14), "Cycle-Period P14D")
    assert s.cycle_length == WEEK  # not applied mid-cycle
    nxt = roll_over(s, T0 + WEEK)
    assert nxt.cycle_length == timedelta(days=14)
    assert nxt.cycle_source == "Cycle-Period P14D"
    assert nxt.pending_cycle_length is None


def test_rollover_after_a_long_absence_starts_now_instead_of_in_the_past():
    s = state(shard=NSHARDS)
    late = T0 + WEEK * 3 + timedelta(hours=5)
    nxt = roll_over(s, late)
    assert nxt.cycle_start == late
    assert due_shard_limit(nxt, late) == 0


def test_cycle_period_keeps_the_last_valid_value():
    s = state()
    assert not note_cycle_period(s, None, "x")
    assert note_cycle_period(s, timedelta(days=20), "a")
    assert not note_cycle_period(s, timedelta(days=20), "a")
    assert note_cycle_period(s, WEEK, "b")  # back to the current length: nothing pending any more
    assert s.pending_cycle_length is None


def test_state_round_trips_through_a_dynamodb_item():
    s = state(
        cycle=4,
        shard=17,
        last_account_id="acc-9",
        reported_in_cycle=1234,
        seq=99,
        pending_cycle_length=timedelta(days=14),
        pending_cycle_source="Cycle-Period P14D",
        last_error="rate_limited",
        last_tick_at=T0 + timedelta(hours=3),
    )
    item = s.to_item()
    assert item["pk"] == {"S": "reporter"}
    assert all(len(v) == 1 and next(iter(v)) in ("S", "N") for v in item.values())
    assert CycleState.from_item(item) == s
    plain = state()
    assert CycleState.from_item(plain.to_item()) == plain


def cand(i: int, shard: int | None = 0) -> Candidate:
    return Candidate(f"acc-{i:05d}", T0, shard)


def test_batcher_emits_only_full_batches_until_flushed():
    batcher = Batcher()
    emitted = [b for i in range(200) if (b := batcher.add(cand(i, i // 10)))]
    assert [len(b) for b in emitted] == [90, 90]
    assert len(batcher) == 20
    assert batcher.flush() is not None and len(batcher) == 0
    assert batcher.flush() is None
    assert MAX_BATCH == 90
    with pytest.raises(ValueError):
        Batcher(91)


def test_batcher_knows_when_new_accounts_wait():
    batcher = Batcher()
    batcher.add(cand(1, 3))
    assert not batcher.has_new
    batcher.add(cand(2, None))
    assert batcher.has_new


def test_cursor_moves_to_the_last_walked_account_of_a_batch():
    assert cursor_after([cand(1, None), cand(2, 4), cand(3, 5)], 0, None) == (5, "acc-00003")
    assert cursor_after([cand(1, None)], 7, "acc-x") == (7, "acc-x")


def test_pending_answer_at_risk_and_retry_round_trip_through_the_item():
    s = state(
        shard=40,
        at_risk=90,
        retry_not_before=T0 + timedelta(hours=1),
        pending=PendingAnswer(3, "2026-01-05T09:17:00.000Z", closed=("a-1",), updated=("a-2",), new=("a-3", "a-4")),
    )
    item = s.to_item()
    assert item["pendingClosed"] == {"SS": ["a-1"]} and item["pendingNew"] == {"SS": ["a-3", "a-4"]}
    assert CycleState.from_item(item) == s
    s.pending = PendingAnswer(3, "2026-01-05T09:17:00.000Z")  # nothing to act on: not written at all
    assert not any(k.startswith("pending") and k != "pendingCycleLengthSeconds" for k in s.to_item())


def test_oldest_overdue_is_the_age_of_the_cursors_shard():
    s = state()
    assert oldest_overdue_seconds(s, T0 - timedelta(hours=1)) == 0
    assert oldest_overdue_seconds(s, T0 + timedelta(hours=2)) == 7200
    s.shard = 128  # half way: shard 128 starts 3.5 days in
    assert oldest_overdue_seconds(s, T0 + timedelta(days=3)) == 0
    assert oldest_overdue_seconds(s, T0 + timedelta(days=4)) == 12 * 3600
    s.shard = NSHARDS  # the cycle is done: nothing is due before the next one starts
    assert oldest_overdue_seconds(s, T0 + WEEK - timedelta(seconds=1)) == 0
    assert oldest_overdue_seconds(s, T0 + WEEK + timedelta(hours=1)) == 3600


def test_describe_gives_counts_and_never_account_ids():
    s = state(
        shard=64,
        last_account_id="acc-secret",
        reported_in_cycle=2500,
        at_risk=3,
        last_error="no_credential",
        last_tick_at=T0 + timedelta(days=2),
        pending=PendingAnswer(1, "x", closed=("acc-closed",), new=("acc-new",)),
    )
    note_cycle_period(s, timedelta(days=14), "Cycle-Period P14D")
    view = describe(s, T0 + timedelta(days=2))
    assert view["cycle"] == 1 and view["cycleLengthSeconds"] == WEEK.total_seconds()
    assert view["cycleSource"] == "default" and view["pendingCycleLengthSeconds"] == 14 * 86400
    assert view["position"] == {"shard": 64, "shards": 256, "cycleFraction": 0.25, "accountsReportedInCycle": 2500}
    assert view["oldestOverdueSeconds"] == 86400 * 2 - 86400 * 7 / 4
    assert view["dueShardsNow"] == due_shard_limit(s, T0 + timedelta(days=2)) + 1 - 64
    assert view["atRisk"] == 3 and view["answerBeingApplied"] == 2 and view["lastError"] == "no_credential"
    assert "acc-" not in repr(view)
