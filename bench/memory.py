"""In-memory stand-ins with the interface of `Registry` and `DynamoStateStore`, for registries too big
for moto (whose GSI Query reads the whole table on every call).

They keep DynamoDB's observable semantics where the reporter depends on them: the sparse due-index
keyed by `reportKey` and sorted by `accountId`, `Limit` with a LastEvaluatedKey whenever a page is
full, conditional forward-only moves, and the state item's `seq` condition. Every call is recorded
in the current `meter.Tally` as the DynamoDB operation the real adapter makes, with its capacity
units, and the stand-in's own CPU is excluded like moto's.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from gdpr_core import clock
from gdpr_core.registry import DueAccount, DuePage
from gdpr_core.reporting.planner import NEW_KEY, CycleState
from gdpr_core.reporting.run import ConcurrentRunError

from . import meter

SCAN_PAGE_BYTES = 1024 * 1024  # DynamoDB stops a Scan page at 1 MB
_UPDATED, _FIRST, _KEY, _STATUS, _SITES = range(5)


class _Timed:
    """Excludes the stand-in's own bookkeeping from the measured CPU, as moto's is."""

    def __enter__(self) -> _Timed:
        self.start = time.thread_time()
        return self

    def __exit__(self, *_: object) -> None:
        meter.add_emulated(time.thread_time() - self.start)


def _record(operation: str, table: str, **units: Any) -> None:
    tally = meter.current()
    if tally is not None:
        tally.record("dynamodb", operation, resource=table, **units)


class _Index:
    """One reportKey's entries, sorted lazily; moved-away entries are dropped when they pile up."""

    __slots__ = ("ids", "sorted", "stale")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.sorted = True
        self.stale = 0


class InMemoryRegistry:
    def __init__(self, table_name: str = "memory-registry"):
        self.table_name = table_name
        self.items: dict[str, list[Any]] = {}
        self.index: dict[str, _Index] = {}
        self.last_reported: dict[str, str] = {}  # the naive baseline's per-account write

    # ---------------------------------------------------------------- seeding (not measured)
    def seed(self, account_id: str, updated_at: datetime, sites: tuple[str, ...], key: str = NEW_KEY) -> None:
        self.items[account_id] = [updated_at, None, None, "active", sites]
        self._move(account_id, key)

    def _move(self, account_id: str, key: str | None) -> None:
        item = self.items[account_id]
        old = item[_KEY]
        if old is not None:
            self.index[old].stale += 1
        item[_KEY] = key
        if key is not None:
            index = self.index.setdefault(key, _Index())
            if index.ids and index.ids[-1] > account_id:
                index.sorted = False
            index.ids.append(account_id)

    def _live(self, key: str) -> list[str]:
        index = self.index.get(key)
        if index is None:
            return []
        if index.stale and index.stale * 2 > len(index.ids):
            index.ids = [a for a in index.ids if self.items[a][_KEY] == key]
            index.stale = 0
        if not index.sorted:
            index.ids.sort()
            index.sorted = True
        return index.ids

    @staticmethod
    def _index_item_size(account_id: str, key: str, first: int | None) -> int:
        # reportKey, accountId, updatedAt (24-character RFC 3339) and firstCycle, as projected.
        return 9 + len(key) + 9 + len(account_id) + 9 + 24 + (10 + 2 if first is not None else 0)

    def _item_size(self, account_id: str) -> int:
        item = self.items[account_id]
        size = 9 + len(account_id) + 6 + len(item[_STATUS]) + 5 + sum(len(s) for s in item[_SITES])
        size += 9 + 24 + 12 + 24  # updatedAt, registeredAt
        if item[_KEY] is not None:
            size += 9 + len(item[_KEY])
        if item[_FIRST] is not None:
            size += 10 + 2
        return size

    # ---------------------------------------------------------------- Registry's reporter interface
    def query_due(self, report_key: str, after_account_id: str | None = None, limit: int = 500) -> DuePage:
        with _Timed():
            ids = self._live(report_key)
            start = 0 if after_account_id is None else bisect.bisect_right(ids, after_account_id)
            page: list[DueAccount] = []
            size = 0
            for account_id in ids[start:]:
                if len(page) >= limit:
                    break
                item = self.items[account_id]
                if item[_KEY] != report_key:
                    continue
                page.append(DueAccount(account_id, item[_UPDATED], item[_FIRST]))
                size += self._index_item_size(account_id, report_key, item[_FIRST])
            last = page[-1].account_id if len(page) >= limit else None
        _record("Query", self.table_name, items=len(page), read_units=max(1, math.ceil(size / 4096)) * 0.5)
        return DuePage(page, last)

    def mark_reported_first(self, account_id: str, shard_key: str, cycle: int) -> bool:
        _record("UpdateItem", self.table_name, write_units=1.0)
        with _Timed():
            item = self.items.get(account_id)
            if item is None or item[_KEY] != NEW_KEY:
                return False
            item[_FIRST] = cycle
            self._move(account_id, shard_key)
            return True

    def mark_erasing(self, account_id: str) -> bool:
        _record("UpdateItem", self.table_name, write_units=1.0)
        with _Timed():
            item = self.items.get(account_id)
            if item is None or item[_STATUS] != "active":
                return False
            item[_STATUS] = "erasing"
            self._move(account_id, None)
            return True

    def quarantine(self, account_id: str, from_key: str, reason: str, cycle: int) -> bool:
        _record("UpdateItem", self.table_name, write_units=1.0)
        with _Timed():
            item = self.items.get(account_id)
            if item is None or item[_KEY] != from_key:
                return False
            self._move(account_id, None)
            return True

    # ---------------------------------------------------------------- what the naive baseline uses
    def scan_pages(self) -> Iterator[list[tuple[str, str, tuple[str, ...], str]]]:
        """(accountId, updatedAt, sites, status) in 1 MB pages, each recorded as one Scan."""
        page: list[tuple[str, str, tuple[str, ...], str]] = []
        size = 0
        for account_id, item in self.items.items():
            page.append((account_id, clock.format_rfc3339(item[_UPDATED]), item[_SITES], item[_STATUS]))
            size += self._item_size(account_id)
            if size >= SCAN_PAGE_BYTES:
                _record("Scan", self.table_name, items=len(page), read_units=math.ceil(size / 4096) * 0.5)
                yield page
                page, size = [], 0
        _record("Scan", self.table_name, items=len(page), read_units=max(1, math.ceil(size / 4096)) * 0.5)
        yield page

    def write_last_reported(self, account_id: str, when: str) -> None:
        _record("UpdateItem", self.table_name, write_units=1.0)
        with _Timed():
            self.last_reported[account_id] = when


class InMemoryStateStore:
    """The reporter's state item with DynamoStateStore's conditional-on-seq save."""

    def __init__(self, table_name: str = "memory-state"):
        self.table_name = table_name
        self.item: dict[str, Any] | None = None

    def load(self) -> CycleState | None:
        item = self.item
        _record("GetItem", self.table_name, items=int(item is not None), read_units=1.0)
        return CycleState.from_item(item) if item else None

    def save(self, state: CycleState) -> None:
        stored = int(self.item["seq"]["N"]) if self.item else 0
        if stored != state.seq:
            _record("PutItem", self.table_name, write_units=1.0)
            raise ConcurrentRunError("reporter state was moved by another run")
        state.seq += 1
        self.item = state.to_item()
        _record("PutItem", self.table_name, write_units=max(1, math.ceil(meter.item_size(self.item) / 1024)))
