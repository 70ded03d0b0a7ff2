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
from ..ids import is_valid_account_id
from . import contract
from .planner import (
    NEW_KEY,
    NSHARDS,
    STATE_PK,
    Batcher,
    Candidate,
    CycleState,
    can_roll_over,
    cursor_after,
    due_shard_limit,
    note_cycle_period,
    report_key_for,
    report_key_for_shard,
    roll_over,
)

MESSAGE_SCHEMA = 1


# ------------------------------------------------------------------ errors
class ConcurrentRunError(RuntimeError):
    """Another run moved the reporter state first; this one must stop without reporting more."""


class NoUsableCredential(RuntimeError):
    """Every configured credential was rejected (401/403)."""


class ReportRejected(RuntimeError):
    """Atlassian answered 4xx (other than 401/403/429): the request itself is wrong."""


class EnqueueError(RuntimeError):
    """Some action messages could not be sent to the queue after retries."""


# ------------------------------------------------------------------ ports
class RegistryPort(Protocol):
    def query_due(self, report_key: str, after_account_id: str | None, limit: int) -> Any: ...
    def mark_reported_first(self, account_id: str, shard_key: str, cycle: int) -> bool: ...
    def mark_erasing(self, account_id: str) -> bool: ...


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
            self._report_everything_due()
        except _Stop as stop:
            stopped = stop.reason
        except ConcurrentRunError:
            raise  # another run owns the state now: this one must not write it again
        except Exception as error:
            self._final_checkpoint(type(error).__name__)
            raise
        self._final_checkpoint(stopped)
        summary = self._summary(stopped)
        self.log.info("report tick finished", extra={"summary": summary})
        return summary

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
                if account.first_cycle is not None and account.first_cycle >= state.cycle:
                    continue  # first reported as a new account in this cycle already
                if not is_valid_account_id(account.account_id):
                    self.counts["skippedInvalid"] += 1
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
            shard, after = shard + 1, None

    # ---------------------------------------------------------------- one request
    def _send(self, batch: list[Candidate]) -> None:
        accounts = [(c.account_id, c.updated_at) for c in batch]
        rate_waits = unavailable_attempts = 0
        while True:
            if self.remaining_seconds() < self.policy.min_seconds_per_request:
                raise _Stop("time_budget")
            credential = self.credentials[self._credential_index]
            outcome = self.client.report(accounts, credential)
            self.counts["requests"] += 1
            self._note_cycle_period(outcome.cycle_period)
            match outcome:
                case contract.Answered():
                    self._apply_answer(batch, outcome)
                    return
                case contract.RateLimited(retry_after_seconds=wait):
                    self.counts["rateLimited"] += 1
                    rate_waits += 1
                    fits = wait + self.policy.min_seconds_per_request <= self.remaining_seconds()
                    if rate_waits > self.policy.max_rate_limit_waits or not fits:
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
                        raise NoUsableCredential("every configured Atlassian credential was rejected")
                    self.counts["credentialFallbacks"] += 1
                    self.log.warning(
                        "credential rejected, falling back",
                        extra={"status": outcome.status_code, "credentialIndex": self._credential_index},
                    )
                case contract.BadRequest():
                    raise ReportRejected(
                        f"Atlassian refused the report (status {outcome.status_code}, "
                        f"errorType {outcome.error_type})"
                    )
                case _:
                    raise TypeError("unexpected report outcome")

    def _apply_answer(self, batch: list[Candidate], answer: contract.Answered) -> None:
        reported_at = clock.format_rfc3339(self.now())
        cycle = self.state.cycle
        statuses = dict(answer.actions)
        messages = [
            _message("erase", "closed", account_id, reported_at, cycle)
            if status == "closed"
            else _message("refresh", "updated", account_id, reported_at, cycle)
            for account_id, status in answer.actions
        ]
        # Enqueue before anything else moves: if the queue fails, the run raises with the cursor
        # still before this batch, so the next tick reports it again and its answer is not lost.
        if messages:
            self.counts["enqueued"] += self.sender.send(messages)
        for account_id, status in answer.actions:
            if status == "closed":
                # Out of the due-index, so it is never reported again (erasure then tombstones it).
                self.registry.mark_erasing(account_id)
                self.counts["closed"] += 1
            else:
                self.counts["updated"] += 1
        self.counts["ignoredAnswers"] += answer.unknown_status + answer.unrequested
        for candidate in batch:
            if candidate.is_new and statuses.get(candidate.account_id) != "closed":
                self.registry.mark_reported_first(
                    candidate.account_id, report_key_for(candidate.account_id), cycle
                )
        self.counts["accountsReported"] += len(batch)
        self.counts["newReported"] += sum(1 for c in batch if c.is_new)
        self.counts["maxBatch"] = max(self.counts["maxBatch"], len(batch))
        self.state.shard, self.state.last_account_id = cursor_after(
            batch, self.state.shard, self.state.last_account_id
        )
        self.state.reported_in_cycle += len(batch)
        self._dirty = True
        self._checkpoint()

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
            "position": state.shard,
            # Without a stop the walk read every due shard to its end; only held-back accounts remain.
            "complete": stopped is None and len(self.batcher) == 0,
            "stoppedBy": stopped,
        }


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

    @property
    def client(self) -> Any:
        if self._client is None:
            from ..adapters import aws

            self._client = aws.client("dynamodb")
        return self._client

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

    @property
    def client(self) -> Any:
        if self._client is None:
            from ..adapters import aws

            self._client = aws.client("sqs")
        return self._client

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
