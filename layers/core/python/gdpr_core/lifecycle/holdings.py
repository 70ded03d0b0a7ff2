"""What is held, by age: the oldest copy per store of the personal-data map, for `gdprctl status`.

Retention (storage limitation) is only as good as what it leaves behind; this reads each store whose
copies carry a retrieval time and reports the oldest one, how many copies were read and how many
are already past the store's `maxAgeDays`. Where the time comes from (`basis`):
- `dynamodb` stores with `ageAttribute`: that attribute (RFC 3339), by a Scan projecting only it;
- `s3` stores: each object version's `LastModified` (delete markers are not copies), listed under
  the fixed part of `prefixTemplate`;
- the `registry`: `updatedAt` of active items (the oldest retrieval time of what is held for the
  account, docs/lifecycle.md); tombstones and accounts being erased are not held copies;
- anything else (DynamoDB stores without `ageAttribute`, hooks): `untimed`, and not read at all.

Cost: one full read of every timed store (a projection does not make a Scan cheaper: DynamoDB
charges for the whole items read). An operator command, never a hot path.

The rows hold store names, times and counts only: no account id, key, site or email. Values that
are missing or not RFC 3339 are counted as `unreadable` (the retention sweep never purges them on a
guess, so the operator should see them) and never stop the report. A store that cannot be read
(missing table, access denied) gives a row with `error` (the AWS error code) instead of failing
the whole status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from .. import clock
from ..erasure import pdmap as pdm
from ..erasure.engine import error_code
from ..registry import TOMBSTONE_PREFIX
from .retention import KEYS, STATE_KEY

UNTIMED = "untimed"
ACTIVE = "active"


def _age_days(now: datetime, when: datetime) -> float:
    return round((now - when).total_seconds() / 86400, 1)


class _Tally:
    """Oldest time, copies read, unreadable ones and those past a cutoff; no value is kept but the oldest."""

    def __init__(self, cutoff: datetime | None):
        self.cutoff = cutoff
        self.oldest: datetime | None = None
        self.copies = self.unreadable = self.past = 0

    def add(self, when: datetime | None) -> None:
        self.copies += 1
        if when is None:
            self.unreadable += 1
            return
        if self.oldest is None or when < self.oldest:
            self.oldest = when
        if self.cutoff is not None and when < self.cutoff:
            self.past += 1


def _parse(value: Any) -> datetime | None:
    """A DynamoDB attribute value -> time, or None when missing or not an RFC 3339 string."""
    text = value.get("S") if isinstance(value, dict) else None
    if not text:
        return None
    try:
        return clock.parse_rfc3339(text)
    except ValueError:
        return None


def _scan_times(
    dynamodb: Any,
    table: str,
    attribute: str,
    filter_expression: str,
    names: Mapping[str, str],
    values: Mapping[str, Any] | None = None,
    paging: Mapping[str, Any] | None = None,
) -> Iterable[datetime | None]:
    """Every matching item's `attribute` as a time (None: missing or unreadable). Only that attribute
    is returned by DynamoDB: the filter runs on the server, so no key or other value leaves the table."""
    params: dict[str, Any] = {
        "TableName": table,
        "ProjectionExpression": "#age",
        "FilterExpression": filter_expression,
        "ExpressionAttributeNames": {"#age": attribute, **names},
    }
    if values:
        params["ExpressionAttributeValues"] = dict(values)
    for page in dynamodb.get_paginator("scan").paginate(**params, PaginationConfig=dict(paging or {})):
        for item in page.get("Items", []):
            yield _parse(item.get(attribute))


def _s3_times(s3: Any, bucket: str, prefix: str, versions: bool, paging: Mapping[str, Any]) -> Iterable[datetime]:
    config = {"PaginationConfig": dict(paging)}
    if versions:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix, **config):
            for version in page.get("Versions", []):  # DeleteMarkers are not copies
                yield version["LastModified"]
    else:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, **config):
            for entry in page.get("Contents", []):
                yield entry["LastModified"]


def store_prefix(store: pdm.Store) -> str:
    """The fixed part of the store's keys: `prefixTemplate` up to its first placeholder."""
    return (store.prefix_template or "").split("{", 1)[0]


