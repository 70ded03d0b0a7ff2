"""Consent storage on the ConsentTable (docs/architecture.md): latest state per subject plus history.

Items, all keyed by `pk = "subject#" + Pseudonymizer.email(email)` (no raw email anywhere):
- `sk = "latest"`: `c_<key>` = {version, granted, occurredAt, locale, displayedText?, formUrl?,
  accountRef?} per consent key, `erasedVersion` once erased, `accountRef` (feeds account-index),
  `suppressed` after an account closure, and `rev`, a counter every write bumps so erasures can
  detect a racing update.
- `sk = "delivery#<webhook-id>"`: one per delivery id, written first with outcome `pending`, then the
  latest state is changed, then the outcome is recorded. A crash in between leaves `pending`, and a
  redelivery redoes the (idempotent, version-conditioned) state change, so it converges.
- `sk = "push#<push-id>"`: one per consent the vendor captured and pushed to ConsentHub, with the
  displayed text (the proof), the attempts and the outcome (`pending`, `accepted`, `rejected`,
  `superseded` when an erasure newer than the capture came first). Erasures strip and delete these
  exactly like delivery history.

Ordering lives in the conditions: a consent key only moves to a greater version and never to one at
or below `erasedVersion`, so racing deliveries cannot both win and an old update cannot resurrect
erased data. A valid single-key update costs three writes: history put, latest update, outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from .. import clock
from ..adapters.aws import lazy_client
from ..pseudonym import Pseudonymizer
from .model import UPDATED, ConsentEvent, make_version, requires_opt_in

APPLIED = "applied"
DUPLICATE = "duplicate"
STALE = "stale"
PENDING = "pending"

LATEST = "latest"
DELIVERY_PREFIX = "delivery#"
PUSH_PREFIX = "push#"
HISTORY_PREFIXES = (DELIVERY_PREFIX, PUSH_PREFIX)
PUSH_ACCEPTED = "accepted"
PUSH_REJECTED = "rejected"
PUSH_SUPERSEDED = "superseded"
KEY_PREFIX = "c_"
ACCOUNT_INDEX = "account-index"
# Personal payload a history item may carry; erasure strips it from older deliveries.
HISTORY_PAYLOAD = ("locale", "formUrl", "displayedText")
_MAX_ATTEMPTS = 10

_ser = TypeSerializer()
_de = TypeDeserializer()


class ConsentStateConflict(RuntimeError):
    """The latest item kept changing under an erasure; the caller answers 5xx and the sender retries."""


def _to_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items() if v is not None}


def _from_ddb(item: dict[str, Any] | None) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in (item or {}).items()}


def _is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class ConsentStore:
    def __init__(self, table_name: str, pseudonymizer: Pseudonymizer, client: Any = None):
        self._table = table_name
        self._pseudonymizer = pseudonymizer
        self._client = client

    client = lazy_client("dynamodb")

    def subject_key(self, email: str) -> str:
        return "subject#" + self._pseudonymizer.email(email)

    # ------------------------------------------------------------------ webhook deliveries
    def apply(self, event: ConsentEvent) -> str:
        """Stores one delivery; returns `applied`, `duplicate` or `stale`."""
        pk = self.subject_key(event.email)
        existing = self._put_history(pk, event)
        if existing is not None and existing.get("outcome") != PENDING:
            return DUPLICATE
        # New delivery, or one whose earlier attempt stopped before recording its outcome: (re)do it.
        if event.type == UPDATED:
            outcome, blocked_by_erasure = self._apply_update(pk, event)
        else:
            outcome, blocked_by_erasure = self._apply_erasure(pk, event), False
        self._finish_history(pk, event.webhook_id, outcome, strip=blocked_by_erasure)
        return outcome

    def _put_history(self, pk: str, event: ConsentEvent) -> dict[str, Any] | None:
        """Creates the history item; returns the existing one when this id was seen before."""
        item: dict[str, Any] = {
            "pk": pk,
            "sk": DELIVERY_PREFIX + event.webhook_id,
            "type": event.type,
            "version": event.version,
            "occurredAt": clock.format_rfc3339(event.occurred_at),
            "receivedAt": clock.format_rfc3339(clock.now()),
            "outcome": PENDING,
        }
        if event.type == UPDATED:
            item["consents"] = [{"key": c.key, "granted": c.granted} for c in event.consents]
            texts = {c.key: c.displayed_text for c in event.consents if c.displayed_text is not None}
            item["displayedText"] = texts or None
            item["locale"] = event.locale
            item["formUrl"] = event.form_url
        try:
            self.client.put_item(
                TableName=self._table,
                Item=_to_ddb(item),
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return None
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            return self._item_that_failed(error, pk, item["sk"])

    def _apply_update(self, pk: str, event: ConsentEvent) -> tuple[str, bool]:
        version = event.version
        account_ref = self._pseudonymizer.account(event.account_id) if event.account_id else None
        applied = blocked_by_erasure = False
        for consent in event.consents:
            entry = {
                "version": version,
                "granted": consent.granted,
                "occurredAt": clock.format_rfc3339(event.occurred_at),
                "locale": event.locale,
                "displayedText": consent.displayed_text,
                "formUrl": event.form_url,
                "accountRef": account_ref,
            }
            values: dict[str, Any] = {
                ":entry": {"M": _to_ddb(entry)},
                ":ver": {"S": version},
                ":one": {"N": "1"},
            }
            update = "SET #c = :entry"
            if account_ref:
                update += ", accountRef = :ref"
                values[":ref"] = {"S": account_ref}
            # A newer choice than the last erasure supersedes an account-closure suppression.
            update += " REMOVE suppressed ADD rev :one"
            attr = KEY_PREFIX + consent.key
            try:
                self.client.update_item(
                    TableName=self._table,
                    Key=_to_ddb({"pk": pk, "sk": LATEST}),
                    UpdateExpression=update,
                    ConditionExpression="(attribute_not_exists(#c) OR #c.#v < :ver)"
                    " AND (attribute_not_exists(erasedVersion) OR erasedVersion < :ver)",
                    ExpressionAttributeNames={"#c": attr, "#v": "version"},
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                applied = True
                continue
            except ClientError as error:
                if not _is_conditional_failure(error):
                    raise
                old = self._item_that_failed(error, pk, LATEST)
            if (old.get(attr) or {}).get("version") == version:
                applied = True  # an earlier attempt of this very delivery got here first
            elif old.get("erasedVersion", "") >= version:
                blocked_by_erasure = True
        return (APPLIED if applied else STALE), (blocked_by_erasure and not applied)

    def _apply_erasure(self, pk: str, event: ConsentEvent) -> str:
        version = event.version
        for _ in range(_MAX_ATTEMPTS):
            latest = self._get(pk, LATEST)
            erased = latest.get("erasedVersion", "")
            if erased > version:
                return STALE  # a newer erasure already removed more than this one would
            if erased < version:
                attrs = _consent_attrs(latest)
                remove = [a for a, v in attrs if v.get("version", "") < version]
                # The account link follows the newest kept key that carries one, so the result does
                # not depend on the order deliveries arrived in.
                kept_refs = sorted(
                    (v["version"], v["accountRef"])
                    for a, v in attrs
                    if a not in remove and v.get("accountRef")
                )
                set_values: dict[str, Any] = {"erasedVersion": version}
                if kept_refs:
                    set_values["accountRef"] = kept_refs[-1][1]
                else:
                    remove.append("accountRef")
                if not self._rewrite_latest(pk, latest, set_values, remove):
                    continue  # a delivery changed the item since we read it: read again
            # Also reached on a redo (erasedVersion == version) whose earlier attempt may have
            # stopped before stripping the history.
            self._strip_history(pk, version)
            return APPLIED
        raise ConsentStateConflict("consent state kept changing during an erasure")

    def _finish_history(self, pk: str, webhook_id: str, outcome: str, strip: bool) -> None:
        update = "SET outcome = :o, decidedAt = :t"
        if strip:
            # A delivery older than an erasure keeps no personal payload, even if it arrives later.
            update += " REMOVE " + ", ".join(HISTORY_PAYLOAD)
        try:
            self.client.update_item(
                TableName=self._table,
                Key=_to_ddb({"pk": pk, "sk": DELIVERY_PREFIX + webhook_id}),
                UpdateExpression=update,
                ConditionExpression="outcome = :pending",
                ExpressionAttributeValues=_to_ddb(
                    {":o": outcome, ":t": clock.format_rfc3339(clock.now()), ":pending": PENDING}
                ),
            )
        except ClientError as error:
            # A concurrent attempt of the same delivery recorded it first, or an account erasure
            # deleted the history meanwhile: either way there is nothing left to record.
            if not _is_conditional_failure(error):
                raise

    # ------------------------------------------------------------------ pushes to ConsentHub
    def erased_after(self, email: str, version: str) -> bool:
        """True when an erasure (or account closure) newer than `version` is recorded for the email."""
        return self._get(self.subject_key(email), LATEST).get("erasedVersion", "") > version

    def begin_push(self, request: Any, message_id: str, account_ref: str | None) -> dict[str, Any] | None:
        """Records one attempt of a capture (with its displayed text); returns None to go ahead, or
        the push item when there is nothing to post: already accepted, or rejected for this very
        SQS message (its redeliveries only walk it to the DLQ; a replayed message gets a new try)."""
        pk = self.subject_key(request.email)
        payload = {
            "type": "push",
            "version": request.version,
            "capturedAt": clock.format_rfc3339(request.captured_at),
            "consents": [{"key": c["key"], "granted": c["granted"]} for c in request.consents],
            "displayedText": {c["key"]: c["displayedText"] for c in request.consents},
            "locale": request.locale,
            "formUrl": request.form_url,
            "accountRef": account_ref,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        names = {f"#p{i}": k for i, k in enumerate(payload)}
        values = {f":p{i}": _ser.serialize(v) for i, v in enumerate(payload.values())}
        sets = [f"#p{i} = if_not_exists(#p{i}, :p{i})" for i in range(len(payload))]
        names.update({"#o": "outcome", "#m": "rejectedMessage"})
        values.update(_to_ddb({":pending": PENDING, ":acc": PUSH_ACCEPTED, ":rej": PUSH_REJECTED,
                               ":mid": message_id, ":t": clock.format_rfc3339(clock.now())}))
        values[":one"] = {"N": "1"}
        try:
            self.client.update_item(
                TableName=self._table,
                Key=_to_ddb({"pk": pk, "sk": PUSH_PREFIX + request.push_id}),
                UpdateExpression="SET " + ", ".join([*sets, "#o = :pending", "lastAttemptAt = :t"])
                + " ADD attempts :one",
                ConditionExpression="attribute_not_exists(#o) OR (#o <> :acc AND NOT (#o = :rej AND #m = :mid))",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return None
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            return self._item_that_failed(error, pk, PUSH_PREFIX + request.push_id)

    def finish_push(self, request: Any, outcome: str, message_id: str, status: int | str | None = None) -> None:
        """Records how an attempt ended: `accepted`, `rejected`, `pending` (will retry) or `superseded`."""
        values: dict[str, Any] = {":o": outcome, ":t": clock.format_rfc3339(clock.now()), ":mid": message_id}
        update = "SET outcome = :o, decidedAt = :t"
        if status is not None:
            update += ", lastStatus = :s"
            values[":s"] = str(status)
        if outcome == PUSH_REJECTED:
            update += ", rejectedMessage = :mid"
        else:
            del values[":mid"]
        item = {"pk": self.subject_key(request.email), "sk": PUSH_PREFIX + request.push_id}
        if outcome == PUSH_SUPERSEDED:
            # Nothing personal is kept for a capture an erasure overtook; the id and version stay.
            values[":v"] = request.version
            update += ", #ver = :v"
        self.client.update_item(TableName=self._table, Key=_to_ddb(item), UpdateExpression=update,
                                ExpressionAttributeValues=_to_ddb(values),
                                **({"ExpressionAttributeNames": {"#ver": "version"}} if ":v" in values else {}))

    # ------------------------------------------------------------------ lookup
    def lookup(self, email: str) -> dict[str, dict[str, Any]]:
        """Current state per consent key: granted, occurredAt, locale, requiresOptIn."""
        latest = self._get(self.subject_key(email), LATEST)
        return {
            attr[len(KEY_PREFIX) :]: {
                "granted": bool(value.get("granted")),
                "occurredAt": value.get("occurredAt"),
                "locale": value.get("locale"),
                "requiresOptIn": requires_opt_in(value.get("locale")),
            }
            for attr, value in _consent_attrs(latest)
        }

    def export_account(self, account_ref: str) -> list[dict[str, Any]]:
        """The subject's access export: consent state and delivery history of every subject linked
        to `account_ref` (the email itself is never stored, so it cannot be exported)."""
        out = []
        for pk in sorted({item["pk"] for item in self._query_account(account_ref)}):
            latest = self._get(pk, LATEST)
            out.append({
                "consents": {attr[len(KEY_PREFIX):]: value for attr, value in _consent_attrs(latest)},
                "history": [
                    {k: v for k, v in item.items() if k != "pk"}
                    for item in self._history(
                        pk, "pk, sk, outcome, occurredAt, receivedAt, consents, " + ", ".join(HISTORY_PAYLOAD)
                    )
                ],
                "pushes": [
                    {k: v for k, v in item.items() if k != "pk"}
                    for item in self._history(
                        pk, "pk, sk, outcome, capturedAt, attempts, consents, " + ", ".join(HISTORY_PAYLOAD),
                        PUSH_PREFIX,
                    )
                ],
            })
        return out

    # ------------------------------------------------------------------ account closure
    def erase_account(self, account_ref: str, now: datetime) -> int:
        """Removes the consent data of every subject linked to `account_ref`; returns how many.

        Each subject keeps only a suppression marker (`suppressed`, `erasedVersion`) so that no
        delivery older than the closure can bring data back; its history is deleted.
        """
        subjects = sorted({item["pk"] for item in self._query_account(account_ref)})
        for pk in subjects:
            self._suppress(pk, make_version(now, "account-closed"))
            self._delete_history(pk)
        return len(subjects)

    def _suppress(self, pk: str, closure_version: str) -> None:
        for _ in range(_MAX_ATTEMPTS):
            latest = self._get(pk, LATEST)
            attrs = _consent_attrs(latest)
            # Covers anything removed, even a key dated after the closure, so none of it can return.
            version = max(
                [closure_version, latest.get("erasedVersion", "")] + [v["version"] for _, v in attrs]
            )
            remove = [a for a, _ in attrs] + ["accountRef"]
            if self._rewrite_latest(pk, latest, {"erasedVersion": version, "suppressed": True}, remove):
                return
        raise ConsentStateConflict("consent state kept changing during an account erasure")

    # ------------------------------------------------------------------ helpers
    def _get(self, pk: str, sk: str) -> dict[str, Any]:
        answer = self.client.get_item(
            TableName=self._table, Key=_to_ddb({"pk": pk, "sk": sk}), ConsistentRead=True
        )
        return _from_ddb(answer.get("Item"))

    def _item_that_failed(self, error: ClientError, pk: str, sk: str) -> dict[str, Any]:
        """The item a conditional write found: as returned with the failure (ALL_OLD), else read again."""
        old = error.response.get("Item")
        return _from_ddb(old) if old else self._get(pk, sk)

    def _rewrite_latest(
        self, pk: str, seen: dict[str, Any], set_values: dict[str, Any], remove: list[str]
    ) -> bool:
        """Conditional on `rev` being what we read, so a racing update is never silently erased."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {":one": {"N": "1"}}
        sets = []
        for i, (name, value) in enumerate(set_values.items()):
            names[f"#s{i}"] = name
            values[f":s{i}"] = _ser.serialize(value)
            sets.append(f"#s{i} = :s{i}")
        update = "SET " + ", ".join(sets)
        if remove:
            for i, name in enumerate(remove):
                names[f"#r{i}"] = name
            update += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove)))
        update += " ADD rev :one"
        if "rev" in seen:
            condition = "rev = :rev"
            values[":rev"] = _ser.serialize(seen["rev"])
        elif seen:
            condition = "attribute_exists(pk) AND attribute_not_exists(rev)"
        else:
            condition = "attribute_not_exists(pk)"
        try:
            self.client.update_item(
                TableName=self._table,
                Key=_to_ddb({"pk": pk, "sk": LATEST}),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
            return True
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise

    def _history(self, pk: str, projection: str, prefix: str = DELIVERY_PREFIX) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": _to_ddb({":pk": pk, ":prefix": prefix}),
            "ProjectionExpression": projection,
            "ConsistentRead": True,
        }
        yield from self._query_all(kwargs)

    def _strip_history(self, pk: str, erased_version: str) -> None:
        projection = "pk, sk, version, " + ", ".join(HISTORY_PAYLOAD)
        items = (item for prefix in HISTORY_PREFIXES for item in self._history(pk, projection, prefix))
        for item in items:
            if item.get("version", "") >= erased_version or not any(k in item for k in HISTORY_PAYLOAD):
                continue
            try:
                self.client.update_item(
                    TableName=self._table,
                    Key=_to_ddb({"pk": pk, "sk": item["sk"]}),
                    UpdateExpression="REMOVE " + ", ".join(HISTORY_PAYLOAD),
                    ConditionExpression="attribute_exists(pk)",
                )
            except ClientError as error:
                if not _is_conditional_failure(error):
                    raise

    def _delete_history(self, pk: str) -> None:
        keys = [
            {"pk": pk, "sk": item["sk"]}
            for prefix in HISTORY_PREFIXES
            for item in self._history(pk, "pk, sk", prefix)
        ]
        for start in range(0, len(keys), 25):
            requests = [{"DeleteRequest": {"Key": _to_ddb(k)}} for k in keys[start : start + 25]]
            pending: dict[str, Any] = {self._table: requests}
            for _ in range(_MAX_ATTEMPTS):
                answer = self.client.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
            else:
                raise ConsentStateConflict("history deletion left unprocessed items")

    def _query_account(self, account_ref: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": ACCOUNT_INDEX,
            "KeyConditionExpression": "accountRef = :ref",
            "ExpressionAttributeValues": {":ref": {"S": account_ref}},
        }
        yield from self._query_all(kwargs)

    def _query_all(self, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a query, page after page, as plain values."""
        while True:
            page = self.client.query(**kwargs)
            for item in page.get("Items", []):
                yield _from_ddb(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _consent_attrs(latest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(k, v) for k, v in latest.items() if k.startswith(KEY_PREFIX) and isinstance(v, dict)]
