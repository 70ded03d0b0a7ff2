"""The accounts registry: one item per Atlassian account whose personal data the app holds.

The app registers every retrieval (`record`); the reporter reads what is due through the sparse
`due-index` (never a Scan) and moves items forward (`mark_reported_first`, `mark_erasing`). Every
status change is a conditional write that only moves forward. Exceptions never carry an account id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import clock
from .adapters.aws import lazy_client
from .ids import validate_account_id, validate_site
from .pseudonym import Pseudonymizer
from .reporting.planner import NEW_KEY, QUARANTINE_KEY

DUE_INDEX = "due-index"
STATUS_ACTIVE = "active"
STATUS_ERASING = "erasing"
TOMBSTONE_PREFIX = "tombstone#"


class AccountErased(Exception):
    """The account was (or is being) erased after Atlassian answered `closed`; do not store its PD."""


@dataclass(frozen=True)
class DueAccount:
    account_id: str
    updated_at: datetime
    first_cycle: int | None


@dataclass(frozen=True)
class DuePage:
    accounts: list[DueAccount]
    last_account_id: str | None  # pass as `after_account_id` for the next page; None: no more


class Registry:
    def __init__(self, table_name: str, pseudonymizer: Pseudonymizer, client: Any = None):
        self.table_name = table_name
        self.pseudonymizer = pseudonymizer
        self._client = client

    client = lazy_client("dynamodb")

    def _conditional_failed(self, error: Exception) -> bool:
        return (
            getattr(error, "response", {}).get("Error", {}).get("Code") == "ConditionalCheckFailedException"
        )

    def _conditional_update(self, account_id: str, **request: Any) -> dict[str, Any] | None:
        """update_item on the account's item: DynamoDB's answer, or None when the condition did not hold."""
        try:
            return self.client.update_item(
                TableName=self.table_name, Key={"accountId": {"S": account_id}}, **request
            )
        except Exception as error:
            if self._conditional_failed(error):
                return None
            raise

    def tombstone_key(self, account_id: str) -> str:
        return TOMBSTONE_PREFIX + self.pseudonymizer.account(account_id)

    # ---------------------------------------------------------------- app side
    def record(self, account_id: str, site: str, retrieved_at: datetime) -> None:
        """Registers that the app holds PD of `account_id` retrieved through `site` at `retrieved_at`."""
        validate_account_id(account_id)
        validate_site(site)  # the id an uninstall will name; never free text (it could carry an email)
        if not isinstance(retrieved_at, datetime) or retrieved_at.tzinfo is None:
            raise ValueError("retrieved_at must be a timezone-aware datetime")
        tombstone = self.client.get_item(
            TableName=self.table_name,
            Key={"accountId": {"S": self.tombstone_key(account_id)}},
            ProjectionExpression="accountId",
            ConsistentRead=True,
        )
        if "Item" in tombstone:
            raise AccountErased("account was erased after it was closed; registration refused")
        retrieved = clock.format_rfc3339(retrieved_at)
        answer = self._conditional_update(
            account_id,
            # Only new or active items: an `erasing` item must never get its reportKey back.
            ConditionExpression="attribute_not_exists(accountId) OR #status = :active",
            UpdateExpression=(
                "ADD sites :site "
                "SET #status = :active, updatedAt = if_not_exists(updatedAt, :retrieved), "
                "reportKey = if_not_exists(reportKey, :new), "
                "registeredAt = if_not_exists(registeredAt, :now)"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":site": {"SS": [site]},
                ":active": {"S": STATUS_ACTIVE},
                ":retrieved": {"S": retrieved},
                ":new": {"S": NEW_KEY},
                ":now": {"S": clock.format_rfc3339(clock.now())},
            },
            ReturnValues="ALL_NEW",
        )
        if answer is None:
            raise AccountErased("account is being erased after it was closed; registration refused")
        stored = answer["Attributes"]["updatedAt"]["S"]
        # Fixed-width UTC strings compare like the instants they denote.
        if stored > retrieved:
            self._lower_updated_at(account_id, retrieved)

    def _lower_updated_at(self, account_id: str, retrieved: str) -> None:
        """Keeps the oldest retrieval time: only ever moves updatedAt backwards."""
        # A failed condition is fine: a concurrent older retrieval won, or the account moved to erasing.
        self._conditional_update(
            account_id,
            ConditionExpression="#status = :active AND updatedAt > :retrieved",
            UpdateExpression="SET updatedAt = :retrieved",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":active": {"S": STATUS_ACTIVE}, ":retrieved": {"S": retrieved}},
        )

    # ---------------------------------------------------------------- reporter side
    def query_due(self, report_key: str, after_account_id: str | None = None, limit: int = 500) -> DuePage:
        """One page of accounts under `report_key` ("new" or "s#NNN"), in accountId order."""
        values: dict[str, Any] = {":key": {"S": report_key}}
        condition = "reportKey = :key"
        if after_account_id is not None:
            condition += " AND accountId > :after"
            values[":after"] = {"S": after_account_id}
        answer = self.client.query(
            TableName=self.table_name,
            IndexName=DUE_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            Limit=limit,
        )
        accounts = []
        for item in answer.get("Items", []):
            first = item.get("firstCycle")
            accounts.append(
                DueAccount(
                    account_id=item["accountId"]["S"],
                    updated_at=clock.parse_rfc3339(item["updatedAt"]["S"]),
                    first_cycle=int(first["N"]) if first else None,
                )
            )
        last_key = answer.get("LastEvaluatedKey")
        return DuePage(accounts, last_key["accountId"]["S"] if last_key else None)

    def mark_reported_first(self, account_id: str, shard_key: str, cycle: int) -> bool:
        """Moves a new account into its shard; False if it was no longer `new` (already moved)."""
        answer = self._conditional_update(
            account_id,
            ConditionExpression="reportKey = :new",
            UpdateExpression="SET reportKey = :shard, firstCycle = :cycle",
            ExpressionAttributeValues={
                ":new": {"S": NEW_KEY},
                ":shard": {"S": shard_key},
                ":cycle": {"N": str(cycle)},
            },
        )
        return answer is not None

    def mark_erasing(self, account_id: str) -> bool:
        """active → erasing and out of the due-index; False if it already was not active (idempotent)."""
        answer = self._conditional_update(
            account_id,
            ConditionExpression="#status = :active",
            UpdateExpression="SET #status = :erasing REMOVE reportKey",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":active": {"S": STATUS_ACTIVE},
                ":erasing": {"S": STATUS_ERASING},
            },
        )
        return answer is not None

    def quarantine(self, account_id: str, from_key: str, reason: str, cycle: int) -> bool:
        """Moves an account Atlassian refused on its own out of the walk into the sparse `quarantine` key.

        It stays `active` (its PD is still held and must be dealt with by an operator); `reason` is
        Atlassian's errorType, never a message that could echo the id. False if the account had moved.
        """
        answer = self._conditional_update(
            account_id,
            ConditionExpression="#status = :active AND reportKey = :from",
            UpdateExpression=(
                "SET reportKey = :quarantine, quarantineReason = :reason, quarantinedAt = :now, "
                "quarantinedFrom = :from, quarantineCycle = :cycle"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":active": {"S": STATUS_ACTIVE},
                ":from": {"S": from_key},
                ":quarantine": {"S": QUARANTINE_KEY},
                ":reason": {"S": reason},
                ":now": {"S": clock.format_rfc3339(clock.now())},
                ":cycle": {"N": str(cycle)},
            },
        )
        return answer is not None

    def count_quarantined(self) -> int:
        return count_quarantined(self.client, self.table_name)

    def get(self, account_id: str) -> dict[str, Any] | None:
        """The item as plain Python values (sets as sorted lists), or None."""
        answer = self.client.get_item(
            TableName=self.table_name, Key={"accountId": {"S": account_id}}, ConsistentRead=True
        )
        item = answer.get("Item")
        return {k: _plain(v) for k, v in item.items()} if item else None


def count_quarantined(client: Any, table_name: str) -> int:
    """Accounts under the `quarantine` key (a COUNT query on the sparse index, never a Scan)."""
    total, start = 0, None
    while True:
        kwargs: dict[str, Any] = {
            "TableName": table_name,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "reportKey = :key",
            "ExpressionAttributeValues": {":key": {"S": QUARANTINE_KEY}},
            "Select": "COUNT",
        }
        if start:
            kwargs["ExclusiveStartKey"] = start
        answer = client.query(**kwargs)
        total += answer.get("Count", 0)
        start = answer.get("LastEvaluatedKey")
        if not start:
            return total


def _plain(value: dict[str, Any]) -> Any:
    kind, raw = next(iter(value.items()))
    if kind == "S":
        return raw
    if kind == "N":
        return int(raw) if raw.lstrip("-").isdigit() else float(raw)
    if kind in ("SS", "NS"):
        return sorted(raw)
    if kind == "BOOL":
        return raw
    if kind == "NULL":
        return None
    if kind == "L":
        return [_plain(v) for v in raw]
    if kind == "M":
        return {k: _plain(v) for k, v in raw.items()}
    return raw
