"""Deletion audit records (docs/architecture.md, AuditTable): what was erased, when, where; no PD.

The subject is the keyed pseudonym of the account id; the record holds counts and timestamps only.
Its attribute names must stay within the IAM condition on AuditTable in infra/template.yaml
(`AUDIT_ATTRIBUTES`), which lets the erasure function write nothing else there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .. import clock
from .engine import StoreResult, error_code, to_item

AUDIT_SCHEMA = 1
# Keep in sync with the dynamodb:Attributes condition on AuditTable in infra/template.yaml.
AUDIT_ATTRIBUTES = (
    "recordId",
    "day",
    "recordedAt",
    "action",
    "subject",
    "source",
    "stores",
    "verified",
    "startedAt",
    "finishedAt",
    "schema",
)
_SUBJECT = re.compile(r"[0-9a-f]{64}")  # HMAC-SHA256 hex: anything else could be a raw id


def record_id(action: str, subject: str, cycle: int | None = None) -> str:
    """`erase#<subject>` (exactly one per closed account) or `refresh#<subject>#<cycle>`."""
    if not _SUBJECT.fullmatch(subject):
        raise ValueError("subject must be a pseudonym (64 hex characters)")
    if action == "erase":
        return f"erase#{subject}"
    if action == "refresh":
        if cycle is None:
            raise ValueError("a refresh record needs its cycle")
        return f"refresh#{subject}#{cycle}"
    raise ValueError("action must be erase or refresh")


def build_record(
    *,
    action: str,
    subject: str,
    cycle: int | None,
    reported_at: str | None,
    results: Sequence[StoreResult],
    started_at: datetime,
    finished_at: datetime,
) -> dict[str, Any]:
    source: dict[str, Any] = {"reason": "closed" if action == "erase" else "updated"}
    if cycle is not None:
        source["cycle"] = cycle
    if reported_at is not None:
        source["reportedAt"] = reported_at
    record = {
        "recordId": record_id(action, subject, cycle),
        "day": finished_at.astimezone(UTC).date().isoformat(),
        "recordedAt": clock.format_rfc3339(finished_at),
        "action": action,
        "subject": subject,
        "source": source,
        "stores": {
            r.store: {
                "found": r.found,
                "deleted": r.deleted,
                "scrubbed": r.scrubbed,
                "remaining": r.remaining,
            }
            for r in results
        },
        "verified": all(r.remaining == 0 for r in results),
        "startedAt": clock.format_rfc3339(started_at),
        "finishedAt": clock.format_rfc3339(finished_at),
        "schema": AUDIT_SCHEMA,
    }
    if not set(record) <= set(AUDIT_ATTRIBUTES):  # the IAM condition would refuse the put
        raise ValueError("audit record has attributes outside AUDIT_ATTRIBUTES")
    return record


class AuditWriter:
    def __init__(self, table_name: str, dynamodb: Any):
        self._table = table_name
        self._ddb = dynamodb

    def write(self, record: dict[str, Any]) -> bool:
        """Puts the record once; False when it already exists (the action was done before)."""
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=to_item(record),
                ConditionExpression="attribute_not_exists(recordId)",
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True
