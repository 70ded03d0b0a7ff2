"""The erasure engine: runs the personal-data map over every store for one account.

Per store: find the account's data (one Query / listing per page), act in batches (BatchWriteItem of
25 with UnprocessedItems retried with back-off, S3 DeleteObjects of 1,000 covering every version and
delete marker, UpdateItem per scrubbed item), then read again to verify nothing personal is left.
Every store is reported as {store, found, deleted, scrubbed, remaining}, "0 found" included.

Plain Python: the DynamoDB and S3 clients (boto3 low-level clients or fakes with the same methods)
and the hooks are passed in. Exceptions name stores and counts, never an account id or a value.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from .. import clock
from ..ids import InvalidAccountId, validate_account_id
from ..registry import STATUS_ACTIVE
from . import pdmap as pdm

BATCH_WRITE_MAX = 25
BATCH_GET_MAX = 100  # BatchGetItem's limit per call
S3_DELETE_MAX = 1000
TOMBSTONE_PREFIX = "tombstone#"
ACTIONS = {"erase": "closed", "refresh": "updated"}

Hook = Callable[..., Any]


class ErasureError(RuntimeError):
    """Erasure could not complete; the message names the store, never personal data."""


class VerificationFailed(ErasureError):
    def __init__(self, results: Sequence[StoreResult]):
        self.results = list(results)
        failing = ", ".join(f"{r.store}: {r.remaining} remaining" for r in results if r.remaining)
        super().__init__(f"verification failed ({failing})")


class InvalidMessage(ValueError):
    """An actions-queue body that is not schema 1; the reason names the field, never its value."""


@dataclass(frozen=True)
class StoreResult:
    store: str
    found: int = 0
    deleted: int = 0
    scrubbed: int = 0
    remaining: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- DynamoDB attribute values
def to_attr(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | float | Decimal):
        return {"N": str(value)}
    if isinstance(value, bytes):
        return {"B": value}
    if isinstance(value, set | frozenset):
        if value and all(isinstance(v, str) for v in value):
            return {"SS": sorted(value)}
        if value and all(isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in value):
            return {"NS": sorted(str(v) for v in value)}
        raise TypeError("sets must be non-empty and hold only strings or only numbers")
    if isinstance(value, list | tuple):
        return {"L": [to_attr(v) for v in value]}
    if isinstance(value, Mapping):
        return {"M": {str(k): to_attr(v) for k, v in value.items()}}
    raise TypeError(f"cannot store a value of type {type(value).__name__}")


def to_item(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: to_attr(v) for k, v in doc.items() if v is not None}


def _number(text: str) -> int | float:
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else float(number)


def from_attr(value: Mapping[str, Any]) -> Any:
    """JSON-friendly plain value: sets become sorted lists, binary becomes base64 text."""
    ((kind, raw),) = value.items()
    if kind in ("S", "BOOL"):
        return raw
    if kind == "NULL":
        return None
    if kind == "N":
        return _number(raw)
    if kind == "B":
        return base64.b64encode(raw if isinstance(raw, bytes) else raw.encode()).decode()
    if kind == "SS":
        return sorted(raw)
    if kind == "NS":
        return sorted(_number(v) for v in raw)
    if kind == "BS":
        return [base64.b64encode(v).decode() for v in raw]
    if kind == "L":
        return [from_attr(v) for v in raw]
    if kind == "M":
        return {k: from_attr(v) for k, v in raw.items()}
    raise TypeError(f"unknown DynamoDB attribute type {kind}")


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: from_attr(v) for k, v in item.items()}


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


# ---------------------------------------------------------------- actions queue message
@dataclass(frozen=True)
class ActionMessage:
    action: str
    account_id: str
    cycle: int | None = None
    reported_at: str | None = None

    @property
    def reason(self) -> str:
        return ACTIONS[self.action]

    def idempotency_data(self, subject: str) -> dict[str, Any]:
        """accountId + action (+ cycle for refresh), by pseudonym so no raw id reaches the table."""
        data: dict[str, Any] = {"subject": subject, "action": self.action}
        if self.action == "refresh":
            data["cycle"] = self.cycle
        return data


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):  # json keeps the last silently; which one the sender meant is unknowable
        raise InvalidMessage("body repeats a JSON key")
    return doc


def load_queue_object(body: str | bytes | None) -> dict[str, Any]:
    """The JSON object of an actions-queue body, parsed once; a repeated key is refused, not last-wins."""
    try:
        doc = json.loads(body or "", object_pairs_hook=_refuse_repeated_keys)
    except InvalidMessage:  # a ValueError too, but with its own reason
        raise
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise InvalidMessage("body is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidMessage("body is not a JSON object")
    return doc


def require_schema(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("schema") != 1 or isinstance(doc.get("schema"), bool):
        raise InvalidMessage("schema must be 1")
    return doc


def load_queue_document(body: str | bytes | None) -> dict[str, Any]:
    """The JSON object of a schema-1 actions-queue body (erasure or site lifecycle), fields unchecked."""
    return require_schema(load_queue_object(body))


def parse_action_message(body: str | bytes | None) -> ActionMessage:
    doc = load_queue_document(body)
    action = doc.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise InvalidMessage("action must be erase or refresh (or, for a site, uninstall or reinstall)")
    if "reason" in doc and doc["reason"] != ACTIONS[action]:
        raise InvalidMessage("reason does not match action")
    try:
        account_id = validate_account_id(doc.get("accountId"))
    except InvalidAccountId:
        raise InvalidMessage("accountId is not a valid Atlassian account id") from None
    cycle = doc.get("cycle")
    if cycle is not None and (not isinstance(cycle, int) or isinstance(cycle, bool) or cycle < 0):
        raise InvalidMessage("cycle must be a non-negative integer")
    if action == "refresh" and cycle is None:
        raise InvalidMessage("cycle is required for refresh")
    reported_at = doc.get("reportedAt")
    if reported_at is not None:
        try:
            reported_at = clock.format_rfc3339(clock.parse_rfc3339(reported_at))
        except ValueError:
            raise InvalidMessage("reportedAt is not an RFC 3339 timestamp") from None
    return ActionMessage(action=action, account_id=account_id, cycle=cycle, reported_at=reported_at)


# ---------------------------------------------------------------- the engine
class ErasureEngine:
    def __init__(
        self,
        personal_data_map: pdm.PersonalDataMap,
        resources: Mapping[str, str],
        *,
        dynamodb: Any,
        s3: Any = None,
        hooks: Mapping[str, Hook] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 8,
        page_size: int | None = None,
    ):
        self.map = personal_data_map
        self._resources = dict(resources)
        self._ddb = dynamodb
        self._s3 = s3
        self._hooks = dict(hooks or {})
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._page_size = page_size
        for store in self.map.stores:
            if store.resource_env is not None and store.name not in self._resources:
                raise ErasureError(f"store '{store.name}': no table or bucket name resolved")
        if s3 is None and any(s.kind == pdm.S3 for s in self.map.stores):
            raise ErasureError("the map has S3 stores but no S3 client was given")

    @property
    def registry(self) -> pdm.Store:
        return next(s for s in self.map.stores if s.kind == pdm.REGISTRY)

    # ------------------------------------------------------------ erase / refresh
    def apply(self, account_id: str, reason: str, now: datetime) -> list[StoreResult]:
        """Runs the `closed` or `updated` policy of every store; raises VerificationFailed.

        Data stores first and verified together, then hooks (only once the data is really gone),
        then the registry. For `closed`, the registry row is counted here and removed by
        `tombstone`, which the caller runs after the audit record (and retries until it succeeds).
        Stores whose policy is `none` are left out: nothing is done there by design.
        """
        validate_account_id(account_id)
        results: list[StoreResult] = []
        for store in self.map.stores:
            policy = store.policy(reason)
            if policy.action == pdm.NONE or store.kind not in (pdm.DYNAMODB, pdm.S3):
                continue
            if store.kind == pdm.DYNAMODB:
                results.append(self._dynamodb_act(store, policy, account_id))
            else:
                results.append(self._s3_act(store, account_id))
        verified = [self._verify(result, account_id, reason) for result in results]
        if any(r.remaining for r in verified):
            raise VerificationFailed(verified)
        for store in self.map.stores:
            policy = store.policy(reason)
            if store.kind == pdm.HOOK and policy.action == pdm.RUN_HOOK:
                verified.append(self._run_hook(store, policy, account_id, now))
        verified.append(self._registry(account_id, reason, now))
        if any(r.remaining for r in verified):
            raise VerificationFailed(verified)
        return verified

    def tombstone(self, account_id: str, subject: str, now: datetime) -> None:
        """Deletes the registry item and leaves the tombstone, atomically (one TransactWriteItems).

        An update rather than a put keeps the first `erasedAt` when a retry runs it again.
        """
        table = self._resources[self.registry.name]
        self._ddb.transact_write_items(
            TransactItems=[
                {"Delete": {"TableName": table, "Key": {self.registry.key: {"S": account_id}}}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": {self.registry.key: {"S": TOMBSTONE_PREFIX + subject}},
                        "UpdateExpression": "SET #s = :erased, #e = if_not_exists(#e, :now)",
                        "ExpressionAttributeNames": {"#s": "status", "#e": "erasedAt"},
                        "ExpressionAttributeValues": {
                            ":erased": {"S": "erased"},
                            ":now": {"S": clock.format_rfc3339(now)},
                        },
                    }
                },
            ]
        )

    # ------------------------------------------------------------ DynamoDB
    def _query_pages(self, store: pdm.Store, account_id: str, keys_only: bool,
                     limit: int | None = None) -> Iterator[list[dict]]:
        params: dict[str, Any] = {
            "TableName": self._resources[store.name],
            "KeyConditionExpression": "#a = :id",
            "ExpressionAttributeNames": {"#a": store.lookup_attribute},
            "ExpressionAttributeValues": {":id": {"S": account_id}},
        }
        if store.index:
            params["IndexName"] = store.index
        else:
            params["ConsistentRead"] = True
        if keys_only:
            names = {f"#k{i}": k for i, k in enumerate(store.table_key)}
            params["ExpressionAttributeNames"].update(names)
            params["ProjectionExpression"] = ", ".join(names)
        if limit or self._page_size:
            params["Limit"] = limit or self._page_size
        while True:
            page = self._ddb.query(**params)
            yield page.get("Items", [])
            if not page.get("LastEvaluatedKey"):
                return
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    @staticmethod
    def _key_of(store: pdm.Store, item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: item[k] for k in store.table_key}

    def _find_keys(self, store: pdm.Store, account_id: str) -> list[dict[str, Any]]:
        # Keys are collected before acting: scrubbing drops items out of the index being paged.
        keys: dict[str, dict[str, Any]] = {}
        for items in self._query_pages(store, account_id, keys_only=True):
            for item in items:
                key = {k: item[k] for k in store.table_key}
                keys[json.dumps(key, sort_keys=True, default=str)] = key
        return list(keys.values())

    def _dynamodb_act(self, store: pdm.Store, policy: pdm.Policy, account_id: str) -> StoreResult:
        keys = self._find_keys(store, account_id)
        if policy.action == pdm.DELETE_ITEMS:
            self._batch_delete(store, keys)
            return StoreResult(store.name, found=len(keys), deleted=len(keys))
        scrubbed = sum(1 for key in keys if self._scrub(store, policy, key))
        return StoreResult(store.name, found=len(keys), scrubbed=scrubbed)

    def _batch_delete(self, store: pdm.Store, keys: list[dict[str, Any]]) -> None:
        table = self._resources[store.name]
        for start in range(0, len(keys), BATCH_WRITE_MAX):
            requests = {table: [{"DeleteRequest": {"Key": k}} for k in keys[start : start + BATCH_WRITE_MAX]]}
            for attempt in range(self._max_attempts):
                unprocessed = self._ddb.batch_write_item(RequestItems=requests).get("UnprocessedItems") or {}
                if not unprocessed:
                    break
                requests = unprocessed
                # Full-jitter exponential back-off, as AWS recommends for throttled batch writes.
                self._sleep(random.uniform(0, min(5.0, 0.05 * 2**attempt)))
            else:
                left = sum(len(v) for v in requests.values())
                raise ErasureError(
                    f"store '{store.name}': {left} deletes unprocessed after {self._max_attempts} attempts"
                )

    def _scrub(self, store: pdm.Store, policy: pdm.Policy, key: dict[str, Any]) -> bool:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets, removes = [], []
        for i, (attr, value) in enumerate(policy.set.items()):
            names[f"#s{i}"], values[f":s{i}"] = attr, to_attr(value)
            sets.append(f"#s{i} = :s{i}")
        for i, attr in enumerate(policy.remove):
            names[f"#r{i}"] = attr
            removes.append(f"#r{i}")
        names["#key"] = store.key  # type: ignore[assignment]
        expression = (" SET " + ", ".join(sets) if sets else "") + (
            " REMOVE " + ", ".join(removes) if removes else ""
        )
        params: dict[str, Any] = {
            "TableName": self._resources[store.name],
            "Key": key,
            "UpdateExpression": expression.strip(),
            "ExpressionAttributeNames": names,
            # UpdateItem would otherwise create an item the app deleted meanwhile.
            "ConditionExpression": "attribute_exists(#key)",
        }
        if values:
            params["ExpressionAttributeValues"] = values
        try:
            self._ddb.update_item(**params)
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False  # gone already: nothing personal left there
            raise
        return True

    def _get(self, store: pdm.Store, key: dict[str, Any]) -> dict[str, Any] | None:
        return self._ddb.get_item(TableName=self._resources[store.name], Key=key, ConsistentRead=True).get(
            "Item"
        )

    def _get_many(self, store: pdm.Store, keys: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Consistent reads of `keys`, in their order (None: no such item). One key is a GetItem; more are
        BatchGetItem calls of up to 100 keys (same read units, a hundredth of the round trips), with
        unprocessed keys retried under back-off like the batch deletes."""
        if len(keys) <= 1:
            return [self._get(store, key) for key in keys]
        table = self._resources[store.name]

        def ident(item: Mapping[str, Any]) -> str:
            return json.dumps({k: item[k] for k in store.table_key}, sort_keys=True, default=str)

        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), BATCH_GET_MAX):
            request = {table: {"Keys": keys[start : start + BATCH_GET_MAX], "ConsistentRead": True}}
            for attempt in range(self._max_attempts):
                answer = self._ddb.batch_get_item(RequestItems=request)
                for item in (answer.get("Responses") or {}).get(table, []):
                    found[ident(item)] = item
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                self._sleep(random.uniform(0, min(5.0, 0.05 * 2**attempt)))
            else:
                left = sum(len(v.get("Keys", [])) for v in request.values())
                raise ErasureError(
                    f"store '{store.name}': {left} reads unprocessed after {self._max_attempts} attempts"
                )
        return [found.get(ident(key)) for key in keys]

    def _still_personal(
        self, store: pdm.Store, policy: pdm.Policy, item: dict[str, Any], account_id: str
    ) -> bool:
        if item.get(store.lookup_attribute) != {"S": account_id}:
            return False  # no longer linked to the account
        if policy.action == pdm.DELETE_ITEMS:
            return True
        return any(a in item for a in policy.remove) or any(
            item.get(a) != to_attr(v) for a, v in policy.set.items()
        )

    def _verify(self, result: StoreResult, account_id: str, reason: str) -> StoreResult:
        store = self.map.store(result.store)
        if store.kind == pdm.S3:
            remaining = len(self._s3_entries(store, account_id))
        else:
            policy = store.policy(reason)
            remaining = 0
            for items in self._query_pages(store, account_id, keys_only=bool(store.index)):
                if store.index:
                    # Indexes are eventually consistent: confirm with consistent table reads.
                    items = [i or {} for i in self._get_many(store, [self._key_of(store, i) for i in items])]
                remaining += sum(self._still_personal(store, policy, item, account_id) for item in items)
        return StoreResult(result.store, result.found, result.deleted, result.scrubbed, remaining)

    # ------------------------------------------------------------ S3
    def _s3_entries(self, store: pdm.Store, account_id: str) -> list[dict[str, Any]]:
        bucket, prefix = self._resources[store.name], store.prefix(account_id)
        entries: list[dict[str, Any]] = []
        if store.versions:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            while True:
                page = self._s3.list_object_versions(**params)
                entries.extend({**e, "IsDeleteMarker": False} for e in page.get("Versions", []))
                entries.extend({**e, "IsDeleteMarker": True} for e in page.get("DeleteMarkers", []))
                if not page.get("IsTruncated"):
                    return entries
                params["KeyMarker"] = page.get("NextKeyMarker")
                params["VersionIdMarker"] = page.get("NextVersionIdMarker")
        params = {"Bucket": bucket, "Prefix": prefix}
        while True:
            page = self._s3.list_objects_v2(**params)
            entries.extend(page.get("Contents", []))
            if not page.get("IsTruncated"):
                return entries
            params["ContinuationToken"] = page["NextContinuationToken"]

    def _s3_act(self, store: pdm.Store, account_id: str) -> StoreResult:
        entries = self._s3_entries(store, account_id)
        targets = [
            {"Key": e["Key"], **({"VersionId": e["VersionId"]} if store.versions else {})} for e in entries
        ]
        for start in range(0, len(targets), S3_DELETE_MAX):
            answer = self._s3.delete_objects(
                Bucket=self._resources[store.name],
                Delete={"Objects": targets[start : start + S3_DELETE_MAX], "Quiet": True},
            )
            errors = answer.get("Errors") or []
            if errors:
                codes = sorted({str(e.get("Code")) for e in errors})
                raise ErasureError(
                    f"store '{store.name}': S3 refused {len(errors)} deletes ({', '.join(codes)})"
                )
        return StoreResult(store.name, found=len(entries), deleted=len(targets))

    # ------------------------------------------------------------ hooks and registry
    def _hook(self, store: pdm.Store, name: str) -> Hook:
        if name not in self._hooks:
            # Fail closed: an unwired hook must not count as erased.
            raise ErasureError(f"store '{store.name}': hook '{name}' is not wired")
        return self._hooks[name]

    def _run_hook(self, store: pdm.Store, policy: pdm.Policy, account_id: str, now: datetime) -> StoreResult:
        outcome = self._hook(store, policy.hook or "")(account_id, now)
        if isinstance(outcome, int) and not isinstance(outcome, bool):
            return StoreResult(store.name, found=outcome, deleted=outcome)
        if isinstance(outcome, Mapping):
            return StoreResult(
                store.name,
                **{k: int(outcome.get(k, 0)) for k in ("found", "deleted", "scrubbed", "remaining")},
            )
        raise ErasureError(f"store '{store.name}': hook returned no count")

    def _holds_any(self, store: pdm.Store, account_id: str) -> bool:
        """Whether the store keeps anything of the account (one item or one object version is enough)."""
        if store.kind == pdm.DYNAMODB:
            return bool(next(self._query_pages(store, account_id, keys_only=True, limit=1), []))
        bucket, prefix = self._resources[store.name], store.prefix(account_id)
        if store.versions:
            page = self._s3.list_object_versions(Bucket=bucket, Prefix=prefix, MaxKeys=1)
            return bool(page.get("Versions") or page.get("DeleteMarkers"))
        return bool(self._s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("Contents"))

    def _kept_on_update(self, account_id: str) -> list[str]:
        """Stores whose `updated` policy keeps the account's data and that still hold some."""
        return [s.name for s in self.map.stores if s.kind in (pdm.DYNAMODB, pdm.S3)
                and s.updated.action == pdm.NONE and self._holds_any(s, account_id)]

    def _registry(self, account_id: str, reason: str, now: datetime) -> StoreResult:
        store = self.registry
        table, key = self._resources[store.name], {store.key: {"S": account_id}}
        if reason == "updated" and self._kept_on_update(account_id):
            # The app still holds this person's data where the map keeps it on `updated` (comments): the
            # account must stay reported, or a later `closed` would never reach that data. What was stale
            # is gone and the rest needs no refresh by the map, so updatedAt becomes the time the update
            # was handled (only ever forward); Atlassian answers `updated` again after the next change.
            try:
                self._ddb.update_item(
                    TableName=table, Key=key, UpdateExpression="SET #u = :now",
                    ConditionExpression="#status = :active AND #u < :now",
                    ExpressionAttributeNames={"#status": "status", "#u": "updatedAt"},
                    ExpressionAttributeValues={":active": {"S": STATUS_ACTIVE},
                                               ":now": {"S": clock.format_rfc3339(now)}},
                )
            except Exception as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
            found = int(self._get(store, key) is not None)
            return StoreResult(store.name, found=found)  # kept: nothing deleted, nothing left to verify
        if reason == "closed":
            found = int(
                "Item"
                in self._ddb.get_item(
                    TableName=table,
                    Key=key,
                    ConsistentRead=True,
                    ProjectionExpression="#k",
                    ExpressionAttributeNames={"#k": store.key},
                )
            )
            return StoreResult(store.name, found=found, deleted=found)
        found = int("Attributes" in self._ddb.delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD"))
        remaining = int("Item" in self._ddb.get_item(TableName=table, Key=key, ConsistentRead=True))
        return StoreResult(store.name, found=found, deleted=found, remaining=remaining)

    # ------------------------------------------------------------ subject access export
    def export(self, account_id: str) -> dict[str, list[dict[str, Any]]]:
        """Every personal attribute the map lists, per store, for the subject's access request."""
        validate_account_id(account_id)
        out: dict[str, list[dict[str, Any]]] = {}
        for store in self.map.stores:
            if store.kind == pdm.DYNAMODB:
                out[store.name] = self._export_dynamodb(store, account_id)
            elif store.kind == pdm.S3:
                out[store.name] = self._export_s3(store, account_id)
            elif store.kind == pdm.REGISTRY:
                item = self._get(store, {store.key: {"S": account_id}})
                out[store.name] = [from_item(item)] if item else []
            elif store.export_hook and store.export_hook in self._hooks:
                found = self._hooks[store.export_hook](account_id)
                out[store.name] = [found] if isinstance(found, Mapping) else list(found or [])
        return out

    def _export_dynamodb(self, store: pdm.Store, account_id: str) -> list[dict[str, Any]]:
        wanted = set(store.table_key) | set(store.personal_attributes)
        rows = []
        for items in self._query_pages(store, account_id, keys_only=bool(store.index)):
            if store.index:  # index projections may lack attributes: read the items themselves
                items = [i or {} for i in self._get_many(store, [self._key_of(store, i) for i in items])]
            rows += [{k: from_attr(v) for k, v in item.items() if k in wanted} for item in items if item]
        return rows

    def _export_s3(self, store: pdm.Store, account_id: str) -> list[dict[str, Any]]:
        bucket, rows = self._resources[store.name], []
        for entry in self._s3_entries(store, account_id):
            row = {
                "key": entry["Key"],
                "versionId": entry.get("VersionId"),
                "isLatest": entry.get("IsLatest", True),
                "deleteMarker": entry.get("IsDeleteMarker", False),
                "size": entry.get("Size"),
                "etag": entry.get("ETag"),
                "lastModified": clock.format_rfc3339(entry["LastModified"])
                if entry.get("LastModified")
                else None,
            }
            if row["isLatest"] and not row["deleteMarker"]:
                head = self._s3.head_object(Bucket=bucket, Key=entry["Key"])
                row["contentType"] = head.get("ContentType")
                row["metadata"] = head.get("Metadata", {})
            rows.append(row)
        return rows


# ---------------------------------------------------------------- one queue message, end to end
def execute_action(
    message: ActionMessage,
    *,
    engine: ErasureEngine,
    audit: Any,
    subject: str,
    now: Callable[[], datetime] = clock.now,
) -> dict[str, Any]:
    """Erase or refresh, verify, audit, then (closed) tombstone. Safe to run again after any failure:

    stores then show "0 found", an existing audit record counts as done, and the tombstone write is
    idempotent, so a redelivered message converges instead of failing forever.
    """
    from .audit import build_record  # local: audit imports this module's marshalling helpers

    started = now()
    results = engine.apply(message.account_id, message.reason, started)
    finished = now()
    record = build_record(
        action=message.action,
        subject=subject,
        cycle=message.cycle,
        reported_at=message.reported_at,
        results=results,
        started_at=started,
        finished_at=finished,
    )
    written = audit.write(record)
    if message.action == "erase":
        engine.tombstone(message.account_id, subject, finished)
    return {
        "recordId": record["recordId"],
        "recorded": written,
        "stores": {r.store: {k: v for k, v in r.as_dict().items() if k != "store"} for r in results},
    }
