"""Counting AWS work at the client, and CPU time that excludes the emulated AWS side.

Every botocore client created after `install()` carries a `before-parameter-build` and an `after-call` hook
(appended to botocore's built-in handlers, the way moto attaches its own stub), so calls made by
the product's adapters, by Powertools and by the baselines are all counted the same way. In-memory
stand-ins (bench.memory) report their calls through `Tally.record` with the same vocabulary.

Capacity units follow DynamoDB's rules for on-demand tables: reads 4 KB per unit (half for
eventually consistent reads, summed over a Query/Scan page, filtered-out items included), writes 1 KB per unit per item,
transactional writes twice that. Item sizes follow DynamoDB's documented sizing (attribute names
plus values).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

READ_OPS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
WRITE_OPS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


def attr_size(value: Mapping[str, Any]) -> int:
    ((kind, raw),) = value.items()
    if kind in ("S", "B"):
        return len(raw.encode() if isinstance(raw, str) else raw)
    if kind == "N":
        return (len(raw.lstrip("-").replace(".", "")) + 1) // 2 + 1
    if kind in ("SS", "BS"):
        return sum(len(v.encode() if isinstance(v, str) else v) for v in raw)
    if kind == "NS":
        return sum((len(v) + 1) // 2 + 1 for v in raw)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + attr_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(len(k) + 1 + attr_size(v) for k, v in raw.items())
    return 0


def item_size(item: Mapping[str, Any]) -> int:
    return sum(len(name.encode()) + attr_size(value) for name, value in item.items())


@dataclass
class Tally:
    """What one measured phase cost: calls by service and operation, items and capacity units."""

    calls: Counter = field(default_factory=Counter)  # "service:Operation" -> calls
    resources: Counter = field(default_factory=Counter)  # "resource|service:Operation" -> calls
    items_read: int = 0
    read_units: float = 0.0
    write_units: float = 0.0
    cpu_seconds: float = 0.0

    def record(self, service: str, operation: str, *, resource: str = "", items: int = 0,
               read_units: float = 0.0, write_units: float = 0.0) -> None:
        self.calls[f"{service}:{operation}"] += 1
        if resource:
            self.resources[f"{resource}|{service}:{operation}"] += 1
        self.items_read += items
        self.read_units += read_units
        self.write_units += write_units

    def count(self, service: str | None = None, operations: set[str] | None = None) -> int:
        total = 0
        for key, n in self.calls.items():
            svc, op = key.split(":", 1)
            if (service is None or svc == service) and (operations is None or op in operations):
                total += n
        return total

    @property
    def aws_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def ddb_reads(self) -> int:
        return self.count("dynamodb", READ_OPS)

    @property
    def ddb_writes(self) -> int:
        return self.count("dynamodb", WRITE_OPS)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": dict(sorted(self.calls.items())),
            "awsCalls": self.aws_calls,
            "dynamodbReads": self.ddb_reads,
            "dynamodbWrites": self.ddb_writes,
            "itemsRead": self.items_read,
            "readUnits": round(self.read_units, 2),
            "writeUnits": round(self.write_units, 2),
            "cpuSeconds": round(self.cpu_seconds, 4),
        }


class _State(threading.local):
    tally: Tally | None = None


_state = _State()
_emulated = threading.local()  # per-thread seconds of CPU spent inside moto (emulated AWS)
_installed = False


def _resource(params: Mapping[str, Any]) -> str:
    for key in ("TableName", "Bucket", "QueueUrl", "SecretId"):
        if key in params:
            return str(params[key]).rsplit("/", 1)[-1]
    if "RequestItems" in params:
        return ",".join(sorted(params["RequestItems"]))
    if "TransactItems" in params:
        names = {next(iter(op.values()))["TableName"] for op in params["TransactItems"]}
        return ",".join(sorted(names))
    return ""


def _read_units(operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> tuple[int, float]:
    consistent = 1.0 if params.get("ConsistentRead") else 0.5
    if operation == "GetItem":
        size = item_size(parsed.get("Item") or {})
        return (1 if "Item" in parsed else 0), max(1, math.ceil(size / 4096)) * consistent
    if operation == "BatchGetItem":  # each item is rounded up on its own, as a GetItem would be
        items, units = 0, 0.0
        for table, found in (parsed.get("Responses") or {}).items():
            factor = 1.0 if (params.get("RequestItems") or {}).get(table, {}).get("ConsistentRead") else 0.5
            items += len(found)
            units += sum(max(1, math.ceil(item_size(i) / 4096)) * factor for i in found)
        return items, units
    if operation in ("Query", "Scan"):
        items = parsed.get("Items") or []
        scanned = items
        if params.get("FilterExpression") and parsed.get("ScannedCount", len(items)) > len(items):
            scanned = _unfiltered_page(operation, params)
        size = sum(item_size(i) for i in scanned)
        return len(items), max(1, math.ceil(size / 4096)) * consistent
    return 0, 0.0


_PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")


def _unfiltered_page(operation: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """DynamoDB charges a filtered Query/Scan for every item it read, not the ones it returned: the same
    page again without the filter (uncounted, its CPU booked as emulated) gives the items read."""
    import boto3

    started, previous = time.thread_time(), _state.tally
    _state.tally = None
    try:
        kept = {k: v for k, v in params.items() if k not in ("FilterExpression", "Select")}
        used = set(_PLACEHOLDER.findall(" ".join(str(v) for k, v in kept.items() if k.endswith("Expression"))))
        for key in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
            if key in kept:
                kept[key] = {k: v for k, v in kept[key].items() if k in used}
                if not kept[key]:
                    del kept[key]
        client = getattr(_emulated, "client", None)
        if client is None:
            client = _emulated.client = boto3.client("dynamodb")
        return (client.scan if operation == "Scan" else client.query)(**kept).get("Items", [])
    finally:
        _state.tally = previous
        add_emulated(time.thread_time() - started)


def _write_units(operation: str, params: Mapping[str, Any]) -> float:
    if operation == "PutItem":
        return max(1, math.ceil(item_size(params.get("Item") or {}) / 1024))
    if operation in ("UpdateItem", "DeleteItem"):
        return 1.0
    if operation == "BatchWriteItem":
        return float(sum(len(v) for v in params.get("RequestItems", {}).values()))
    if operation == "TransactWriteItems":
        return 2.0 * len(params.get("TransactItems", []))
    return 0.0


def _before_build(params: Any = None, context: Any = None, **_: Any) -> None:
    if _state.tally is not None and context is not None:
        context["bench_params"] = dict(params or {})  # after-call needs the request to size writes


def _after_call(model: Any = None, parsed: Any = None, context: Any = None, **_: Any) -> None:
    tally = _state.tally
    if tally is None or model is None:
        return
    service = model.service_model.service_name
    operation = model.name
    params = (context or {}).get("bench_params") or {}
    items, rru, wru = 0, 0.0, 0.0
    if service == "dynamodb":
        items, rru = _read_units(operation, params, parsed or {})
        wru = _write_units(operation, params)
    tally.record(service, operation, resource=_resource(params), items=items, read_units=rru, write_units=wru)


def install() -> None:
    """Hooks every client created from now on; also times moto's stub so its CPU can be excluded."""
    global _installed
    if _installed:
        return
    from botocore import handlers

    handlers.BUILTIN_HANDLERS.append(("before-parameter-build", _before_build))
    handlers.BUILTIN_HANDLERS.append(("after-call", _after_call))
    try:
        from moto.core.botocore_stubber import BotocoreStubber
    except ImportError:  # no moto: nothing emulated to exclude
        BotocoreStubber = None  # noqa: N806
    if BotocoreStubber is not None:
        original = BotocoreStubber.__call__

        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return original(self, *args, **kwargs)
            finally:
                add_emulated(time.thread_time() - start)

        BotocoreStubber.__call__ = timed
    _installed = True


def add_emulated(seconds: float) -> None:
    """In-memory stand-ins report the CPU of their own bookkeeping here, as moto's is excluded."""
    _emulated.seconds = getattr(_emulated, "seconds", 0.0) + seconds


def emulated_seconds() -> float:
    return getattr(_emulated, "seconds", 0.0)


def current() -> Tally | None:
    return _state.tally


@contextmanager
def measure(tally: Tally | None = None) -> Iterator[Tally]:
    """Counts the AWS calls made on this thread and its CPU time minus emulated AWS's CPU.

    The Atlassian emulator runs on its own threads, so this thread's CPU is the client's work only.
    """
    tally = tally or Tally()
    previous = _state.tally
    _state.tally = tally
    cpu0, emulated0 = time.thread_time(), emulated_seconds()
    try:
        yield tally
    finally:
        tally.cpu_seconds += (time.thread_time() - cpu0) - (emulated_seconds() - emulated0)
        _state.tally = previous