def _basis(store: pdm.Store) -> str:
    if store.kind == pdm.DYNAMODB and store.age_attribute:
        return store.age_attribute
    if store.kind == pdm.S3:
        return "LastModified"
    if store.kind == pdm.REGISTRY:
        return "updatedAt"
    return UNTIMED


def _read(store: pdm.Store, resource: str, tally: _Tally, dynamodb: Any, s3: Any, paging: Mapping[str, Any]) -> None:
    if store.kind == pdm.DYNAMODB:
        # Items that no longer name an account (scrubbed) hold no copy of anyone's data.
        for when in _scan_times(
            dynamodb,
            resource,
            store.age_attribute or "",
            "attribute_exists(#who)",
            {"#who": store.lookup_attribute or store.key or ""},
            paging=paging,
        ):
            tally.add(when)
    elif store.kind == pdm.S3:
        for when in _s3_times(s3, resource, store_prefix(store), store.versions, paging):
            tally.add(when)
    elif store.kind == pdm.REGISTRY:
        for when in _scan_times(
            dynamodb,
            resource,
            "updatedAt",
            "#status = :active AND NOT begins_with(#id, :tombstone)",
            {"#status": "status", "#id": store.key or "accountId"},
            {":active": {"S": ACTIVE}, ":tombstone": {"S": TOMBSTONE_PREFIX}},
            paging=paging,
        ):
            tally.add(when)


def oldest_held(
    pd_map: pdm.PersonalDataMap,
    resources: Mapping[str, str],
    *,
    dynamodb: Any,
    s3: Any,
    now: datetime,
    page_size: int | None = None,
) -> list[dict[str, Any]]:
    """One row per store of the map, in the map's order (see the module docstring). `page_size` bounds
    each Scan / listing page (the services' own maximum when None)."""
    paging = {"PageSize": page_size} if page_size else {}
    rows: list[dict[str, Any]] = []
    for store in pd_map.stores:
        basis = _basis(store)
        row: dict[str, Any] = {
            "store": store.name,
            "kind": store.kind,
            "basis": basis,
            "maxAgeDays": store.max_age_days,
            "oldestHeld": None,
            "ageDays": None,
            "copies": None,
            "unreadable": None,
            "pastMaxAge": None,
        }
        rows.append(row)
        if basis == UNTIMED:
            continue  # held since an unknown time: nothing to read
        cutoff = now - timedelta(days=store.max_age_days) if store.max_age_days else None
        tally = _Tally(cutoff)
        try:
            _read(store, resources[store.name], tally, dynamodb, s3, paging)
        except Exception as exc:  # one unreadable store must not hide the others
            code = error_code(exc)
            if code is None:
                raise
            row["error"] = code
            continue
        row.update(
            copies=tally.copies, unreadable=tally.unreadable, pastMaxAge=tally.past if cutoff is not None else None
        )
        if tally.oldest is not None:
            row.update(oldestHeld=clock.format_rfc3339(tally.oldest), ageDays=_age_days(now, tally.oldest))
    return rows


def retention_position(dynamodb: Any, state_table: str) -> dict[str, Any] | None:
    """Where the retention sweep stands (one GetItem), or None before its first save. Only the walk's
    position and times: the `after` cursor is an account id and is never shown, only whether there is one."""
    item = dynamodb.get_item(TableName=state_table, Key={"pk": {"S": STATE_KEY}}).get("Item")
    if not item:
        return None
    index = int(item["keyIndex"]["N"]) if "keyIndex" in item else 0
    return {
        "keyIndex": index,
        "keys": len(KEYS),
        "key": KEYS[index] if 0 <= index < len(KEYS) else None,
        "midKey": "after" in item,
        "savedAt": item.get("savedAt", {}).get("S"),
        "lastPassCompletedAt": item.get("lastPassCompletedAt", {}).get("S"),
    }
