"""The reporter tick with in-memory adapters and accelerated time: whole cycles, 429, fall-back, crashes."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from gdpr_core.clock import ManualClock, parse_rfc3339
from gdpr_core.ids import TEST_ACCOUNT_ACTIVE, TEST_ACCOUNT_CLOSED
from gdpr_core.registry import DueAccount, DuePage
from gdpr_core.reporting.contract import (
    Answered,
    BadRequest,
    CredentialRejected,
    RateLimited,
    Unavailable,
    interpret_response,
)
from gdpr_core.reporting.planner import (
    NEW_KEY,
    NSHARDS,
    QUARANTINE_KEY,
    CycleState,
    report_key_for,
    shard_of,
)
from gdpr_core.reporting.run import (
    ConcurrentRunError,
    EnqueueError,
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

    def quarantine(self, account_id, from_key, reason, cycle):
        item = self.items.get(account_id)
        if not item or item["status"] != "active" or item.get("reportKey") != from_key:
            return False
        self.writes += 1
        self._set_key(account_id, QUARANTINE_KEY)
        item["quarantineReason"] = reason
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
        self.refused: set[str] = set()  # any request holding one of these is answered 400
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
        if self.refused & set(ids):
            return BadRequest(400, "InvalidAccountId")
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
    # The derived schedule: state writes are about one per request, never per account; a batch whose
    # answer asks for action may cost one more (dropping the applied answer from the state item).
    requests = len(cycle1) + len(cycle2)
    with_actions = sum(1 for _, ids in cycle1 + cycle2 if set(ids) & (closed | {accounts[20]}))
    assert h.states.saves <= requests + with_actions + 4
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
    # queue failure lost the erasure for good. Now the answer is checkpointed with the cursor before
    # anything acts on it, and the next tick applies it without reporting the account again.
    h = Harness()
    h.registry.register_new(TEST_ACCOUNT_CLOSED)
    with pytest.raises(EnqueueError):
        h.tick(sender=FailingSender())
    assert h.registry.items[TEST_ACCOUNT_CLOSED]["status"] == "active"
    assert h.registry.items[TEST_ACCOUNT_CLOSED]["reportKey"] == NEW_KEY
    assert h.states.state.pending.closed == (TEST_ACCOUNT_CLOSED,)
    assert h.states.state.last_error == "EnqueueError"
    summary = h.tick()
    assert summary["resumedAnswers"] == 1 and summary["requests"] == 0
    assert len(h.atlassian.answered) == 1
    assert [m["accountId"] for m in h.sender.messages] == [TEST_ACCOUNT_CLOSED]
    assert h.registry.items[TEST_ACCOUNT_CLOSED]["status"] == "erasing"
    assert h.states.state.pending is None and h.states.state.last_error is None

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
    reported_until = h.clock.now() + timedelta(seconds=3600)
    summary = h.tick()
    assert summary["stoppedBy"] == "rate_limited" and summary["complete"] is False
    assert summary["accountsReported"] == 90 and h.sleeps == []
    state = h.states.state
    assert state.last_error == "rate_limited"
    reported = h.atlassian.answered[0][1]
    assert (state.shard, state.last_account_id) == (shard_of(reported[-1]), reported[-1])
    assert state.retry_not_before == h.clock.now() + timedelta(seconds=3600)
    h.clock.advance(seconds=900)  # the next tick comes before Retry-After elapsed: it calls nobody
    summary = h.tick()
    assert summary["requests"] == 0 and summary["stoppedBy"] == "rate_limited"
    h.clock.advance(seconds=2700)
    summary = h.tick()  # the next tick resumes after the checkpoint
    assert summary["accountsReported"] == 180 and summary["stoppedBy"] is None
    counts = Counter(a for _, ids in h.atlassian.answered for a in ids)
    assert len(counts) == 270 and set(counts.values()) == {1}
    assert h.states.state.last_error is None and h.states.state.retry_not_before is None
    assert all(when >= reported_until for when, _, _ in h.atlassian.attempts[2:])


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


def test_when_every_credential_is_rejected_the_accounts_are_at_risk_and_stay_due():
    h = all_due_harness(180)
    h.atlassian.rejected = {"p", "b"}
    summary = h.tick()
    assert summary["stoppedBy"] == "no_credential" and summary["atRisk"] == 90
    assert summary["accountsReported"] == 0 and summary["requests"] == 2
    state = h.states.state
    assert (state.last_error, state.at_risk, state.shard, state.last_account_id) == ("no_credential", 90, 0, None)
    h.clock.advance(seconds=900)
    again = h.tick()  # still refused: still at risk, still nothing skipped
    assert again["atRisk"] == 90 and h.states.state.shard == 0
    h.atlassian.rejected = set()
    h.clock.advance(seconds=900)
    summary = h.tick()
    assert summary["stoppedBy"] is None and summary["accountsReported"] == 180 and summary["atRisk"] == 0
    state = h.states.state
    assert state.at_risk == 0 and state.last_error is None
    counts = Counter(a for _, ids in h.atlassian.answered for a in ids)
    assert len(counts) == 180 and set(counts.values()) == {1}


def test_a_400_is_bisected_and_only_the_refused_accounts_are_quarantined():
    h = all_due_harness(270)
    ordered = sorted(h.registry.items, key=lambda a: (shard_of(a), a))
    bad = {ordered[7], ordered[100], ordered[101]}
    h.atlassian.refused = bad
    summary = h.tick()
    assert summary["stoppedBy"] is None and summary["quarantined"] == 3 and summary["badRequests"] == 2
    counts = Counter(a for _, ids in h.atlassian.answered for a in ids)
    assert set(counts) == set(ordered) - bad and set(counts.values()) == {1}
    for a in bad:
        item = h.registry.items[a]
        assert item["reportKey"] == QUARANTINE_KEY and item["quarantineReason"] == "InvalidAccountId"
        assert item["status"] == "active"
    # Extra requests only because of the 400s: without them it would be 3.
    extra = summary["requests"] - 3
    assert 0 < extra <= 3 * 2 * 7
    assert h.tick()["requests"] == 0  # quarantined accounts left the walk; the cycle is done
    h.clock.advance(days=7)
    h.run_until(h.clock.now() + WEEK)
    assert not bad & {a for _, ids in h.atlassian.answered for a in ids}


def test_a_400_for_every_request_quarantines_nothing_and_fails_the_run():
    # A refused request that Atlassian's own published test account cannot pass either is our bug (or
    # theirs), not a bad account: quarantining would silently drop the whole registry from reporting.
    h = all_due_harness(90)
    h.atlassian.script = [BadRequest(400, "InvalidRequest")] * 20
    with pytest.raises(ReportRejected, match="InvalidRequest"):
        h.tick()
    assert h.registry.writes == 0
    assert all(item["reportKey"] != QUARANTINE_KEY for item in h.registry.items.values())
    assert h.atlassian.attempts[-1][2] == [TEST_ACCOUNT_ACTIVE]
    assert len(h.atlassian.attempts) == 1 + 7 + 1  # the batch, halving down to one account, the probe
    assert h.states.state.last_error == "ReportRejected" and h.states.state.shard == 0


def test_a_lone_refused_new_account_is_quarantined_after_the_probe_passes():
    h = Harness()
    h.registry.register_new("bad-one")
    h.atlassian.refused = {"bad-one"}
    summary = h.tick()
    assert summary["quarantined"] == 1 and summary["accountsReported"] == 0
    assert [ids for _, _, ids in h.atlassian.attempts] == [["bad-one"], [TEST_ACCOUNT_ACTIVE]]
    assert h.registry.items["bad-one"]["reportKey"] == QUARANTINE_KEY
    assert h.tick()["requests"] == 0


def test_other_4xx_fail_the_run_without_quarantine():
    h = all_due_harness(10)
    h.atlassian.script = [BadRequest(404, "http_404")]
    with pytest.raises(ReportRejected, match="404"):
        h.tick()
    assert h.registry.writes == 0


def test_a_crash_mid_run_resumes_from_the_checkpoint():
    h = all_due_harness(450)
    h.atlassian.script = [None, None, RuntimeError("lambda died")]
    with pytest.raises(RuntimeError):
        h.tick()
    assert len(h.atlassian.answered) == 2
    checkpoint = h.states.state
    last = h.atlassian.answered[1][1][-1]
    # At the last reported account, or at the start of the next shard if that one ended its shard.
    assert (checkpoint.shard, checkpoint.last_account_id) in ((shard_of(last), last), (shard_of(last) + 1, None))
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


# ------------------------------------------------------------------ odd answers
class OddAtlassian(FakeAtlassian):
    """Answers through the real wire parser, naming accounts that were not in the request."""

    def __init__(self, clock, extra):
        super().__init__(clock)
        self.extra = extra

    def report(self, accounts, credential):
        ids = [a for a, _ in accounts]
        self.attempts.append((self.clock.now(), credential["id"], ids))
        self.answered.append((self.clock.now(), ids))
        body = {"accounts": [{"accountId": a, "status": "closed"} for a in self.extra]}
        body["accounts"].append({"accountId": ids[0], "status": "active"})  # a status that does not exist
        return interpret_response(200, {}, json.dumps(body).encode(), set(ids))


def test_answers_about_accounts_not_asked_about_are_counted_and_not_acted_on(caplog):
    h = all_due_harness(180)
    outsider = "5be24ad8ffffffffffffffff"
    h.registry.seed(outsider, first_cycle=1)  # in the registry, already reported in this cycle
    odd = OddAtlassian(h.clock, extra=[outsider, "someone-else"])
    with caplog.at_level("DEBUG"):
        summary = h.tick(client=odd)
    assert summary["accountsReported"] == 180 and summary["requests"] == 2
    assert outsider not in {a for _, ids in odd.answered for a in ids}
    assert summary["closed"] == 0 and summary["ignoredAnswers"] == 3 * summary["requests"]
    assert h.sender.messages == []
    assert h.registry.items[outsider]["status"] == "active"
    assert h.registry.items[outsider]["reportKey"] == report_key_for(outsider)
    logged = caplog.text + repr(summary)
    assert outsider not in logged and "someone-else" not in logged
    assert not any(a in logged for a in h.registry.items)


# ------------------------------------------------------------------ crashes between any two calls
class Crash(BaseException):
    """The Lambda dying: not an Exception, so no handler in the run sees it (no final checkpoint)."""


class CrashingPorts:
    """Wraps every port; the k-th call of a tick raises Crash, before or after the call took effect."""

    def __init__(self, h: Harness, k: int | None, after: bool):
        self.h, self.k, self.after, self.calls = h, k, after, 0
        self.done: list[str] = []  # the calls that took effect, in order

    def _wrap(self, target, name):
        method = getattr(target, name)

        def call(*args, **kwargs):
            self.calls += 1
            if self.calls == self.k and not self.after:
                raise Crash(name)
            result = method(*args, **kwargs)
            self.done.append(name)
            if self.calls == self.k:
                raise Crash(name)
            return result

        return call

    def ports(self) -> dict:
        def proxy(target, names):
            return type("Proxy", (), {n: staticmethod(self._wrap(target, n)) for n in names})()

        return {
            "registry": proxy(self.h.registry, ["query_due", "mark_reported_first", "mark_erasing", "quarantine"]),
            "state_store": proxy(self.h.states, ["load", "save"]),
            "sender": proxy(self.h.sender, ["send"]),
            "client": proxy(self.h.atlassian, ["report"]),
        }


def crash_scenario() -> Harness:
    """Due shard accounts with closed, updated and refused ones among them, plus new accounts."""
    h = all_due_harness(200)
    ordered = sorted(h.registry.items, key=lambda a: (shard_of(a), a))
    h.atlassian.closed |= {ordered[3], ordered[95], ordered[199]}
    h.atlassian.updated |= {ordered[4], ordered[150]}
    h.atlassian.refused = {ordered[120]}
    for i in range(3):
        h.registry.register_new(f"new-{i}")
    h.atlassian.closed.add("new-1")
    return h


def clean_call_count() -> int:
    h = crash_scenario()
    ports = CrashingPorts(h, None, after=True)
    h.tick(**ports.ports())
    return ports.calls


CALLS_IN_A_TICK = clean_call_count()


@pytest.mark.parametrize("after", [True, False], ids=["after-call", "before-call"])
@pytest.mark.parametrize("k", range(1, CALLS_IN_A_TICK + 1))
def test_a_crash_at_any_call_loses_nothing_and_reports_nothing_twice(k, after):
    h = crash_scenario()
    ports = CrashingPorts(h, k, after)
    with pytest.raises(Crash):
        h.tick(**ports.ports())
    # The one window no design closes: Atlassian answered, and the Lambda died before the checkpoint
    # (the very next call). That batch is reported again; missing it instead would skip a cycle.
    unsaved = ports.done[-1:] == ["report"] and h.atlassian.answered and h.atlassian.attempts[-1][2] == (
        h.atlassian.answered[-1][1]
    )
    may_repeat = set(h.atlassian.answered[-1][1]) if unsaved else set()
    summary = h.tick()  # the next tick, no crash
    assert summary["stoppedBy"] is None and summary["complete"] is True
    expected = set(h.registry.items) - h.atlassian.refused
    # The bisection's control request (Atlassian's published test account) is not a registry account.
    counts = Counter(a for _, ids in h.atlassian.answered for a in ids if a != TEST_ACCOUNT_ACTIVE)
    assert set(counts) == expected
    assert {a for a, n in counts.items() if n > 1} <= may_repeat
    assert all(n <= 2 for n in counts.values())
    closed = {a for a in h.atlassian.closed if a in h.registry.items}
    for a in closed:
        assert h.registry.items[a]["status"] == "erasing" and h.registry.items[a]["reportKey"] is None
    sent = Counter((m["action"], m["accountId"]) for m in h.sender.messages)
    # At least once each (a crash between sending and the checkpoint may repeat one: the erasure
    # consumer is idempotent per account and action), and nothing for anyone else.
    assert {a for act, a in sent if act == "erase"} == closed
    assert {a for act, a in sent if act == "refresh"} == {a for a in h.atlassian.updated}
    for a in h.atlassian.refused:
        assert h.registry.items[a]["reportKey"] == QUARANTINE_KEY
    for i in (0, 2):
        assert h.registry.items[f"new-{i}"]["reportKey"] == report_key_for(f"new-{i}")
    state = h.states.state
    assert state.pending is None
    assert state.reported_in_cycle == len(expected)
    assert h.tick()["requests"] == 0


def test_the_crash_sweep_covers_every_kind_of_call():
    h = crash_scenario()
    names = []
    ports = CrashingPorts(h, None, after=True)
    original = ports._wrap

    def spy(target, name):
        wrapped = original(target, name)

        def call(*args, **kwargs):
            names.append(name)
            return wrapped(*args, **kwargs)

        return call

    ports._wrap = spy
    h.tick(**ports.ports())
    assert set(names) == {"load", "save", "query_due", "report", "send", "mark_erasing",
                          "mark_reported_first", "quarantine"}
    assert CALLS_IN_A_TICK == len(names) >= 20


# ------------------------------------------------------------------ time
def test_a_tick_stops_before_its_budget_runs_out_with_its_work_saved():
    h = all_due_harness(900)
    starts: list[float] = []

    class SlowAtlassian(FakeAtlassian):
        def report(self_inner, accounts, credential):
            starts.append(h.budget)
            h.budget -= 100  # each request takes 100 s of the Lambda's time
            return super().report(accounts, credential)

    slow = SlowAtlassian(h.clock)
    h.budget = 500
    summary = h.tick(client=slow)
    assert summary["stoppedBy"] == "time_budget"
    assert all(left >= h.policy.min_seconds_per_request for left in starts)
    assert len(starts) == 5 and h.states.state.reported_in_cycle == 450
    h.budget = 2000
    summary = h.tick(client=slow)
    assert summary["stoppedBy"] is None and h.states.state.reported_in_cycle == 900
    counts = Counter(a for _, ids in slow.answered for a in ids)
    assert len(counts) == 900 and set(counts.values()) == {1}


def test_oldest_overdue_seconds_follows_the_cursor():
    h = all_due_harness(900)  # the cycle started a week ago: every shard is due, the oldest since T0
    h.atlassian.script = [None, RateLimited(30.0)]
    h.budget = 50.0  # the wait does not fit: checkpoint and stop
    summary = h.tick()
    assert summary["stoppedBy"] == "rate_limited"
    state = h.states.state
    assert summary["oldestOverdueSeconds"] == (h.clock.now() - state.shard_start(state.shard)).total_seconds()
    assert summary["oldestOverdueSeconds"] > 6 * 86400
    h.clock.advance(seconds=40)  # still inside the cycle
    summary = h.tick()
    assert summary["complete"] is True and h.states.state.shard == NSHARDS
    assert summary["oldestOverdueSeconds"] == 0


def test_new_accounts_skipped_in_their_first_cycle_are_not_read_again_every_tick():
    h = Harness()
    for i in range(900):
        h.registry.register_new(account(i))
    h.tick()  # reports all 900 as new
    reads: list[str] = []
    original = h.registry.query_due

    def counting(key, after=None, limit=500):
        reads.append(key)
        return original(key, after, limit)

    h.registry.query_due = counting
    saves = h.states.saves
    ticks = 4 * 24  # a day of ticks walks about 37 shards of skipped accounts
    for _ in range(ticks):
        h.clock.advance(seconds=TICK.total_seconds())
        h.tick()
    shard_reads = [k for k in reads if k != NEW_KEY]
    assert len(shard_reads) <= 37 + ticks  # each shard once, plus one look at the next per tick
    assert h.states.saves - saves <= ticks
    assert len(h.atlassian.answered) == 10  # nothing reported twice in cycle 1
