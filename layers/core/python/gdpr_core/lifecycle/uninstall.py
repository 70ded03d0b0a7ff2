"""Uninstall: erase what the app holds because of one site, in resumable chunks through the queue.

Entry points: an actions-queue message `{"schema": 1, "action": "uninstall", "site": S,
"requestedAt": T}` (the app forwards Connect's `uninstalled` callback or Forge's uninstall event;
`gdprctl sites uninstall S` sends the same), or an EventBridge event the app publishes (detail-type
`App Uninstalled`, detail `{"site": S}`), which the template's AppLifecycleRule delivers whole to the
same queue. `{"action": "reinstall", ...}` / `App Installed` cancels a pending one.

State, one item per site in the StateTable (`pk = "uninstall#" + keyed hash of the site`):
`pending` (grace period running) -> `running` (chunks) -> `done`; `installed` after a re-install.
Newest event wins: an uninstall older than the recorded re-install (or than a finished uninstall) is
ignored, so out-of-order delivery cannot erase a site that was installed again.

Finding a site's accounts: the registry has one item per account with a `sites` string set, and a
DynamoDB index key cannot be a set. A chunk is one Scan page (`Limit` = chunk size, filter
`contains(sites, S)`), resumed from the cursor kept in the state item. Cost: one uninstall reads the
registry once (eventually consistent Scan: 0.5 RRU per 4 KB, about 31,000 RRU for a million
accounts), and nothing at all on the hot path. A per-site membership item or index key would instead
cost a write on every registration forever and must itself be erased on closure; uninstalls are rare.

Each chunk message carries the state's `seq`; only the message whose `seq` equals the state's runs,
and the conditional update that advances `seq` lets exactly one of two concurrent deliveries send the
next message. A crash after the update but before the send is healed by the lifecycle tick, which
re-sends the message of any run that made no progress for STALE_AFTER.

Inside a chunk, progress (cursor = the last finished account's key, running counts) is saved every
CHECKPOINT_EVERY accounts, when a store fails (before the error goes back to SQS) and when the Lambda
runs short of time (the rest of the page then continues in the next message). The redelivery resumes
after the last finished account with its counts, so the audit record counts every account once; only
a hard kill (timeout, out of memory) can lose the counts of at most CHECKPOINT_EVERY accounts.

Per account: the site's data in every store (map `uninstall` policies), verified, then the site is
removed from the registry item, and the item is dropped when no site is left (no tombstone: the
account was not closed, it is simply no longer held, and not reported any more). Accounts on other
sites keep everything else and stay in the reporting walk untouched.

One audit record per uninstall: `recordId = "uninstall#<keyed hash of site>#<requestedAt>"`, with
per-store counts and no personal data (not even the site id, which can name a person).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import clock
from ..erasure import pdmap as pdm
from ..erasure.audit import AUDIT_ATTRIBUTES, AUDIT_SCHEMA
from ..erasure.engine import (
    ErasureEngine,
    ErasureError,
    InvalidMessage,
    StoreResult,
    VerificationFailed,
    error_code,
    from_item,
    load_queue_object,
    require_schema,
    to_attr,
)
from ..ids import validate_site

ACTIONS = ("uninstall", "reinstall")
# EventBridge detail-types (infra/template.yaml AppLifecycleRule matches exactly these) -> action.
APP_EVENT_TYPES = {"App Uninstalled": "uninstall", "App Installed": "reinstall"}
_ENVELOPE = ("detail-type", "source", "detail")  # what marks a queue body as a whole EventBridge event
STATE_PREFIX = "uninstall#"
PENDING, RUNNING, DONE, INSTALLED = "pending", "running", "done", "installed"
MAX_FUTURE = timedelta(minutes=15)  # clock skew allowed on requestedAt; later would outrank any re-install
# The oldest requestedAt a genuine request can carry: SQS keeps a message (DLQ included) 14 days from its
# first enqueue, EventBridge retries for 24 h before that. Older is a sender's unset or zero time.
MAX_PAST = timedelta(days=15)
MAX_GRACE_HOURS = 720  # 30 days: the template's MaxValue
MAX_CHUNK = 1000  # registry items per Scan page: the template's MaxValue (a page must fit in one run)
STALE_AFTER = timedelta(minutes=30)  # > the queue's visibility timeout (12 min): a live chain is never stale
DEFAULT_CHUNK = 200
CHECKPOINT_EVERY = 50  # accounts between saved progress inside a chunk: 1 write per 50 accounts
TIME_RESERVE_MS = 20_000  # stop a chunk early with this much Lambda time left (checkpoint + send)
DEFAULT_LEASE = timedelta(seconds=120)  # a chunk's lease without a Lambda context: the erasure function's timeout
LEASE_MARGIN = timedelta(seconds=30)  # a lease outlives its holder a little; a hard kill's redelivery (after
#                                       the queue's 12-minute visibility timeout) always finds it expired
_COUNTS = ("found", "deleted", "scrubbed", "remaining")


class UninstallRefused(RuntimeError):
    """The request cannot be applied (e.g. a re-install after erasure began); no personal data inside."""


# ---------------------------------------------------------------- queue message
@dataclass(frozen=True)
class LifecycleMessage:
    action: str
    site: str
    requested_at: str  # normalised RFC 3339
    seq: int | None = None  # None: the request itself; n: chunk n of a running uninstall

    def body(self) -> str:
        doc: dict[str, Any] = {"schema": 1, "action": self.action, "site": self.site,
                               "requestedAt": self.requested_at}
        if self.seq is not None:
            doc["seq"] = self.seq
        return json.dumps(doc)


def _unknown_fields(where: str, unknown: set[str], expected: set[str]) -> InvalidMessage:
    """Counts unknown fields and names the expected ones: an unknown key may itself be personal data (an
    account id, a name, an email), so none is echoed."""
    n = len(unknown)
    return InvalidMessage(f"{n} unknown field{'s' if n != 1 else ''}{where} (expected {sorted(expected)})")


_MESSAGE_FIELDS = {"schema", "action", "site", "requestedAt", "seq"}
_DETAIL_FIELDS = {"site", "requestedAt"}
_EVENT_FIELDS = {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail",
                 "replay-name"}


def _is_app_event(doc: object) -> bool:
    return isinstance(doc, dict) and all(k in doc for k in _ENVELOPE)


def is_lifecycle_message(body: str | bytes | None) -> bool:
    """Cheap routing test for the actions queue (a lifecycle message or any EventBridge event, so a
    foreign event gets the lifecycle parser's precise error); the full check is parse_lifecycle_message."""
    try:
        doc = json.loads(body or "")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(doc, dict) and (doc.get("action") in ACTIONS or _is_app_event(doc))


def _from_app_event(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An EventBridge event as the rule delivers it -> the queue document it stands for. `requestedAt`
    (when the app saw the callback) is required: the event's own `time` has only whole seconds, and the
    newest of an uninstall and a re-install wins, so a re-install in the same second could lose."""
    kind = doc["detail-type"]
    action = APP_EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if action is None:
        raise InvalidMessage(f"EventBridge detail-type must be one of {sorted(APP_EVENT_TYPES)}")
    detail = doc["detail"]
    if not isinstance(detail, dict):
        raise InvalidMessage("EventBridge detail must be a JSON object")
    unknown = set(doc) - _EVENT_FIELDS
    if unknown:  # e.g. queue-message fields beside the event: which one was meant is unknowable
        raise _unknown_fields(" beside the EventBridge event", unknown, _EVENT_FIELDS)
    unknown = set(detail) - _DETAIL_FIELDS
    if unknown:
        raise _unknown_fields(" in the EventBridge detail", unknown, _DETAIL_FIELDS)
    if "requestedAt" not in detail:
        raise InvalidMessage("the EventBridge detail needs requestedAt (RFC 3339, when the app saw the callback)")
    return {"schema": 1, "action": action, "site": detail.get("site"), "requestedAt": detail["requestedAt"]}


def parse_lifecycle_message(body: str | bytes | None) -> LifecycleMessage:
    raw = load_queue_object(body)
    doc = _from_app_event(raw) if _is_app_event(raw) else require_schema(raw)
    if doc.get("action") not in ACTIONS:
        raise InvalidMessage("action must be uninstall or reinstall")
    unknown = set(doc) - _MESSAGE_FIELDS
    if unknown:
        raise _unknown_fields("", unknown, _MESSAGE_FIELDS)
    try:
        site = validate_site(doc.get("site"))
    except ValueError as exc:
        raise InvalidMessage(str(exc)) from None
    try:
        requested = clock.format_rfc3339(clock.parse_rfc3339(doc.get("requestedAt")))
    except ValueError:
        raise InvalidMessage("requestedAt is not an RFC 3339 timestamp") from None
    seq = doc.get("seq")
    if seq is not None and (doc["action"] != "uninstall" or not isinstance(seq, int) or isinstance(seq, bool)
                            or seq < 0):
        raise InvalidMessage("seq must be a non-negative integer on uninstall continuations")
    return LifecycleMessage(doc["action"], site, requested, seq)


# ---------------------------------------------------------------- per account, per store
class SiteEraser(ErasureEngine):
    """The erasure engine's store access, applied to one (account, site) through `uninstall` policies."""

    def __init__(self, personal_data_map: pdm.PersonalDataMap, resources: Mapping[str, str], **kwargs: Any):
        personal_data_map.require_uninstall()
        super().__init__(personal_data_map, resources, **kwargs)

    def uninstall_stores(self) -> list[str]:
        """Every store an uninstall acts on, the registry last: the audit record names each, "0 found" too."""
        acting = [s.name for s in self.map.stores if s.uninstall is not None and s.uninstall.action != pdm.NONE
                  and s.name != self.registry.name]
        return [*acting, self.registry.name]

    def erase_site(self, account_id: str, site: str, now: datetime) -> list[StoreResult]:
        """Data stores, verified together, then hooks; the registry is left to remove_site (last)."""
        results: list[StoreResult] = []
        for store in self.map.stores:
            policy = store.uninstall
            if policy is None or policy.action == pdm.NONE:
                continue
            if store.kind == pdm.DYNAMODB:
                results.append(self._site_dynamodb(store, policy, account_id, site))
            elif store.kind == pdm.S3:
                results.append(self._site_s3(store, account_id, site))
        if any(r.remaining for r in results):
            raise VerificationFailed(results)
        for store in self.map.stores:
            if store.kind == pdm.HOOK and store.uninstall and store.uninstall.action == pdm.RUN_HOOK:
                hook = self._hook(store, store.uninstall.hook or "")
                results.append(self._hook_result(store, hook(account_id, site, now)))
        if any(r.remaining for r in results):
            raise VerificationFailed(results)
        return results

    def _hook_result(self, store: pdm.Store, outcome: Any) -> StoreResult:
        if isinstance(outcome, int) and not isinstance(outcome, bool):
            return StoreResult(store.name, found=outcome, deleted=outcome)
        if isinstance(outcome, Mapping):
            return StoreResult(store.name, **{k: int(outcome.get(k, 0)) for k in _COUNTS})
        raise ErasureError(f"store '{store.name}': uninstall hook returned no count")

    # ------------------------------------------------------------ DynamoDB
    @staticmethod
    def _on_site(item: Mapping[str, Any], attribute: str, site: str) -> bool:
        value = item.get(attribute) or {}
        return value.get("S") == site or site in (value.get("SS") or [])

    @staticmethod
    def _siteless(item: Mapping[str, Any], policy: pdm.Policy) -> bool:
        """A removeSite item with no site left: an earlier run emptied its set, then failed before the
        delete. By the policy such an item is deleted; without this it would be found by no one again."""
        return policy.action == pdm.REMOVE_SITE and not (item.get(policy.site_attribute or "") or {})

    def _holds_site(self, item: Mapping[str, Any] | None, policy: pdm.Policy, site: str) -> bool:
        """The item is the site's to act on: on the site, or a removeSite item left with no site."""
        if not item:
            return False
        return self._on_site(item, policy.site_attribute or "", site) or self._siteless(item, policy)

    def _site_items(self, store: pdm.Store, account_id: str, site: str) -> list[dict[str, Any]]:
        policy: pdm.Policy = store.uninstall  # type: ignore[assignment]
        items = []
        keys = self._find_keys(store, account_id)
        for item in self._get_many(store, keys):  # consistent: the site attribute may not be in the index
            if self._holds_site(item, policy, site):
                items.append(item)  # type: ignore[arg-type]
        return items

    def _site_dynamodb(self, store: pdm.Store, policy: pdm.Policy, account_id: str, site: str) -> StoreResult:
        items = self._site_items(store, account_id, site)
        keys = [{k: item[k] for k in store.table_key} for item in items]
        deleted = scrubbed = 0
        if policy.action == pdm.DELETE_ITEMS:
            self._batch_delete(store, keys)
            deleted = len(keys)
        elif policy.action == pdm.SCRUB:
            scrubbed = sum(1 for key in keys if self._scrub(store, policy, key))
        else:  # removeSite
            for item, key in zip(items, keys, strict=True):
                if "SS" in (item.get(policy.site_attribute or "") or {}):
                    kept = self._remove_from_set(store, policy.site_attribute or "", key, site)
                else:  # a single-site item is the site's alone
                    kept = False
                if kept is False and self._delete_if_siteless(store, policy.site_attribute or "", key, site):
                    deleted += 1
                elif kept:
                    scrubbed += 1  # the item stays for the account's other sites, without this one
        remaining = 0
        for item in self._get_many(store, keys):
            if not self._holds_site(item, policy, site) or item is None:
                continue
            if policy.action == pdm.SCRUB:
                remaining += item.get(store.lookup_attribute) == {"S": account_id} and (
                    any(a in item for a in policy.remove)
                    or any(item.get(a) != to_attr(v) for a, v in policy.set.items())
                )
            else:
                remaining += 1
        return StoreResult(store.name, found=len(items), deleted=deleted, scrubbed=scrubbed, remaining=remaining)

    def _remove_from_set(self, store: pdm.Store, attribute: str, key: dict[str, Any], site: str) -> bool | None:
        """True: other sites remain; False: the set is now empty; None: the site was no longer there."""
        try:
            answer = self._ddb.update_item(
                TableName=self._resources[store.name], Key=key,
                UpdateExpression="DELETE #a :site", ConditionExpression="contains(#a, :one)",
                ExpressionAttributeNames={"#a": attribute},
                ExpressionAttributeValues={":site": {"SS": [site]}, ":one": {"S": site}},
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return bool((answer.get("Attributes") or {}).get(attribute))

    def _delete_if_siteless(self, store: pdm.Store, attribute: str, key: dict[str, Any], site: str) -> bool:
        """Deletes the item unless another site was added meanwhile (the app is still using it)."""
        try:
            self._ddb.delete_item(
                TableName=self._resources[store.name], Key=key,
                # attribute_exists(key): a missing item is not "deleted" again (it would count twice).
                ConditionExpression="attribute_exists(#k) AND (attribute_not_exists(#a) OR #a = :site)",
                ExpressionAttributeNames={"#a": attribute, "#k": next(iter(key))},
                ExpressionAttributeValues={":site": {"S": site}},
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # ------------------------------------------------------------ S3
    def _site_entries(self, store: pdm.Store, key: str) -> list[dict[str, Any]]:
        bucket, entries = self._resources[store.name], []
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
        while True:
            if store.versions:
                page = self._s3.list_object_versions(**params)
                found = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            else:
                page = self._s3.list_objects_v2(**params)
                found = page.get("Contents", [])
            # The key is also a prefix of longer keys ("x.png.bak"): only the exact key is the site's.
            entries.extend(e for e in found if e["Key"] == key)
            if not page.get("IsTruncated"):
                return entries
            if store.versions:
                params.update(KeyMarker=page.get("NextKeyMarker"), VersionIdMarker=page.get("NextVersionIdMarker"))
            else:
                params["ContinuationToken"] = page["NextContinuationToken"]

    def _site_s3(self, store: pdm.Store, account_id: str, site: str) -> StoreResult:
        key = store.site_key(account_id, site)
        entries = self._site_entries(store, key)
        targets = [{"Key": key, **({"VersionId": e["VersionId"]} if store.versions else {})} for e in entries]
        for start in range(0, len(targets), 1000):
            answer = self._s3.delete_objects(Bucket=self._resources[store.name],
                                             Delete={"Objects": targets[start:start + 1000], "Quiet": True})
            if answer.get("Errors"):
                raise ErasureError(f"store '{store.name}': S3 refused {len(answer['Errors'])} deletes")
        remaining = len(self._site_entries(store, key))
        return StoreResult(store.name, found=len(entries), deleted=len(targets), remaining=remaining)

    # ------------------------------------------------------------ registry
    def remove_site(self, account_id: str, site: str) -> str:
        """'removed' (other sites remain), 'dropped' (no site left: item deleted) or 'absent'."""
        store = self.registry
        key = {store.key: {"S": account_id}}
        kept = self._remove_from_set(store, "sites", key, site)
        if kept is None:
            # Not on the site: done before, or a run emptied `sites` and failed before the delete.
            return "dropped" if self._delete_if_siteless(store, "sites", key, site) else "absent"
        if kept:
            return "removed"
        return "dropped" if self._delete_if_siteless(store, "sites", key, site) else "removed"


# ---------------------------------------------------------------- the uninstall run
_SKEW_MINUTES = MAX_FUTURE.seconds // 60


def _within_skew(earlier: str, later: str | None) -> bool:
    """`earlier` is older than `later` by no more than the clock skew allowed between senders."""
    return later is not None and clock.parse_rfc3339(later) - clock.parse_rfc3339(earlier) <= MAX_FUTURE


def _stores_doc(totals: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    return {name: {k: int(v.get(k, 0)) for k in _COUNTS} for name, v in totals.items()}


_PART_MATCHES = "(attribute_not_exists(part) OR part = :part) AND leaseId = :lease"


class _ChunkProgress:
    """Running counts of one uninstall, as loaded from the state item plus this delivery's accounts."""

    def __init__(self, state: Mapping[str, Any]):
        self.totals: dict[str, dict[str, int]] = {k: dict(v) for k, v in (state.get("stores") or {}).items()}
        self.accounts, self.dropped = int(state.get("accounts", 0)), int(state.get("dropped", 0))
        self.part = int(state.get("part", 0))
        self.last: str | None = None
        self.unsaved = 0

    def add(self, results: list[StoreResult], outcome: str, registry: str, account_id: str) -> None:
        for result in results:
            row = self.totals.setdefault(result.store, dict.fromkeys(_COUNTS, 0))
            for k in _COUNTS:
                row[k] += getattr(result, k)
        if outcome != "absent":
            self.accounts += 1
            row = self.totals.setdefault(registry, dict.fromkeys(_COUNTS, 0))
            row["found"] += 1
            row["deleted" if outcome == "dropped" else "scrubbed"] += 1
            self.dropped += outcome == "dropped"
        self.last, self.unsaved = account_id, self.unsaved + 1

    def saved(self) -> None:
        self.part, self.unsaved = self.part + 1, 0

    def doc(self) -> dict[str, Any]:
        return {"stores": _stores_doc(self.totals), "accounts": self.accounts, "dropped": self.dropped}


class UninstallService:
    def __init__(
        self,
        *,
        eraser: SiteEraser,
        dynamodb: Any,
        sqs: Any,
        queue_url: str,
        state_table: str,
        registry_table: str,
        audit: Any,
        site_ref: Callable[[str], str],
        grace_hours: float = 0,
        chunk_size: int = DEFAULT_CHUNK,
        now: Callable[[], datetime] = clock.now,
    ):
        if not 1 <= chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be from 1 to {MAX_CHUNK}")
        if not 0 <= grace_hours <= MAX_GRACE_HOURS:  # also refuses NaN
            raise ValueError(f"grace_hours must be from 0 to {MAX_GRACE_HOURS}")
        self.eraser, self._ddb, self._sqs, self._queue = eraser, dynamodb, sqs, queue_url
        self._state, self._registry, self._audit = state_table, registry_table, audit
        self._site_ref, self.grace = site_ref, timedelta(hours=grace_hours)
        self.chunk_size, self._now = chunk_size, now

    # ------------------------------------------------------------ state item
    def _key(self, site: str) -> dict[str, Any]:
        return {"pk": {"S": STATE_PREFIX + self._site_ref(site)}}

    def newest_event(self, site: str) -> str | None:
        """The requestedAt/reinstalledAt an uninstall must be newer than to be acted on (None: any is)."""
        item = self._load(validate_site(site)) or {}
        if item.get("state") not in (DONE, INSTALLED):
            return None
        return max(t for t in (item.get("requestedAt"), item.get("reinstalledAt"), "") if t is not None) or None

    def _load(self, site: str) -> dict[str, Any] | None:
        item = self._ddb.get_item(TableName=self._state, Key=self._key(site), ConsistentRead=True).get("Item")
        return from_item(item) if item else None

    def _send(self, message: LifecycleMessage) -> None:
        self._sqs.send_message(QueueUrl=self._queue, MessageBody=message.body())

    def handle(self, message: LifecycleMessage, time_left_ms: Callable[[], int] | None = None) -> dict[str, Any]:
        if message.seq is None and clock.parse_rfc3339(message.requested_at) > self._now() + MAX_FUTURE:
            # "Newest event wins": a request from the future would outrank every re-install until then.
            raise InvalidMessage(f"requestedAt is more than {_SKEW_MINUTES} minutes in the future")
        if message.seq is None and clock.parse_rfc3339(message.requested_at) < self._now() - MAX_PAST:
            # No genuine delivery is this old: an unset time (0001-01-01, 1970-01-01) in the sender.
            raise InvalidMessage(f"requestedAt is more than {MAX_PAST.days} days in the past")
        if message.action == "reinstall":
            return self.reinstall(message.site, message.requested_at)
        if message.seq is None:
            return self.request(message.site, message.requested_at)
        return self.run_chunk(message.site, message.requested_at, message.seq, time_left_ms)

    # ------------------------------------------------------------ request / reinstall
    def due_at(self, requested_at: str) -> datetime:
        """When an uninstall dated `requested_at` and arriving now is due. The grace period runs from its
        date or, if later, from its arrival: a request dated long ago (a late delivery, a replayed dead
        letter) still leaves the whole grace period for a re-install to cancel it."""
        return max(clock.parse_rfc3339(requested_at), self._now()) + self.grace

    def request(self, site: str, requested_at: str) -> dict[str, Any]:
        """Records the uninstall (pending for the grace period) and starts it when it is due."""
        validate_site(site)
        ref = self._site_ref(site)
        due = self.due_at(requested_at)
        try:
            self._ddb.update_item(
                TableName=self._state, Key=self._key(site),
                # Only after a finished run or a re-install, and only if newer than both.
                ConditionExpression=(
                    "attribute_not_exists(pk) OR ((#st = :done OR #st = :installed) "
                    "AND (attribute_not_exists(requestedAt) OR requestedAt < :req) "
                    "AND (attribute_not_exists(reinstalledAt) OR reinstalledAt < :req))"
                ),
                UpdateExpression=(
                    "SET #st = :pending, site = :site, siteRef = :ref, requestedAt = :req, dueAt = :due, "
                    "graceHours = :grace REMOVE seq, part, #cursor, stores, accounts, dropped, startedAt, "
                    "finishedAt, progressAt, recordId"
                ),
                ExpressionAttributeNames={"#st": "state", "#cursor": "cursor"},
                ExpressionAttributeValues={
                    ":done": {"S": DONE}, ":installed": {"S": INSTALLED}, ":pending": {"S": PENDING},
                    ":site": {"S": site}, ":ref": {"S": ref}, ":req": {"S": requested_at},
                    ":due": {"S": clock.format_rfc3339(due)},
                    ":grace": {"N": str(self.grace.total_seconds() / 3600)},
                },
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            item = self._load(site) or {}
            same = item.get("requestedAt") == requested_at
            outcome = "duplicate" if same else "superseded"
            if same and item.get("state") == PENDING and clock.parse_rfc3339(item["dueAt"]) <= self._now():
                return {"outcome": self._start(site, requested_at), "siteRef": ref}
            if not same and item.get("state") == INSTALLED and _within_skew(requested_at, item.get("reinstalledAt")):
                # Which came last is unknowable within the clocks' skew; ignoring it could keep the data of
                # a site the app has left. Fail loudly (DLQ, alarm): a person decides.
                raise UninstallRefused(
                    f"a re-install of this site is recorded no more than {_SKEW_MINUTES} minutes after this "
                    "uninstall, so their order is uncertain; if the app is not installed there, run "
                    "`gdprctl sites uninstall`, else drop this message") from None
            return {"outcome": outcome, "siteRef": ref, "state": item.get("state")}
        if due > self._now():
            return {"outcome": PENDING, "siteRef": ref, "dueAt": clock.format_rfc3339(due)}
        return {"outcome": self._start(site, requested_at), "siteRef": ref}

    def _start(self, site: str, requested_at: str) -> str:
        """pending -> running (once), then chunk 0 goes on the queue."""
        now = clock.format_rfc3339(self._now())
        try:
            self._ddb.update_item(
                TableName=self._state, Key=self._key(site),
                ConditionExpression="#st = :pending AND requestedAt = :req",
                UpdateExpression="SET #st = :running, seq = :zero, part = :zero, startedAt = :now, "
                                 "progressAt = :now, accounts = :zero, dropped = :zero, stores = :stores",
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues={
                    ":pending": {"S": PENDING}, ":running": {"S": RUNNING}, ":req": {"S": requested_at},
                    ":zero": {"N": "0"}, ":now": {"S": now}, ":stores": {"M": {}},
                },
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return "already-started"
            raise
        self._send(LifecycleMessage("uninstall", site, requested_at, 0))
        return "started"

    def reinstall(self, site: str, requested_at: str) -> dict[str, Any]:
        """Cancels a pending uninstall; refused once erasure has begun (erased data cannot come back)."""
        validate_site(site)
        try:
            old = self._ddb.update_item(
                TableName=self._state, Key=self._key(site),
                ConditionExpression=(
                    "attribute_not_exists(pk) OR (#st = :pending AND requestedAt <= :req) OR "
                    "((#st = :done OR #st = :installed) AND (attribute_not_exists(reinstalledAt) "
                    "OR reinstalledAt < :req) AND (attribute_not_exists(requestedAt) OR requestedAt < :req))"
                ),
                UpdateExpression="SET #st = :installed, reinstalledAt = :req, siteRef = :ref REMOVE site, dueAt",
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues={
                    ":pending": {"S": PENDING}, ":done": {"S": DONE}, ":installed": {"S": INSTALLED},
                    ":req": {"S": requested_at}, ":ref": {"S": self._site_ref(site)},
                },
                ReturnValues="ALL_OLD",
            ).get("Attributes") or {}
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            item = self._load(site) or {}
            if item.get("state") == RUNNING:
                raise UninstallRefused("the uninstall of this site is already erasing data; it cannot be "
                                       "cancelled (re-registered accounts are held anew)") from None
            if item.get("state") == PENDING and item.get("reinstalledAt") != requested_at \
                    and _within_skew(requested_at, item.get("requestedAt")):
                # The mirror case: ignoring it could erase a site the app is installed on again.
                raise UninstallRefused(
                    f"a pending uninstall of this site is dated no more than {_SKEW_MINUTES} minutes after this "
                    "re-install, so their order is uncertain; if the app is installed there, run "
                    "`gdprctl sites reinstall` before the grace period ends, else drop this message") from None
            return {"outcome": "superseded", "siteRef": self._site_ref(site), "state": item.get("state")}
        was = old.get("state", {}).get("S")
        return {"outcome": "cancelled" if was == PENDING else "recorded", "siteRef": self._site_ref(site)}

    def cancel(self, site: str) -> dict[str, Any]:
        """The operator's re-install, now. A pending uninstall dated a little ahead (within MAX_FUTURE)
        is cancelled too: the operator acts after seeing it, whatever the sender's clock said."""
        now = clock.format_rfc3339(self._now())
        item = self._load(validate_site(site)) or {}
        at = max(now, item.get("requestedAt") or now) if item.get("state") == PENDING else now
        return self.reinstall(site, at)

    # ------------------------------------------------------------ chunks
    def run_chunk(self, site: str, requested_at: str, seq: int,
                  time_left_ms: Callable[[], int] | None = None) -> dict[str, Any]:
        state = self._load(site)
        ref = self._site_ref(site)
        if not state or state.get("state") != RUNNING or state.get("requestedAt") != requested_at \
                or state.get("seq") != seq:
            return {"outcome": "stale", "siteRef": ref}  # cancelled, finished, or a duplicate delivery
        claimed = self._claim(site, requested_at, seq, time_left_ms)
        if claimed is None:
            # Another delivery of this chunk holds it (SQS delivers at least once, the tick re-sends):
            # it carries on, or its own redelivery (or the tick) does once its lease has run out.
            return {"outcome": "busy", "siteRef": ref}
        state, lease = claimed
        run = _ChunkProgress(state)
        try:
            return self._run_claimed(site, requested_at, seq, state, run, lease, time_left_ms)
        except Exception:
            # Save what finished, so the redelivery neither repeats nor forgets it, and hand the chunk
            # back (the lease) so that redelivery may run it at once; the error stands.
            try:
                if run.unsaved:
                    self._checkpoint(site, requested_at, seq, run, lease, release=True)
                else:
                    self._release(site, lease)
            except Exception:  # noqa: BLE001, S110 - the original error is the one to report
                pass
            raise

    def _run_claimed(self, site: str, requested_at: str, seq: int, state: Mapping[str, Any], run: _ChunkProgress,
                     lease: str, time_left_ms: Callable[[], int] | None) -> dict[str, Any]:
        """One Scan page of the site's accounts, under this delivery's lease."""
        ref = self._site_ref(site)
        now = self._now()
        params: dict[str, Any] = {
            "TableName": self._registry, "Limit": self.chunk_size, "ConsistentRead": True,
            "ProjectionExpression": "accountId",
            # attribute_not_exists: an item an earlier run left without sites (failed before its delete).
            "FilterExpression": "(contains(sites, :site) OR attribute_not_exists(sites)) AND #status = :active",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":site": {"S": site}, ":active": {"S": "active"}},
        }
        if state.get("cursor"):
            params["ExclusiveStartKey"] = {"accountId": {"S": state["cursor"]}}
        page = self._ddb.scan(**params)
        items = page.get("Items", [])
        cut_short = False
        for n, item in enumerate(items, start=1):
            account_id = item["accountId"]["S"]
            run.add(self.eraser.erase_site(account_id, site, now), self.eraser.remove_site(account_id, site),
                    self.eraser.registry.name, account_id)
            if n == len(items):
                break
            if time_left_ms is not None and time_left_ms() < TIME_RESERVE_MS:
                cut_short = True  # the rest of the page goes on in the next message
                break
            if run.unsaved >= CHECKPOINT_EVERY and not self._checkpoint(site, requested_at, seq, run, lease):
                return {"outcome": "stale", "siteRef": ref}
        if cut_short:
            cursor = run.last
        else:
            cursor = (page.get("LastEvaluatedKey") or {}).get("accountId", {}).get("S")
        progress = run.doc()
        if cursor:
            if not self._advance(site, requested_at, seq, {**progress, "cursor": cursor}, lease, part=run.part):
                return {"outcome": "stale", "siteRef": ref}
            self._send(LifecycleMessage("uninstall", site, requested_at, seq + 1))
            return {"outcome": "chunk", "siteRef": ref, "seq": seq, "accounts": run.accounts}
        record = self._record(ref, state, requested_at, progress, seq)
        written = self._audit.write(record)
        if not self._advance(site, requested_at, seq, {**progress, "recordId": record["recordId"]}, lease,
                             finish=True, part=run.part):
            return {"outcome": "stale", "siteRef": ref}
        return {"outcome": "finished", "siteRef": ref, "recordId": record["recordId"], "recorded": written,
                "accounts": run.accounts, "dropped": run.dropped, "stores": progress["stores"]}

    def _claim(self, site: str, requested_at: str, seq: int,
               time_left_ms: Callable[[], int] | None) -> tuple[dict[str, Any], str] | None:
        """Leases chunk `seq` to this delivery until it must have ended (the Lambda's time left, plus a
        margin); returns the state as of the claim and the lease id, or None while another holds it."""
        lease = uuid.uuid4().hex
        now = self._now()
        left = timedelta(milliseconds=time_left_ms()) if time_left_ms is not None else DEFAULT_LEASE
        try:
            answer = self._ddb.update_item(
                TableName=self._state, Key=self._key(site),
                ConditionExpression="#st = :running AND requestedAt = :req AND seq = :seq AND "
                                    "(attribute_not_exists(leaseUntil) OR leaseUntil < :now)",
                UpdateExpression="SET leaseId = :lease, leaseUntil = :until",
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues={
                    ":running": {"S": RUNNING}, ":req": {"S": requested_at}, ":seq": {"N": str(seq)},
                    ":now": {"S": clock.format_rfc3339(now)}, ":lease": {"S": lease},
                    ":until": {"S": clock.format_rfc3339(now + left + LEASE_MARGIN)},
                },
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return from_item(answer["Attributes"]), lease

    def _checkpoint(self, site: str, requested_at: str, seq: int, run: _ChunkProgress, lease: str,
                    release: bool = False) -> bool:
        """Saves progress inside chunk `seq` (same seq: a redelivery resumes after `run.last`); `release`
        also gives up the lease (after a failure, so the redelivery need not wait for it to run out)."""
        values = {**run.doc(), "cursor": run.last}
        names = {f"#v_{k}": k for k in values}
        attr = {f":v_{k}": to_attr(v) for k, v in values.items()}
        sets = ["part = :next", "progressAt = :now"] + [f"#v_{k} = :v_{k}" for k in values]
        try:
            self._ddb.update_item(
                TableName=self._state, Key=self._key(site),
                ConditionExpression="#st = :running AND requestedAt = :req AND seq = :seq AND " + _PART_MATCHES,
                UpdateExpression="SET " + ", ".join(sets) + (" REMOVE leaseId, leaseUntil" if release else ""),
                ExpressionAttributeNames={"#st": "state", **names},
                ExpressionAttributeValues={
                    ":running": {"S": RUNNING}, ":req": {"S": requested_at}, ":seq": {"N": str(seq)},
                    ":part": {"N": str(run.part)}, ":next": {"N": str(run.part + 1)}, ":lease": {"S": lease},
                    ":now": {"S": clock.format_rfc3339(self._now())}, **attr,
                },
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False  # another delivery of this chunk saved first: it carries on, this one stops
            raise
        run.saved()
        return True

    def _release(self, site: str, lease: str) -> None:
        """Gives up this delivery's lease (if it still holds it); nothing else changes."""
        try:
            self._ddb.update_item(TableName=self._state, Key=self._key(site), ConditionExpression="leaseId = :lease",
                                  UpdateExpression="REMOVE leaseId, leaseUntil",
                                  ExpressionAttributeValues={":lease": {"S": lease}})
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    def _advance(self, site: str, requested_at: str, seq: int, values: Mapping[str, Any], lease: str,
                 finish: bool = False, part: int = 0) -> bool:
        names = {"#st": "state", **({"#cursor": "cursor"} if finish else {})}
        sets = ["seq = :next", "progressAt = :now", "part = :zero"] + [f"#v_{k} = :v_{k}" for k in values]
        names.update({f"#v_{k}": k for k in values})
        attr = {f":v_{k}": to_attr(v) for k, v in values.items()}
        now = clock.format_rfc3339(self._now())
        if finish:
            sets += ["#st = :done", "finishedAt = :now"]
            attr[":done"] = {"S": DONE}
        # The next chunk's delivery claims its own lease.
        expression = "SET " + ", ".join(sets) + " REMOVE leaseId, leaseUntil" + (", site, #cursor" if finish else "")
        try:
            self._ddb.update_item(
                TableName=self._state, Key=self._key(site),
                ConditionExpression="#st = :running AND requestedAt = :req AND seq = :seq AND " + _PART_MATCHES,
                UpdateExpression=expression,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    ":running": {"S": RUNNING}, ":req": {"S": requested_at}, ":seq": {"N": str(seq)},
                    ":next": {"N": str(seq + 1)}, ":now": {"S": now}, ":part": {"N": str(part)}, ":lease": {"S": lease},
                    ":zero": {"N": "0"}, **attr,
                },
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False  # a concurrent delivery of the same chunk advanced first
            raise
        return True

    def _record(self, ref: str, state: Mapping[str, Any], requested_at: str, progress: Mapping[str, Any],
                seq: int) -> dict[str, Any]:
        finished = self._now()
        # A store the site held nothing in is recorded as "0 found", never left out.
        stores = {name: dict.fromkeys(_COUNTS, 0) for name in self.eraser.uninstall_stores()} | progress["stores"]
        record = {
            "recordId": f"uninstall#{ref}#{requested_at}",
            "day": finished.astimezone(UTC).date().isoformat(),
            "recordedAt": clock.format_rfc3339(finished),
            "action": "uninstall",
            "subject": ref,
            "source": {"reason": "uninstalled", "requestedAt": requested_at, "accounts": progress["accounts"],
                       "accountsDropped": progress["dropped"], "chunks": seq + 1,
                       "graceHours": state.get("graceHours", 0)},
            "stores": stores,
            "verified": all(v["remaining"] == 0 for v in stores.values()),
            "startedAt": state.get("startedAt") or clock.format_rfc3339(finished),
            "finishedAt": clock.format_rfc3339(finished),
            "schema": AUDIT_SCHEMA,
        }
        if not set(record) <= set(AUDIT_ATTRIBUTES):  # the IAM condition would refuse the put
            raise ValueError("audit record has attributes outside AUDIT_ATTRIBUTES")
        return record

    # ------------------------------------------------------------ the tick
    def tick(self) -> dict[str, int]:
        """Starts uninstalls whose grace period is over; re-sends the message of stalled runs."""
        now = self._now()
        started = resumed = 0
        for item in self.list_states():
            if item.get("state") == PENDING and item.get("site") and \
                    clock.parse_rfc3339(item["dueAt"]) <= now:
                started += self._start(item["site"], item["requestedAt"]) == "started"
            elif item.get("state") == RUNNING and item.get("site") and \
                    clock.parse_rfc3339(item["progressAt"]) <= now - STALE_AFTER:
                # Duplicates are harmless (only seq == state.seq runs); a lost message is not.
                self._send(LifecycleMessage("uninstall", item["site"], item["requestedAt"], int(item["seq"])))
                resumed += 1
        return {"uninstallsStarted": started, "uninstallsResumed": resumed}

    def list_states(self) -> list[dict[str, Any]]:
        """Every site's uninstall state. The state table is tiny (the reporter's item plus one per
        uninstalled site), so reading it whole is cheaper than keeping an index of it."""
        return list_states(self._ddb, self._state)


def list_states(dynamodb: Any, state_table: str) -> list[dict[str, Any]]:
    out, start = [], None
    while True:
        params: dict[str, Any] = {
            "TableName": state_table, "ConsistentRead": True,
            "FilterExpression": "begins_with(pk, :prefix)",
            "ExpressionAttributeValues": {":prefix": {"S": STATE_PREFIX}},
        }
        if start:
            params["ExclusiveStartKey"] = start
        page = dynamodb.scan(**params)
        out.extend(from_item(item) for item in page.get("Items", []))
        start = page.get("LastEvaluatedKey")
        if not start:
            return out


def status_rows(states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pending and running uninstalls for `gdprctl status` (site ids, which the operator typed)."""
    keep = ("site", "state", "requestedAt", "dueAt", "accounts", "dropped", "seq", "progressAt")
    return sorted(({k: s[k] for k in keep if k in s} for s in states if s.get("state") in (PENDING, RUNNING)),
                  key=lambda r: r.get("requestedAt", ""))


def request_message(site: str, requested_at: datetime | None = None) -> str:
    """The queue body the app (or gdprctl) sends when the app was uninstalled from `site`."""
    when = requested_at or clock.now()
    return LifecycleMessage("uninstall", validate_site(site), clock.format_rfc3339(when)).body()


def app_event(site: str, action: str = "uninstall", requested_at: datetime | None = None, *,
              source: str = "atlassian-app", event_bus: str = "default") -> dict[str, str]:
    """The EventBridge PutEvents entry the app publishes instead of a queue message (`source` and
    `event_bus` as the stack's AppEventSource and AppEventBusName parameters)."""
    detail_type = {a: t for t, a in APP_EVENT_TYPES.items()}.get(action)
    if detail_type is None:
        raise ValueError("action must be uninstall or reinstall")
    when = clock.format_rfc3339(requested_at or clock.now())
    return {"Source": source, "DetailType": detail_type, "EventBusName": event_bus,
            "Detail": json.dumps({"site": validate_site(site), "requestedAt": when})}

