"""One reporter tick: report new accounts and every due shard, act on the answers, checkpoint.

Adapters (registry, state store, queue sender, report client, clock, sleep, remaining time) are
passed in, so the whole cycle runs in unit tests with in-memory fakes and accelerated time. The AWS
adapters at the bottom import boto3 only when they are first used.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from .. import clock
from ..adapters.aws import lazy_client
from ..ids import TEST_ACCOUNT_ACTIVE, is_valid_account_id
from . import contract
from .planner import (
    NEW_KEY,
    NSHARDS,
    STATE_PK,
    Batcher,
    Candidate,
    CycleState,
    PendingAnswer,
    can_roll_over,
    cursor_after,
    due_shard_limit,
    note_cycle_period,
    oldest_overdue_seconds,
    report_key_for,
    report_key_for_shard,
    roll_over,
)

MESSAGE_SCHEMA = 1


# ------------------------------------------------------------------ errors
class ConcurrentRunError(RuntimeError):
    """Another run moved the reporter state first; this one must stop without reporting more."""


class NoUsableCredential(RuntimeError):
    """Every configured credential was rejected (401/403); raised by the handler after the checkpoint."""


class ReportRejected(RuntimeError):
    """Atlassian answered 4xx (other than 401/403/429): the request itself is wrong."""


class EnqueueError(RuntimeError):
    """Some action messages could not be sent to the queue after retries."""


# ------------------------------------------------------------------ ports
class RegistryPort(Protocol):
    def query_due(self, report_key: str, after_account_id: str | None, limit: int) -> Any: ...
    def mark_reported_first(self, account_id: str, shard_key: str, cycle: int) -> bool: ...
    def mark_erasing(self, account_id: str) -> bool: ...
    def quarantine(self, account_id: str, from_key: str, reason: str, cycle: int) -> bool: ...


class StateStorePort(Protocol):
    def load(self) -> CycleState | None: ...
    def save(self, state: CycleState) -> None: ...


class ActionSenderPort(Protocol):
    def send(self, messages: Sequence[Mapping[str, Any]]) -> int: ...


class ReportClientPort(Protocol):
    def report(self, accounts: Sequence[tuple[str, datetime]], credential: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class RunPolicy:
    page_size: int = 500
    batch_size: int = contract.MAX_ACCOUNTS_PER_REQUEST
    # Never start a request unless this much time is left (client timeout plus bookkeeping).
    min_seconds_per_request: float = 30.0
    max_rate_limit_waits: int = 10
    unavailable_retries: int = 3
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 30.0
    # A 400 bisection whose first isolated account is refused before any part was answered sends one
    # control request (Atlassian's published active test account): if that is refused too, the 400 is
    # about the request, not an account, and nothing is quarantined.
    probe_account_id: str = TEST_ACCOUNT_ACTIVE


class _Stop(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------ the run
class ReportingRun:
    def __init__(
        self,
        *,
        registry: RegistryPort,
        state_store: StateStorePort,
        sender: ActionSenderPort,
        client: ReportClientPort,
        credentials: Sequence[Mapping[str, Any]],
        now: Callable[[], datetime] = clock.now,
        sleep: Callable[[float], None],
        remaining_seconds: Callable[[], float],
        default_cycle_length: timedelta = timedelta(days=7),
        policy: RunPolicy | None = None,
        jitter: Callable[[], float] = random.random,
        log: Any = None,
    ):
        if not credentials:
            raise ValueError("no Atlassian credentials are configured")
        self.registry = registry
        self.state_store = state_store
        self.sender = sender
        self.client = client
        self.credentials = list(credentials)
        self.now = now
        self.sleep = sleep
        self.remaining_seconds = remaining_seconds
        self.default_cycle_length = default_cycle_length
        self.policy = policy or RunPolicy()
        self.jitter = jitter
        self.log = log or logging.getLogger(__name__)
        self.batcher = Batcher(self.policy.batch_size)
        self.state: CycleState
        self.summary: dict[str, Any] | None = None  # set when a run ends, also when it raises
        self._credential_index = 0
        self._dirty = False
        self.counts = {
            "requests": 0,
            "accountsReported": 0,
            "newReported": 0,
            "maxBatch": 0,
            "closed": 0,
            "updated": 0,
            "enqueued": 0,
            "rateLimited": 0,
            "unavailable": 0,
            "credentialFallbacks": 0,
            "skippedInvalid": 0,
            "ignoredAnswers": 0,
            "badRequests": 0,
            "quarantined": 0,
            "resumedAnswers": 0,
        }

    # ---------------------------------------------------------------- entry point
    def run(self) -> dict[str, Any]:
        state = self.state_store.load()
        if state is None:
            state = CycleState.initial(self.now(), self.default_cycle_length)
            state.last_tick_at = state.cycle_start
            self.state_store.save(state)
        self.state = state
        stopped: str | None = None
        try:
            self._resume_pending_answer()
            self._report_everything_due()
        except _Stop as stop:
            stopped = stop.reason
        except ConcurrentRunError:
            raise  # another run owns the state now: this one must not write it again
        except Exception as error:
            self._final_checkpoint(type(error).__name__)
            self.summary = self._summary(type(error).__name__)
            raise
        self._final_checkpoint(stopped)
        summary = self.summary = self._summary(stopped)
        self.log.info("report tick finished", extra={"summary": summary})
        return summary

    def _resume_pending_answer(self) -> None:
        """A previous run stopped between checkpointing an answer and acting on all of it: finish that."""
        if self.state.pending:
            self.counts["resumedAnswers"] += 1
            self._apply_pending()

    def _report_everything_due(self) -> None:
        # Roll over first, so new accounts found on this tick count for the cycle they are reported in.
        self._roll_over_if_due()
        self._queue_new_accounts()
        while True:
            self._walk_due_shards()
            if not self._roll_over_if_due():
                break
        if self.batcher.has_new:
            # New accounts are not held back for a fuller batch: they are reported on the tick they appear.
            while batch := self.batcher.flush():
                self._send(batch)

    def _roll_over_if_due(self) -> bool:
        if not can_roll_over(self.state, self.now()):
            return False
        self.state = roll_over(self.state, self.now())
        self._checkpoint()
        self.log.info("reporting cycle started", extra={"cycle": self.state.cycle})
        return True

    def _queue_new_accounts(self) -> None:
        after: str | None = None
        while True:
            page = self.registry.query_due(NEW_KEY, after, self.policy.page_size)
            for account in page.accounts:
                if not is_valid_account_id(account.account_id):
                    self.counts["skippedInvalid"] += 1
                    continue
                if batch := self.batcher.add(Candidate(account.account_id, account.updated_at, None)):
                    self._send(batch)
            if page.last_account_id is None:
                return
            after = page.last_account_id

    def _walk_due_shards(self) -> None:
        """Reads every due shard from the cursor on; full batches are sent as they fill."""
        state = self.state
        limit = due_shard_limit(state, self.now())
        shard, after = state.shard, state.last_account_id
        while shard <= limit and shard < NSHARDS:
            page = self.registry.query_due(report_key_for_shard(shard), after, self.policy.page_size)
            for account in page.accounts:
                after = account.account_id
                skipped = account.first_cycle is not None and account.first_cycle >= state.cycle
                if not skipped and not is_valid_account_id(account.account_id):
                    self.counts["skippedInvalid"] += 1
                    skipped = True
                if skipped:
                    # Done for this cycle without a request (first reported as new in it, or never
                    # reportable): with nothing walked held back, the cursor may pass it, so the next
                    # tick does not read it again. Worth one write per tick (after a bulk import only).
                    if not self._walked_pending():
                        state.shard, state.last_account_id = shard, account.account_id
                        self._dirty = True
                    continue
                if batch := self.batcher.add(Candidate(account.account_id, account.updated_at, shard)):
                    self._send(batch)
            if page.last_account_id is not None:
                after = page.last_account_id
                continue
            if shard == NSHARDS - 1:
                # End of the cycle's last shard: the remainder goes out now, partial or not.
                while batch := self.batcher.flush():
                    self._send(batch)
                self.state.shard, self.state.last_account_id = NSHARDS, None
                self._checkpoint()
            elif not self._walked_pending():
                # Nothing of this shard is waiting: the cursor may start at the next one (kept in memory;
                # the next checkpoint carries it, no write of its own).
                state.shard, state.last_account_id = shard + 1, None
            shard, after = shard + 1, None

    def _walked_pending(self) -> bool:
        return any(not c.is_new for c in self.batcher.pending)

    # ---------------------------------------------------------------- one batch
    def _send(self, batch: list[Candidate]) -> None:
        outcome = self._request(batch)
        if isinstance(outcome, contract.Answered):
            self._apply_answer(batch, outcome)
        else:
            self._isolate_refused(batch, outcome)

    def _request(self, batch: list[Candidate]) -> contract.Answered | contract.BadRequest:
        """One report, retried through 429 / 5xx / credential fall-back; Answered or BadRequest, or _Stop."""
        accounts = [(c.account_id, c.updated_at) for c in batch]
        rate_waits = unavailable_attempts = 0
        while True:
            not_before = self.state.retry_not_before
            if not_before is not None and self.now() < not_before:
                raise _Stop("rate_limited")  # a Retry-After from an earlier tick has not elapsed yet
            if self.remaining_seconds() < self.policy.min_seconds_per_request:
                raise _Stop("time_budget")
            credential = self.credentials[self._credential_index]
            outcome = self.client.report(accounts, credential)
            self.counts["requests"] += 1
            if not_before is not None:
                self.state.retry_not_before = None
                self._dirty = True
            self._note_cycle_period(outcome.cycle_period)
            match outcome:
                case contract.Answered():
                    return outcome
                case contract.RateLimited(retry_after_seconds=wait):
                    self.counts["rateLimited"] += 1
                    rate_waits += 1
                    fits = wait + self.policy.min_seconds_per_request <= self.remaining_seconds()
                    if rate_waits > self.policy.max_rate_limit_waits or not fits:
                        # Remembered, so that no later tick calls before the wait has elapsed either.
                        self.state.retry_not_before = self.now() + timedelta(seconds=wait)
                        self._dirty = True
                        raise _Stop("rate_limited")
                    self.sleep(wait)
                case contract.Unavailable():
                    self.counts["unavailable"] += 1
                    if unavailable_attempts >= self.policy.unavailable_retries:
                        raise _Stop("unavailable")
                    delay = min(
                        self.policy.backoff_cap_seconds,
                        self.policy.backoff_base_seconds * 2**unavailable_attempts,
                    ) * (0.5 + 0.5 * self.jitter())
                    unavailable_attempts += 1
                    if delay + self.policy.min_seconds_per_request > self.remaining_seconds():
                        raise _Stop("unavailable")
                    self.sleep(delay)
                case contract.CredentialRejected():
                    self._credential_index += 1
                    if self._credential_index >= len(self.credentials):
                        # The batch stays due (the cursor is before it): the next tick retries it.
                        self.state.at_risk = len(batch)
                        self._dirty = True
                        self.log.error(
                            "every Atlassian credential was rejected",
                            extra={"status": outcome.status_code, "accountsAtRisk": len(batch)},
                        )
                        raise _Stop("no_credential")
                    self.counts["credentialFallbacks"] += 1
                    self.log.warning(
                        "credential rejected, falling back",
                        extra={"status": outcome.status_code, "credentialIndex": self._credential_index},
                    )
                case contract.BadRequest():
                    return outcome
                case _:
                    raise TypeError("unexpected report outcome")

    def _isolate_refused(self, batch: list[Candidate], refused: contract.BadRequest) -> None:
        """400: bisect the batch, report every part Atlassian accepts, quarantine the accounts it refuses
        on their own. Costs extra requests only when a 400 happens (about 2·log2(90) per bad account)."""
        self.counts["badRequests"] += 1
        if refused.status_code != 400:
            raise ReportRejected(f"Atlassian refused the report (status {refused.status_code})")
        self.log.warning("report refused (400), isolating", extra={"errorType": refused.error_type})
        confirmed = False  # some part was answered, or the control probe was: the 400 is per account
        parts, outcome = [batch], refused  # a stack; halves go on it right first, so order is kept
        while parts:
            part = parts.pop()
            if part is not batch:
                outcome = self._request(part)
            if isinstance(outcome, contract.Answered):
                self._apply_answer(part, outcome)
                confirmed = True
                continue
            if outcome.status_code != 400:
                raise ReportRejected(f"Atlassian refused the report (status {outcome.status_code})")
            if len(part) > 1:
                parts.extend(_halves(part))
                continue
            if not confirmed:
                confirmed = self._probe()
            # At once, before a later part moves the cursor past it: it must leave the walk now or be
            # seen again, never skipped.
            self._quarantine(part[0], outcome.error_type)

    def _probe(self) -> bool:
        """True if Atlassian accepts a report of its own published active test account right now."""
        probe = Candidate(self.policy.probe_account_id, self.now(), None)
        outcome = self._request([probe])
        if isinstance(outcome, contract.Answered):
            return True
        raise ReportRejected(
            f"Atlassian refuses every report (status {outcome.status_code}, errorType {outcome.error_type})"
        )

    def _quarantine(self, candidate: Candidate, error_type: str) -> None:
        from_key = NEW_KEY if candidate.is_new else report_key_for_shard(candidate.shard)  # type: ignore[arg-type]
        if self.registry.quarantine(candidate.account_id, from_key, error_type, self.state.cycle):
            self.counts["quarantined"] += 1
        self.log.warning("account quarantined", extra={"errorType": error_type})

    def _apply_answer(self, batch: list[Candidate], answer: contract.Answered) -> None:
        statuses = dict(answer.actions)
        pending = PendingAnswer(
            cycle=self.state.cycle,
            reported_at=clock.format_rfc3339(self.now()),
            closed=tuple(a for a, status in answer.actions if status == "closed"),
            updated=tuple(a for a, status in answer.actions if status == "updated"),
            new=tuple(c.account_id for c in batch if c.is_new and statuses.get(c.account_id) != "closed"),
        )
        self.counts["closed"] += len(pending.closed)
        self.counts["updated"] += len(pending.updated)
        self.counts["ignoredAnswers"] += answer.unknown_status + answer.unrequested
        self.counts["accountsReported"] += len(batch)
        self.counts["newReported"] += sum(1 for c in batch if c.is_new)
        self.counts["maxBatch"] = max(self.counts["maxBatch"], len(batch))
        self.state.shard, self.state.last_account_id = cursor_after(
            batch, self.state.shard, self.state.last_account_id
        )
        self.state.reported_in_cycle += len(batch)
        self.state.at_risk = 0  # a credential works again
        # The answer is made durable together with the cursor before anything acts on it: a crash from
        # here on neither reports the batch twice nor loses its answer (the next tick re-applies it).
        self.state.pending = pending or None
        self._checkpoint()
        if pending:
            self._apply_pending()

    def _apply_pending(self) -> None:
        pending = self.state.pending
        assert pending is not None
        messages = [_message("erase", "closed", a, pending.reported_at, pending.cycle) for a in pending.closed]
        messages += [
            _message("refresh", "updated", a, pending.reported_at, pending.cycle) for a in pending.updated
        ]
        if messages:
            self.counts["enqueued"] += self.sender.send(messages)
        for account_id in pending.closed:
            # Out of the due-index, so it is never reported again (erasure then tombstones it).
            self.registry.mark_erasing(account_id)
        for account_id in pending.new:
            self.registry.mark_reported_first(account_id, report_key_for(account_id), pending.cycle)
        # Applied: the next checkpoint (the next batch's, or the tick's last) drops it from the item.
        self.state.pending = None
        self._dirty = True

    # ---------------------------------------------------------------- state
    def _note_cycle_period(self, period: timedelta | None) -> None:
        if period is not None and note_cycle_period(self.state, period, _describe(period)):
            self._dirty = True
            self.log.info("Cycle-Period noted", extra={"cycleSeconds": period.total_seconds()})

    def _checkpoint(self) -> None:
        self.state.last_tick_at = self.now()
        self.state_store.save(self.state)
        self._dirty = False

    def _final_checkpoint(self, error: str | None) -> None:
        # Only when something changed: an idle tick must not cost a write.
        if error != self.state.last_error:
            self.state.last_error = error
            self._dirty = True
        if self._dirty:
            self._checkpoint()

    def _summary(self, stopped: str | None) -> dict[str, Any]:
        state = self.state
        return {
            **self.counts,
            "deferred": len(self.batcher),  # due, held back to fill a batch on a later tick
            "cycle": state.cycle,
            "cycleStart": clock.format_rfc3339(state.cycle_start),
            "cycleLengthSeconds": state.cycle_length.total_seconds(),
            "cycleSource": state.cycle_source,
            "position": state.shard,
            "atRisk": state.at_risk,
            "oldestOverdueSeconds": oldest_overdue_seconds(state, self.now()),
            # Without a stop the walk read every due shard to its end; only held-back accounts remain.
            "complete": stopped is None and len(self.batcher) == 0,
            "stoppedBy": stopped,
        }


def _halves(part: list[Candidate]) -> list[list[Candidate]]:
    """[right, left]: popped from the end, the left half goes first, keeping the batch's order."""
    middle = (len(part) + 1) // 2
    return [part[middle:], part[:middle]]


