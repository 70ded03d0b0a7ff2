"""Retention: purge cached copies older than their store's `maxAgeDays` (storage limitation).

Finding the candidates by index, never by scanning the app's tables: the registry's `updatedAt` is
the oldest retrieval time of what is held for the account, and the due-index projects it, so an
account can hold a copy older than the tightest cutoff only if its `updatedAt` is older than that
cutoff. The sweep walks the due-index key by key (`new`, `s#000`..`s#255`, `quarantine`) with a
filter on `updatedAt`, a bounded number of pages per tick, and keeps its position in the StateTable
(`pk = "retention"`), so a large registry is swept over several ticks and a crash loses nothing.

Per candidate account: copies in stores with `maxAgeDays` whose `ageAttribute` is past the cutoff
are deleted (conditional on the timestamp read, so a copy the app refreshed meanwhile stays). Then
the registry follows what is still held:
- nothing left in any store (hooks with an export included): the item is dropped, no tombstone;
- only timed copies left (maxAgeDays stores, and S3 objects, whose LastModified is their copy time):
  `updatedAt` moves forward to the oldest of them;
- anything without a retrieval time left (e.g. comments): `updatedAt` is kept, which is
  conservative (Atlassian may answer `updated` once more, never less than it should).

DynamoDB TTL would delete for free, but needs a numeric epoch attribute the app writes; where the app
has one, enable TTL on it as well — the sweep still moves `updatedAt` and drops empty accounts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .. import clock
from ..erasure import pdmap as pdm
from ..erasure.engine import ErasureEngine, error_code, from_item
from ..reporting.planner import NEW_KEY, NSHARDS, QUARANTINE_KEY, report_key_for_shard

STATE_KEY = "retention"
DUE_INDEX = "due-index"
KEYS = (NEW_KEY, *(report_key_for_shard(i) for i in range(NSHARDS)), QUARANTINE_KEY)


class RetentionSweep:
    def __init__(
        self,
        engine: ErasureEngine,
        *,
        registry_table: str,
        state_table: str,
        page_size: int = 200,
        pages_per_tick: int = 50,
        now: Callable[[], datetime] = clock.now,
    ):
        self.engine = engine
        self.map = engine.map
        self._ddb = engine._ddb
        self._registry, self._state = registry_table, state_table
        self.page_size, self.pages_per_tick, self._now = page_size, pages_per_tick, now
        self.timed = [s for s in self.map.stores if s.max_age_days]

    # ------------------------------------------------------------ the walk
    def run(self) -> dict[str, Any]:
        """One tick's share of the sweep; resumes where the last tick stopped."""
        summary = {"candidates": 0, "purged": 0, "accountsDropped": 0, "accountsMoved": 0, "pages": 0,
                   "passCompleted": False}
        if not self.timed:
            return summary
        now = self._now()
        cutoff = clock.format_rfc3339(now - timedelta(days=min(s.max_age_days or 0 for s in self.timed)))
        position = self._load()
        index, after = int(position.get("keyIndex", 0)), position.get("after")
        while summary["pages"] < self.pages_per_tick:
            params: dict[str, Any] = {
                "TableName": self._registry, "IndexName": DUE_INDEX, "Limit": self.page_size,
                "KeyConditionExpression": "reportKey = :key" + (" AND accountId > :after" if after else ""),
                "FilterExpression": "updatedAt < :cutoff",
                "ExpressionAttributeValues": {":key": {"S": KEYS[index]}, ":cutoff": {"S": cutoff},
                                              **({":after": {"S": after}} if after else {})},
            }
            page = self._ddb.query(**params)
            summary["pages"] += 1
            for item in page.get("Items", []):
                summary["candidates"] += 1
                outcome = self.sweep_account(item["accountId"]["S"], item["updatedAt"]["S"], now)
                summary["purged"] += outcome["purged"]
                summary["accountsDropped"] += outcome["registry"] == "dropped"
                summary["accountsMoved"] += outcome["registry"] == "moved"
            last = page.get("LastEvaluatedKey")
            after = last["accountId"]["S"] if last else None
            if after is None:
                index += 1
                if index >= len(KEYS):
                    index, summary["passCompleted"] = 0, True
                    self._save(0, None, now, completed=True)
                    break
            self._save(index, after, now)
        return summary

    def _load(self) -> dict[str, Any]:
        item = self._ddb.get_item(TableName=self._state, Key={"pk": {"S": STATE_KEY}}, ConsistentRead=True)
        return from_item(item["Item"]) if "Item" in item else {}

    def _save(self, index: int, after: str | None, now: datetime, completed: bool = False) -> None:
        values: dict[str, Any] = {":i": {"N": str(index)}, ":now": {"S": clock.format_rfc3339(now)}}
        expression = "SET keyIndex = :i, savedAt = :now"
        if after:
            expression += ", #after = :after"
            values[":after"] = {"S": after}
        if completed:
            expression += ", lastPassCompletedAt = :now"
        if not after:
            expression += " REMOVE #after"
        self._ddb.update_item(TableName=self._state, Key={"pk": {"S": STATE_KEY}}, UpdateExpression=expression,
                              ExpressionAttributeNames={"#after": "after"}, ExpressionAttributeValues=values)

    # ------------------------------------------------------------ one account
    def sweep_account(self, account_id: str, seen_updated_at: str, now: datetime) -> dict[str, Any]:
        purged = 0
        held_times: list[datetime] = []
        untimed = False
        for store in self.map.stores:
            if store.kind == pdm.DYNAMODB:
                for key in self.engine._find_keys(store, account_id):
                    item = self.engine._get(store, key)
                    if not item or item.get(store.lookup_attribute) != {"S": account_id}:
                        continue
                    stamp = (item.get(store.age_attribute) or {}).get("S") if store.age_attribute else None
                    when = _parse(stamp)
                    if store.max_age_days and when is not None and when < now - timedelta(days=store.max_age_days):
                        purged += self._purge(store, key, stamp)  # type: ignore[arg-type]
                    elif when is not None:
                        held_times.append(when)
                    else:
                        untimed = True  # held, but we do not know since when
            elif store.kind == pdm.S3:
                for entry in self.engine._s3_entries(store, account_id):
                    if not entry.get("IsDeleteMarker"):
                        held_times.append(entry["LastModified"])
            elif store.kind == pdm.HOOK and store.export_hook and store.export_hook in self.engine._hooks:
                untimed |= bool(self.engine._hooks[store.export_hook](account_id))
        if not held_times and not untimed:
            registry = "dropped" if self._drop(account_id, seen_updated_at) else "kept"
        elif not untimed and clock.format_rfc3339(min(held_times)) > seen_updated_at:
            registry = "moved" if self._move(account_id, seen_updated_at, min(held_times)) else "kept"
        else:
            registry = "kept"
        return {"purged": purged, "registry": registry}

    def _purge(self, store: pdm.Store, key: dict[str, Any], stamp: str) -> int:
        try:
            self._ddb.delete_item(
                TableName=self.engine._resources[store.name], Key=key,
                ConditionExpression="#age = :stamp",  # refreshed meanwhile: a new copy, keep it
                ExpressionAttributeNames={"#age": store.age_attribute},
                ExpressionAttributeValues={":stamp": {"S": stamp}},
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return 0
            raise
        return 1

    def _registry_write(self, call: Callable[..., Any], **params: Any) -> bool:
        try:
            call(TableName=self._registry, **params)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False  # the app registered a retrieval meanwhile, or the account is being erased
            raise
        return True

    def _drop(self, account_id: str, seen: str) -> bool:
        return self._registry_write(
            self._ddb.delete_item, Key={"accountId": {"S": account_id}},
            ConditionExpression="updatedAt = :seen AND #status = :active",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":seen": {"S": seen}, ":active": {"S": "active"}},
        )

    def _move(self, account_id: str, seen: str, oldest: datetime) -> bool:
        return self._registry_write(
            self._ddb.update_item, Key={"accountId": {"S": account_id}},
            ConditionExpression="updatedAt = :seen AND #status = :active",
            UpdateExpression="SET updatedAt = :oldest",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":seen": {"S": seen}, ":active": {"S": "active"},
                                       ":oldest": {"S": clock.format_rfc3339(oldest)}},
        )


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        return clock.parse_rfc3339(stamp)
    except ValueError:
        return None  # unreadable: treated as held without a known time (never purged on a guess)

