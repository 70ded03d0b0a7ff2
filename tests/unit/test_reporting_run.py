"""The reporter tick with in-memory adapters and accelerated time: whole cycles, 429, fall-back, crashes."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from gdpr_core.clock import ManualClock, parse_rfc3339
from gdpr_core.ids import TEST_ACCOUNT_CLOSED
from gdpr_core.registry import DueAccount, DuePage
from gdpr_core.reporting.contract import Answered, BadRequest, CredentialRejected, RateLimited, Unavailable
from gdpr_core.reporting.planner import NEW_KEY, NSHARDS, CycleState, report_key_for, shard_of
from gdpr_core.reporting.run import (
    ConcurrentRunError,
    EnqueueError,
    NoUsableCredential,
    ReportRejected,
    RunPolicy,
    SqsActionSender,
    run_tick,
)

T0 = datetime(2026, 2, 2, 8, 3, 11, tzinfo=UTC)
WEEK = timedelta(days=7)
TICK = timedelta(minutes=15)
UPDATED_AT = datetime(2025, 12, 1, tzinfo=UTC)
CREDENTIALS = [
    {"id": "primary", "type": "oauth3lo", "token": "p"},
    {"id": "backup", "type": "oauth3lo", "token": "b"},
]


def account(i: int) -> str:
    return f"5be24ad8{i:016x}"


# ------------------------------------------------------------------ fakes
class FakeRegistry:
    """Registry semantics over a dict, with a per-reportKey index like the sparse due-index."""

    def __init__(self):
        self.items: dict[str, dict] = {}
        self.by_key: dict[str, set[str]] = defaultdict(set)
        self.writes = 0

    def _set_key(self, account_id: str, key: str | None) -> None:
        old = self.items[account_id].get("reportKey")
        if old:
            self.by_key[old].discard(account_id)
        if key:
            self.by_key[key].add(account_id)
        self.items[account_id]["reportKey"] = key

    def seed(self, account_id: str, first_cycle: int | None = None) -> None:
        self.items[account_id] = {"updatedAt": UPDATED_AT, "status": "active", "firstCycle": first_cycle}
        self._set_key(account_id, report_key_for(account_id))

    def register_new(self, account_id: str) -> None:
        self.items[account_id] = {"updatedAt": UPDATED_AT, "status": "active", "firstCycle": None}
        self._set_key(account_id, NEW_KEY)

    def query_due(self, report_key, after_account_id=None, limit=500):
        ids = sorted(i for i in self.by_key[report_key] if after_account_id is None or i > after_account_id)
        page = ids[:limit]
        accounts = [DueAccount(i, self.items[i]["updatedAt"], self.items[i]["firstCycle"]) for i in page]
        return DuePage(accounts, page[-1] if len(ids) > limit else None)

    def mark_reported_first(self, account_id, shard_key, cycle):
        if self.items[account_id].get("reportKey") != NEW_KEY:
            return False
        self.writes += 1
        self._set_key(account_id, shard_key)
        self.items[account_id]["firstCycle"] = cycle
        return True

    def mark_erasing(self, account_id):
        item = self.items.get(account_id)
        if not item or item["status"] != "active":
            return False
        self.writes += 1
        item["status"] = "erasing"
        self._set_key(account_id, None)
        return True


class FakeStateStore:
    def __init__(self):
        self.item: dict | None = None
        self.saves = 0

    def load(self):
        return CycleState.from_item(self.item) if self.item else None

    def save(self, state):
        stored_seq = int(self.item["seq"]["N"]) if self.item else 0
        if stored_seq != state.seq:
            raise ConcurrentRunError("moved by another run")
        state.seq += 1
        self.item = state.to_item()
        self.saves += 1

    @property
    def state(self) -> CycleState:
        return CycleState.from_item(self.item)


class FakeSender:
    def __init__(self):
        self.messages: list[dict] = []

    def send(self, messages):
        self.messages.extend(messages)
        return len(messages)


class FakeAtlassian:
    """Answers like Atlassian; `script` holds outcomes (or exceptions) returned before normal answers."""

    def __init__(self, clock, closed=(), updated=(), cycle_period=None):
        self.clock = clock
        self.closed = set(closed) | {TEST_ACCOUNT_CLOSED}
        self.updated = set(updated)
        self.rejected: set[str] = set()
        self.cycle_period = cycle_period
        self.script: list = []
        self.attempts: list[tuple[datetime, str, list[str]]] = []
        self.answered: list[tuple[datetime, list[str]]] = []

    def report(self, accounts, credential):
        assert 1 <= len(accounts) <= 90
        ids = [a for a, _ in accounts]
        self.attempts.append((self.clock.now(), credential["id"], ids))
        if credential["token"] in self.rejected:
            return CredentialRejected(401)
        if self.script:
            outcome = self.script.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            if outcome is not None:
                return outcome
        self.answered.append((self.clock.now(), ids))
        actions = tuple((a, "closed") for a in ids if a in self.closed) + tuple(
            (a, "updated") for a in ids if a in self.updated
        )
        return Answered(200 if actions else 204, actions, cycle_period=self.cycle_period)


class Harness:
    def __init__(self, accounts=(), closed=(), updated=(), cycle_period=None):
        self.clock = ManualClock(T0)
        self.registry = FakeRegistry()
        for account_id in accounts:
            self.registry.seed(account_id)
        self.states = FakeStateStore()
        self.sender = FakeSender()
        self.atlassian = FakeAtlassian(self.clock, closed, updated, cycle_period)
        self.sleeps: list[float] = []
        self.budget = 840.0
        self.policy = RunPolicy(page_size=100)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.budget -= seconds
        self.clock.advance(seconds=seconds)

    def tick(self, **overrides):
        kwargs = dict(
            registry=self.registry,
            state_store=self.states,
            sender=self.sender,
            client=self.atlassian,
            credentials=CREDENTIALS,
            now=self.clock.now,
            sleep=self.sleep,
            remaining_seconds=lambda: self.budget,
            default_cycle_length=WEEK,
            policy=self.policy,
            jitter=lambda: 0.5,
        )
        kwargs.update(overrides)
        return run_tick(**kwargs)

    def run_until(self, end: datetime) -> list[dict]:
        summaries = []
        while self.clock.now() < end:
            summaries.append(self.tick())
            self.clock.advance(seconds=TICK.total_seconds())
        return summaries

    def answered_between(self, start: datetime, end: datetime) -> list[tuple[datetime, list[str]]]:
        return [(t, ids) for t, ids in self.atlassian.answered if start <= t < end]


def shard_start(cycle_start: datetime, account_id: str, length: timedelta = WEEK) -> datetime:
    return cycle_start + length * shard_of(account_id) / NSHARDS


# ------------------------------------------------------------------ whole cycles
def test_two_accelerated_cycles_report_each_account_once_per_cycle_in_ceil_n_over_90_requests():
    accounts = [account(i) for i in range(1999)] + [TEST_ACCOUNT_CLOSED]
    closed = set(accounts[10:15]) | {TEST_ACCOUNT_CLOSED}
    h = Harness(accounts, closed=closed, updated=[accounts[20]])

    h.run_until(T0 + WEEK)
    cycle1 = h.answered_between(T0, T0 + WEEK)
    counts = Counter(a for _, ids in cycle1 for a in ids)
    assert set(counts) == set(accounts)
    assert set(counts.values()) == {1}
    assert len(cycle1) == math.ceil(2000 / 90)
    assert max(len(ids) for _, ids in cycle1) == 90
    for when, ids in cycle1:
        assert all(when >= shard_start(T0, a) for a in ids)
    state = h.states.state
    assert (state.cycle, state.shard, state.reported_in_cycle) == (1, NSHARDS, 2000)

    h.run_until(T0 + 2 * WEEK)
    cycle2 = h.answered_between(T0 + WEEK, T0 + 2 * WEEK)
    counts2 = Counter(a for _, ids in cycle2 for a in ids)
    assert set(counts2) == set(accounts) - closed
    assert set(counts2.values()) == {1}
    assert len(cycle2) == math.ceil(1994 / 90)
    for when, ids in cycle2:
        assert all(when >= shard_start(T0 + WEEK, a) for a in ids)

    # Closed accounts: out of the due-index, one erase message each, never reported again.
    for a in closed:
        assert h.registry.items[a]["status"] == "erasing" and h.registry.items[a]["reportKey"] is None
    erases = [m for m in h.sender.messages if m["action"] == "erase"]
    assert sorted(m["accountId"] for m in erases) == sorted(closed)
    assert all(m == {**m, "schema": 1, "reason": "closed", "cycle": 1} for m in erases)
    assert all(parse_rfc3339(m["reportedAt"]) >= T0 for m in erases)
    refreshes = [m for m in h.sender.messages if m["action"] == "refresh"]
    assert [(m["accountId"], m["reason"], m["cycle"]) for m in refreshes] == [
        (accounts[20], "updated", 1),
        (accounts[20], "updated", 2),
    ]
    # The derived schedule: state writes are about one per request, never per account.
    requests = len(cycle1) + len(cycle2)
    assert h.states.saves <= requests + 6
    assert h.registry.writes == len(closed)


def test_cycle_period_header_is_applied_at_the_next_boundary():
    accounts = [account(i) for i in range(300)]
    h = Harness(accounts, cycle_period=timedelta(days=14))
    h.run_until(T0 + WEEK + TICK)
    state = h.states.state
    assert state.cycle == 2
    assert state.cycle_start == T0 + WEEK
    assert state.cycle_length == timedelta(days=14)
    assert state.cycle_source == "Cycle-Period P14D"
    # Cycle 1 kept its 7 days: every account was reported in it.
    assert len({a for _, ids in h.answered_between(T0, T0 + WEEK) for a in ids}) == 300


def test_new_accounts_are_reported_on_the_next_tick_and_then_follow_their_shard():
    accounts = [account(i) for i in range(500)]
    h = Harness(accounts)
    h.run_until(T0 + timedelta(days=3))
    newcomers = [f"new-account-{i}" for i in range(3)]
    for a in newcomers:
        h.registry.register_new(a)
    before = len(h.atlassian.answered)
    summary = h.tick()
    assert summary["newReported"] == 3 and summary["complete"] is True
    sent = [a for _, ids in h.atlassian.answered[before:] for a in ids]
    assert set(newcomers) <= set(sent)
    for a in newcomers:
        assert h.registry.items[a]["reportKey"] == report_key_for(a)
        assert h.registry.items[a]["firstCycle"] == 1

    h.run_until(T0 + 2 * WEEK)
    for start in (T0, T0 + WEEK):
        counts = Counter(a for _, ids in h.answered_between(start, start + WEEK) for a in ids)
        assert set(counts) == set(accounts) | set(newcomers)
        assert set(counts.values()) == {1}


def test_a_closed_new_account_goes_straight_to_erasing():
    h = Harness()
    h.registry.register_new(TEST_ACCOUNT_CLOSED)
    summary = h.tick()
    assert summary["closed"] == 1 and summary["enqueued"] == 1
    assert h.registry.items[TEST_ACCOUNT_CLOSED]["status"] == "erasing"
    assert h.registry.items[TEST_ACCOUNT_CLOSED]["reportKey"] is None
    assert h.tick()["requests"] == 0



class FailingSender:
    def send(self, messages):
        raise EnqueueError(f"{len(messages)} action messages could not be enqueued")


def test_when_the_queue_fails_the_closed_answer_is_not_lost():
    # Regression: the account used to leave the due-index before its erase message was queued, so a
    # queue failure lost the erasure for good. Now the batch stays due and its answer comes again.
    h = Harness()
    h.registry.register_new(TEST_ACCOUNT_CLOSED)
    with pytest.raises(EnqueueError):
        h.tick(sender=FailingSender())
    assert h.registry.items[TEST_ACCOUNT_CLOSED]["status"] == "active"
    assert h.registry.items[TEST_ACCOUNT_CLOSED]["reportKey"] == NEW_KEY
    summary = h.tick()
    assert summary["closed"] == 1
    assert [m["accountId"] for m in h.sender.messages] == [TEST_ACCOUNT_CLOSED]
    assert h.registry.items[TEST_ACCOUNT_CLOSED]["status"] == "erasing"

# ------------------------------------------------------------------ pacing and failures
def all_due_harness(n: int) -> Harness:
    """n accounts, all due at once: the state says the cycle started a week ago."""
    h = Harness([account(i) for i in range(n)])
    h.clock.set(T0 + WEEK - timedelta(minutes=1))
    h.states.item = CycleState.initial(T0, WEEK).to_item()
    h.states.item["seq"] = {"N": "1"}
    return h


def test_429_is_answered_by_waiting_retry_after():
    h = all_due_harness(180)
    h.atlassian.script = [RateLimited(7.0)]
    summary = h.tick()
    assert h.sleeps == [7.0]
    assert summary["rateLimited"] == 1
    assert summary["stoppedBy"] is None and summary["complete"] is True
    assert summary["accountsReported"] == 180 and summary["requests"] == 3


def test_429_longer_than_the_budget_checkpoints_and_stops():
    h = all_due_harness(270)
    h.atlassian.script = [None, RateLimited(3600.0)]
    summary = h.tick()
    assert summary["stoppedBy"] == "rate_limited" and summary["complete"] is False
    assert summary["accountsReported"] == 90 and h.sleeps == []
    state = h.states.state
    assert state.last_error == "rate_limited"
    reported = h.atlassian.answered[0][1]
    assert (state.shard, state.last_account_id) == (shard_of(reported[-1]), reported[-1])
    summary = h.tick()  # the next tick resumes after the checkpoint
    assert summary["accountsReported"] == 180 and summary["stoppedBy"] is None
    counts = Counter(a for _, ids in h.atlassian.answered for a in ids)
    assert len(counts) == 270 and set(counts.values()) == {1}
    assert h.states.state.last_error is None


def test_unavailable_backs_off_exponentially_then_stops():
    h = all_due_harness(90)
    h.atlassian.script = [Unavailable("http_503", 503)] * 4
    summary = h.tick()
    assert summary["stoppedBy"] == "unavailable"
    assert h.sleeps == [0.75, 1.5, 3.0]  # base 1 s doubling, jitter fixed at 0.75x
    assert h.states.state.shard == 0 and h.atlassian.answered == []


def test_unavailable_then_recovery_reports_the_batch_once():
    h = all_due_harness(90)
    h.atlassian.script = [Unavailable("timeout"), Unavailable("connection")]
    summary = h.tick()
    assert summary["stoppedBy"] is None and summary["accountsReported"] == 90
    assert summary["unavailable"] == 2 and len(h.sleeps) == 2


def test_no_request_is_started_without_time_left():
    h = all_due_harness(90)
    h.budget = 10.0
    summary = h.tick()
    assert summary["stoppedBy"] == "time_budget" and summary["requests"] == 0
    assert h.atlassian.attempts == []


def test_401_on_the_primary_credential_falls_back_to_the_next():
    h = all_due_harness(180)
    h.atlassian.rejected = {"p"}
    summary = h.tick()
    assert summary["credentialFallbacks"] == 1 and summary["accountsReported"] == 180
    assert [cred for _, cred, _ in h.atlassian.attempts] == ["primary", "backup", "backup"]


def test_when_every_credential_is_rejected_the_run_fails_loudly():
    h = all_due_harness(90)
    h.atlassian.rejected = {"p", "b"}
    with pytest.raises(NoUsableCredential):
        h.tick()
    assert h.states.state.last_error == "NoUsableCredential"
    assert h.states.state.shard == 0


def test_400_is_a_bug_on_our_side_and_fails_the_run():
    h = all_due_harness(10)
    h.atlassian.script = [BadRequest(400, "InvalidRequest")]
    with pytest.raises(ReportRejected, match="InvalidRequest"):
        h.tick()


def test_a_crash_mid_run_resumes_from_the_checkpoint():
    h = all_due_harness(450)
    h.atlassian.script = [None, None, RuntimeError("lambda died")]
    with pytest.raises(RuntimeError):
        h.tick()
    assert len(h.atlassian.answered) == 2
    checkpoint = h.states.state
    assert checkpoint.last_account_id == h.atlassian.answered[1][1][-1]
    summary = h.tick()
    assert summary["requests"] == 3 and summary["complete"] is True
    counts = Counter(a for _, ids in h.atlassian.answered for a in ids)
    assert len(counts) == 450 and set(counts.values()) == {1}


def test_two_runs_cannot_both_move_the_cursor():
    h = all_due_harness(90)
    stale = h.states.load()
    h.tick()

    class StaleStore(FakeStateStore):
        def load(self_inner):
            return stale

    racing = StaleStore()
    racing.item = h.states.item
    with pytest.raises(ConcurrentRunError):
        h.tick(state_store=racing)


def test_first_tick_creates_the_state_at_now():
    h = Harness([account(i) for i in range(5)])
    summary = h.tick()
    state = h.states.state
    assert (state.cycle, state.cycle_start, state.cycle_length, state.cycle_source) == (
        1,
        T0,
        WEEK,
        "default",
    )
    assert summary["cycle"] == 1 and summary["requests"] == 0 and summary["deferred"] >= 0


def test_idle_ticks_write_nothing():
    h = all_due_harness(3)
    h.clock.set(T0 + timedelta(hours=1))
    h.tick()
    saves = h.states.saves
    for _ in range(5):
        h.tick()
    assert h.states.saves == saves


def test_summary_has_no_account_ids():
    h = all_due_harness(100)
    summary = h.tick()
    text = repr(summary)
    assert not any(account(i) in text for i in range(100))
    assert {
        "requests",
        "accountsReported",
        "maxBatch",
        "closed",
        "updated",
        "enqueued",
        "cycle",
        "position",
    } <= set(summary)
    assert {"complete", "stoppedBy"} <= set(summary)


# ------------------------------------------------------------------ SQS sender
class FlakySqs:
    def __init__(self, fail_first: int, always_fail: bool = False):
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.calls: list[list[dict]] = []

    def send_message_batch(self, QueueUrl, Entries):  # noqa: N803 - boto3's parameter names
        self.calls.append(Entries)
        failing = Entries if self.always_fail else Entries[: self.fail_first]
        self.fail_first = 0
        failed_ids = {e["Id"] for e in failing}
        return {
            "Successful": [{"Id": e["Id"]} for e in Entries if e["Id"] not in failed_ids],
            "Failed": [{"Id": i, "SenderFault": False, "Code": "InternalError"} for i in failed_ids],
        }


def test_sqs_sender_batches_by_ten_and_retries_failed_entries():
    sqs = FlakySqs(fail_first=2)
    sent = SqsActionSender("https://queue", client=sqs).send([{"n": i} for i in range(25)])
    assert sent == 25
    assert [len(c) for c in sqs.calls] == [10, 2, 10, 5]


def test_sqs_sender_raises_when_entries_keep_failing():
    with pytest.raises(EnqueueError):
        SqsActionSender("https://queue", client=FlakySqs(0, always_fail=True)).send([{"n": 1}])