def _describe(period: timedelta) -> str:
    seconds = int(period.total_seconds())
    if seconds % 86_400 == 0:
        return f"Cycle-Period P{seconds // 86_400}D"
    return f"Cycle-Period PT{seconds}S"


def _message(action: str, reason: str, account_id: str, reported_at: str, cycle: int) -> dict[str, Any]:
    return {
        "schema": MESSAGE_SCHEMA,
        "action": action,
        "reason": reason,
        "accountId": account_id,
        "reportedAt": reported_at,
        "cycle": cycle,
    }


def run_tick(**kwargs: Any) -> dict[str, Any]:
    """`ReportingRun(**kwargs).run()`: one tick's summary (no personal data in it)."""
    return ReportingRun(**kwargs).run()


# ------------------------------------------------------------------ AWS adapters
def _conditional_failed(error: Exception) -> bool:
    return getattr(error, "response", {}).get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoStateStore:
    """The reporter's single state item; every save is conditional on the seq it read."""

    def __init__(self, table_name: str, client: Any = None):
        self.table_name = table_name
        self._client = client

    client = lazy_client("dynamodb")

    def load(self) -> CycleState | None:
        answer = self.client.get_item(
            TableName=self.table_name, Key={"pk": {"S": STATE_PK}}, ConsistentRead=True
        )
        item = answer.get("Item")
        return CycleState.from_item(item) if item else None

    def save(self, state: CycleState) -> None:
        expected = state.seq
        state.seq = expected + 1
        if expected == 0:
            condition, values = "attribute_not_exists(pk)", None
        else:
            condition, values = "seq = :expected", {":expected": {"N": str(expected)}}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": state.to_item(),
            "ConditionExpression": condition,
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self.client.put_item(**kwargs)
        except Exception as error:
            state.seq = expected
            if _conditional_failed(error):
                raise ConcurrentRunError("reporter state was moved by another run") from None
            raise


class SqsActionSender:
    """SendMessageBatch, 10 per call; failed entries are retried, then reported as an error."""

    def __init__(self, queue_url: str, client: Any = None, attempts: int = 3):
        self.queue_url = queue_url
        self._client = client
        self.attempts = attempts

    client = lazy_client("sqs")

    def send(self, messages: Sequence[Mapping[str, Any]]) -> int:
        sent = 0
        for start in range(0, len(messages), 10):
            chunk = {
                str(i): json.dumps(m, separators=(",", ":"))
                for i, m in enumerate(messages[start : start + 10])
            }
            for _ in range(self.attempts):
                answer = self.client.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": key, "MessageBody": body} for key, body in chunk.items()],
                )
                for ok in answer.get("Successful", []):
                    chunk.pop(ok["Id"], None)
                    sent += 1
                if not chunk:
                    break
            if chunk:
                raise EnqueueError(f"{len(chunk)} action messages could not be enqueued")
        return sent
