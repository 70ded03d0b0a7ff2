"""The erasure engine, audit records and message parsing against in-memory fakes (no moto, no boto3)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest

from gdpr_core import clock
from gdpr_core.erasure import audit, pdmap
from gdpr_core.erasure.engine import (
    ErasureEngine,
    ErasureError,
    InvalidMessage,
    VerificationFailed,
    execute_action,
    from_item,
    parse_action_message,
    to_item,
)
from gdpr_core.pseudonym import Pseudonymizer

NOW = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
ACCOUNT = "5be24ba3f91c106033269289"
OTHER = ACCOUNT + "x"  # shares ACCOUNT as a prefix: must never be touched
PZ = Pseudonymizer("unit-test-pseudonym-key")
RESOURCES = {
    "profile-cache": "profiles",
    "comments": "comments",
    "avatars": "avatars",
    "registry": "accounts",
}
TABLE_KEYS = {
    "profiles": ("accountId",),
    "comments": ("commentId",),
    "accounts": ("accountId",),
    "events": ("eventId",),
}
INDEXES = {("comments", "author-index"): "authorAccountId", ("events", "by-account"): "accountId"}


class ClientError(Exception):
    def __init__(self, code: str):
        super().__init__(code)
        self.response = {"Error": {"Code": code}}


class FakeDynamoDB:
    """The low-level client calls the engine makes, over dicts of attribute-value items."""

    def __init__(self, page_size: int = 1000):
        self.tables: dict[str, dict[str, dict]] = {t: {} for t in TABLE_KEYS}
        self.calls: list[tuple[str, dict]] = []
        self.page_size = page_size
        self.unprocessed_rounds = 0  # how many BatchWriteItem answers leave half unprocessed
        self.unprocessed_get_rounds = 0  # how many BatchGetItem answers leave half unprocessed
        self.ignore_deletes_in: set[str] = set()

    def _key(self, table: str, key: dict) -> str:
        return json.dumps([key[k] for k in TABLE_KEYS[table]])

    def put(self, table: str, doc: dict) -> None:
        item = to_item(doc)
        self.tables[table][self._key(table, item)] = item

    def query(self, **p):
        self.calls.append(("query", p))
        table, names, values = p["TableName"], p["ExpressionAttributeNames"], p["ExpressionAttributeValues"]
        attr = names["#a"]
        if "IndexName" in p:
            assert INDEXES[(table, p["IndexName"])] == attr
        items = sorted((k, i) for k, i in self.tables[table].items() if i.get(attr) == values[":id"])
        start = 0
        if "ExclusiveStartKey" in p:
            start = (
                next(n for n, (k, _) in enumerate(items) if k == self._key(table, p["ExclusiveStartKey"])) + 1
            )
        limit = min(p.get("Limit", self.page_size), self.page_size)
        page = items[start : start + limit]
        if "ProjectionExpression" in p:
            wanted = {names[n.strip()] for n in p["ProjectionExpression"].split(",")}
            out = [{a: v for a, v in i.items() if a in wanted} for _, i in page]
        else:
            out = [copy.deepcopy(i) for _, i in page]
        answer = {"Items": out}
        if start + limit < len(items):
            answer["LastEvaluatedKey"] = {k: page[-1][1][k] for k in TABLE_KEYS[table]}
        return answer

    def batch_write_item(self, RequestItems):
        self.calls.append(("batch_write_item", RequestItems))
        unprocessed = {}
        for table, requests in RequestItems.items():
            assert len(requests) <= 25
            if self.unprocessed_rounds:
                requests, unprocessed[table] = requests[: len(requests) // 2], requests[len(requests) // 2 :]
            for request in requests:
                if table not in self.ignore_deletes_in:
                    self.tables[table].pop(self._key(table, request["DeleteRequest"]["Key"]), None)
        self.unprocessed_rounds = max(0, self.unprocessed_rounds - 1)
        return {"UnprocessedItems": unprocessed}

    def update_item(self, **p):
        self.calls.append(("update_item", p))
        table, names = p["TableName"], p["ExpressionAttributeNames"]
        item = self.tables[table].get(self._key(table, p["Key"]))
        if item is None:
            raise ClientError("ConditionalCheckFailedException")
        expression = p["UpdateExpression"]
        set_part, _, remove_part = expression.partition("REMOVE")
        for clause in filter(None, (c.strip() for c in set_part.replace("SET", "").split(","))):
            name, value = (x.strip() for x in clause.split("="))
            item[names[name]] = p["ExpressionAttributeValues"][value]
        for name in filter(None, (c.strip() for c in remove_part.split(","))):
            item.pop(names[name], None)
        return {}

    def batch_get_item(self, RequestItems):
        self.calls.append(("batch_get_item", RequestItems))
        responses, unprocessed = {}, {}
        for table, request in RequestItems.items():
            assert len(request["Keys"]) <= 100 and request.get("ConsistentRead") is True
            keys = request["Keys"]
            if self.unprocessed_get_rounds:  # DynamoDB may answer part and hand the rest back
                keys, left = keys[: len(keys) // 2], keys[len(keys) // 2 :]
                unprocessed[table] = {"Keys": left, "ConsistentRead": True}
            found = [self.tables[table].get(self._key(table, k)) for k in keys]
            responses[table] = [copy.deepcopy(i) for i in reversed(found) if i]  # any order, as DynamoDB
        self.unprocessed_get_rounds = max(0, self.unprocessed_get_rounds - 1)
        return {"Responses": responses, "UnprocessedKeys": unprocessed}

    def get_item(self, TableName, Key, **p):
        self.calls.append(("get_item", {"TableName": TableName}))
        item = self.tables[TableName].get(self._key(TableName, Key))
        return {"Item": copy.deepcopy(item)} if item else {}

    def delete_item(self, TableName, Key, **p):
        self.calls.append(("delete_item", {"TableName": TableName}))
        old = self.tables[TableName].pop(self._key(TableName, Key), None)
        return {"Attributes": old} if old else {}

    def transact_write_items(self, TransactItems):
        self.calls.append(("transact_write_items", TransactItems))
        for entry in TransactItems:
            if "Delete" in entry:
                self.tables[entry["Delete"]["TableName"]].pop(
                    self._key(entry["Delete"]["TableName"], entry["Delete"]["Key"]), None
                )
            else:
                update = entry["Update"]
                table = update["TableName"]
                current = self.tables[table].setdefault(self._key(table, update["Key"]), dict(update["Key"]))
                values = update["ExpressionAttributeValues"]
                current["status"] = values[":erased"]
                current.setdefault("erasedAt", values[":now"])

    def put_item(self, TableName, Item, ConditionExpression=None):
        self.calls.append(("put_item", {"TableName": TableName}))
        table = self.tables.setdefault(TableName, {})
        if Item["recordId"]["S"] in table:
            raise ClientError("ConditionalCheckFailedException")
        table[Item["recordId"]["S"]] = Item


class FakeS3:
    def __init__(self, page_size: int = 1000):
        self.versions: list[dict] = []  # {"Key", "VersionId", "marker"}
        self.calls: list[tuple[str, dict]] = []
        self.page_size = page_size
        self._n = 0

    def put(self, key: str, marker: bool = False) -> None:
        self._n += 1
        self.versions.append({"Key": key, "VersionId": f"v{self._n:06d}", "marker": marker})

    def list_object_versions(self, Bucket, Prefix, KeyMarker=None, VersionIdMarker=None):
        self.calls.append(("list_object_versions", {}))
        matching = sorted(
            (v for v in self.versions if v["Key"].startswith(Prefix)),
            key=lambda v: (v["Key"], v["VersionId"]),
        )
        if KeyMarker:
            matching = [v for v in matching if (v["Key"], v["VersionId"]) > (KeyMarker, VersionIdMarker)]
        page, more = matching[: self.page_size], len(matching) > self.page_size
        answer = {
            "Versions": [
                {
                    "Key": v["Key"],
                    "VersionId": v["VersionId"],
                    "Size": 3,
                    "ETag": '"e"',
                    "IsLatest": False,
                    "LastModified": NOW,
                }
                for v in page
                if not v["marker"]
            ],
            "DeleteMarkers": [
                {"Key": v["Key"], "VersionId": v["VersionId"], "IsLatest": True, "LastModified": NOW}
                for v in page
                if v["marker"]
            ],
            "IsTruncated": more,
        }
        if more:
            answer["NextKeyMarker"], answer["NextVersionIdMarker"] = page[-1]["Key"], page[-1]["VersionId"]
        return answer

    def delete_objects(self, Bucket, Delete):
        self.calls.append(("delete_objects", Delete))
        assert len(Delete["Objects"]) <= 1000
        gone = {(o["Key"], o["VersionId"]) for o in Delete["Objects"]}
        self.versions = [v for v in self.versions if (v["Key"], v["VersionId"]) not in gone]
        return {}

    def head_object(self, Bucket, Key):
        return {"ContentType": "image/png", "Metadata": {"source": "atlassian"}}


def k(value: str) -> str:
    """The fake's internal key of an item whose table key is one string."""
    return json.dumps([{"S": value}])


def calls(fake, name: str, table: str | None = None) -> list:
    return [p for n, p in fake.calls if n == name and (table is None or p.get("TableName") == table)]


@pytest.fixture
def world():
    ddb, s3 = FakeDynamoDB(), FakeS3()
    for account, name in ((ACCOUNT, "Ada Lovelace"), (OTHER, "Grace Hopper")):
        ddb.put(
            "profiles",
            {
                "accountId": account,
                "displayName": name,
                "email": f"{account}@example.com",
                "avatarUrl": "https://a/x.png",
                "sites": {"s1", "s2"},
                "fetchedAt": "2025-01-01",
            },
        )
        ddb.put(
            "accounts",
            {
                "accountId": account,
                "sites": {"s1"},
                "updatedAt": "2025-01-01T00:00:00.000Z",
                "status": "erasing",
            },
        )
        for n in range(3):
            ddb.put(
                "comments",
                {
                    "commentId": f"{account}-{n}",
                    "authorAccountId": account,
                    "authorName": name,
                    "body": f"comment {n}",
                    "site": "s1",
                    "createdAt": "2025-01-02",
                },
            )
        s3.put(f"avatars/{account}/a.png")
        s3.put(f"avatars/{account}/a.png")
        s3.put(f"avatars/{account}/a.png", marker=True)
    return ddb, s3


def make_engine(ddb, s3, hooks=None, personal_data_map=None, **kw):
    hooks = {"consent.erase_account": lambda account_id, now: 1} if hooks is None else hooks
    return ErasureEngine(
        personal_data_map or pdmap.load(),
        RESOURCES,
        dynamodb=ddb,
        s3=s3,
        hooks=hooks,
        sleep=kw.pop("sleep", lambda s: None),
        **kw,
    )


# ------------------------------------------------------------------ closed
def test_closed_erases_every_store_and_reports_counts(world):
    ddb, s3 = world
    seen = []
    engine = make_engine(ddb, s3, hooks={"consent.erase_account": lambda a, now: seen.append((a, now)) or 2})
    results = {r.store: r.as_dict() for r in engine.apply(ACCOUNT, "closed", NOW)}
    assert results == {
        "profile-cache": {"store": "profile-cache", "found": 1, "deleted": 1, "scrubbed": 0, "remaining": 0},
        "comments": {"store": "comments", "found": 3, "deleted": 0, "scrubbed": 3, "remaining": 0},
        "avatars": {"store": "avatars", "found": 3, "deleted": 3, "scrubbed": 0, "remaining": 0},
        "consent": {"store": "consent", "found": 2, "deleted": 2, "scrubbed": 0, "remaining": 0},
        "registry": {"store": "registry", "found": 1, "deleted": 1, "scrubbed": 0, "remaining": 0},
    }
    assert seen == [(ACCOUNT, NOW)]
    assert k(ACCOUNT) not in ddb.tables["profiles"]
    comments = [from_item(i) for i in ddb.tables["comments"].values()]
    mine = [c for c in comments if c["commentId"].startswith(ACCOUNT + "-")]
    assert len(mine) == 3 and all(
        c["authorName"] == "Former user" and "authorAccountId" not in c and c["body"].startswith("comment")
        for c in mine
    )
    # The neighbour whose id starts with ACCOUNT keeps everything.
    assert sum(c.get("authorAccountId") == OTHER for c in comments) == 3
    assert k(OTHER) in ddb.tables["profiles"]
    assert [v["Key"] for v in s3.versions] == [f"avatars/{OTHER}/a.png"] * 3
    # The registry row is only counted here; `tombstone` removes it after the audit record.
    assert k(ACCOUNT) in ddb.tables["accounts"]


def test_zero_found_is_recorded_for_every_store():
    ddb, s3 = FakeDynamoDB(), FakeS3()
    results = make_engine(ddb, s3, hooks={"consent.erase_account": lambda a, n: 0}).apply(
        ACCOUNT, "closed", NOW
    )
    assert [r.store for r in results] == ["profile-cache", "comments", "avatars", "consent", "registry"]
    assert all(r.found == r.deleted == r.scrubbed == r.remaining == 0 for r in results)


def test_tombstone_deletes_registry_and_keeps_first_erased_at(world):
    ddb, s3 = world
    engine = make_engine(ddb, s3)
    subject = PZ.account(ACCOUNT)
    engine.tombstone(ACCOUNT, subject, NOW)
    engine.tombstone(ACCOUNT, subject, NOW.replace(year=2026))  # a retry
    assert k(ACCOUNT) not in ddb.tables["accounts"]
    stone = from_item(ddb.tables["accounts"][k("tombstone#" + subject)])
    assert stone == {
        "accountId": "tombstone#" + subject,
        "status": "erased",
        "erasedAt": "2025-03-04T05:06:07.890Z",
    }
    assert len(calls(ddb, "transact_write_items")) == 2
    assert len(calls(ddb, "transact_write_items")[0]) == 2  # delete + tombstone in ONE transaction


def test_unwired_hook_fails_closed(world):
    ddb, s3 = world
    with pytest.raises(ErasureError, match="store 'consent': hook 'consent.erase_account' is not wired"):
        make_engine(ddb, s3, hooks={}).apply(ACCOUNT, "closed", NOW)


# ------------------------------------------------------------------ batching and retries
BULK_MAP = {
    "schema": 1,
    "stores": [
        {
            "name": "events",
            "kind": "dynamodb",
            "resourceEnv": "EVENTS",
            "key": "eventId",
            "index": "by-account",
            "indexKey": "accountId",
            "personalAttributes": ["accountId"],
            "closed": {"action": "deleteItems"},
            "updated": {"action": "none"},
        },
        {
            "name": "avatars",
            "kind": "s3",
            "resourceEnv": "AVATARS",
            "prefixTemplate": "avatars/{accountId}/",
            "versions": True,
            "personalAttributes": ["objectKey"],
            "closed": {"action": "deleteObjects"},
            "updated": {"action": "none"},
        },
        {
            "name": "registry",
            "kind": "registry",
            "resourceEnv": "R",
            "key": "accountId",
            "personalAttributes": ["accountId"],
            "closed": {"action": "tombstone"},
            "updated": {"action": "deleteItems"},
        },
    ],
}


def bulk_engine(ddb, s3, **kw):
    return ErasureEngine(
        pdmap.parse(BULK_MAP),
        {"events": "events", "avatars": "avatars", "registry": "accounts"},
        dynamodb=ddb,
        s3=s3,
        **{"sleep": lambda s: None, **kw},
    )


def test_2500_items_are_paged_and_deleted_25_per_batch_and_2500_versions_1000_per_call():
    ddb, s3 = FakeDynamoDB(page_size=100), FakeS3(page_size=1000)
    for n in range(2500):
        ddb.put("events", {"eventId": f"e{n:05d}", "accountId": ACCOUNT})
        s3.put(f"avatars/{ACCOUNT}/{n:05d}.png", marker=n % 10 == 0)
    ddb.put("events", {"eventId": "other", "accountId": OTHER})
    results = {r.store: r for r in bulk_engine(ddb, s3).apply(ACCOUNT, "closed", NOW)}
    assert (results["events"].found, results["events"].deleted, results["events"].remaining) == (
        2500,
        2500,
        0,
    )
    writes = calls(ddb, "batch_write_item")
    assert len(writes) == 100 and all(len(w["events"]) == 25 for w in writes)
    # Find: one query per page (25 pages of 100); verification reads once more (1 page, empty).
    assert len(calls(ddb, "query", "events")) == 25 + 1
    assert (results["avatars"].found, results["avatars"].deleted) == (2500, 2500)
    deletes = calls(s3, "delete_objects")
    assert [len(d["Objects"]) for d in deletes] == [1000, 1000, 500]
    assert all("VersionId" in o for d in deletes for o in d["Objects"])
    assert list(ddb.tables["events"]) == [k("other")]


def test_unprocessed_items_are_retried_with_backoff():
    ddb, s3 = FakeDynamoDB(), FakeS3()
    for n in range(30):
        ddb.put("events", {"eventId": f"e{n:02d}", "accountId": ACCOUNT})
    ddb.unprocessed_rounds = 3
    sleeps: list[float] = []
    results = bulk_engine(ddb, s3, sleep=sleeps.append).apply(ACCOUNT, "closed", NOW)
    assert results[0].deleted == 30 and results[0].remaining == 0
    assert len(sleeps) == 3 and all(0 <= s <= 5 for s in sleeps)
    assert not ddb.tables["events"]


def test_unprocessed_forever_raises_without_personal_data():
    ddb, s3 = FakeDynamoDB(), FakeS3()
    ddb.put("events", {"eventId": "e1", "accountId": ACCOUNT})
    ddb.put("events", {"eventId": "e2", "accountId": ACCOUNT})
    ddb.unprocessed_rounds = 10**6
    with pytest.raises(ErasureError) as info:
        bulk_engine(ddb, s3, max_attempts=4).apply(ACCOUNT, "closed", NOW)
    assert "store 'events'" in str(info.value) and "after 4 attempts" in str(info.value)
    assert ACCOUNT not in str(info.value)


def test_store_that_keeps_its_data_fails_verification(world):
    ddb, s3 = world
    ddb.ignore_deletes_in.add("profiles")
    hook_calls = []
    engine = make_engine(ddb, s3, hooks={"consent.erase_account": lambda a, n: hook_calls.append(a) or 0})
    with pytest.raises(VerificationFailed) as info:
        engine.apply(ACCOUNT, "closed", NOW)
    assert "profile-cache: 1 remaining" in str(info.value)
    assert ACCOUNT not in str(info.value)
    assert {r.store: r.remaining for r in info.value.results}["profile-cache"] == 1
    assert hook_calls == []  # consent is only erased once the data stores verified clean


def test_scrubbed_item_deleted_meanwhile_is_not_an_error(world):
    ddb, s3 = world
    original = ddb.update_item

    def racing_update(**p):
        ddb.tables[p["TableName"]].pop(ddb._key(p["TableName"], p["Key"]), None)  # the app deletes it first
        return original(**p)

    ddb.update_item = racing_update
    results = {r.store: r for r in make_engine(ddb, s3).apply(ACCOUNT, "closed", NOW)}
    assert (results["comments"].found, results["comments"].scrubbed, results["comments"].remaining) == (
        3,
        0,
        0,
    )


# ------------------------------------------------------------------ updated
def test_updated_deletes_stale_copies_and_keeps_reporting_an_account_whose_comments_stay(world):
    ddb, s3 = world
    ddb.tables["accounts"][k(ACCOUNT)]["status"] = {"S": "active"}
    hook_calls = []
    engine = make_engine(ddb, s3, hooks={"consent.erase_account": lambda a, n: hook_calls.append(a) or 0})
    results = {r.store: r for r in engine.apply(ACCOUNT, "updated", NOW)}
    assert set(results) == {"profile-cache", "avatars", "registry"}  # `none` stores are left out
    assert k(ACCOUNT) not in ddb.tables["profiles"]
    # The comments (`updated: none`) still hold the person's id and name, so the account stays registered
    # and reported (a later `closed` must reach them), as of the time the update was handled.
    assert sum(from_item(i).get("authorAccountId") == ACCOUNT for i in ddb.tables["comments"].values()) == 3
    assert (results["registry"].found, results["registry"].deleted, results["registry"].remaining) == (1, 0, 0)
    assert from_item(ddb.tables["accounts"][k(ACCOUNT)])["updatedAt"] == clock.format_rfc3339(NOW)
    assert hook_calls == []
    assert not calls(ddb, "transact_write_items")


def test_updated_drops_the_registration_when_nothing_of_the_account_is_left(world):
    ddb, s3 = world
    for key in [key for key, item in ddb.tables["comments"].items() if from_item(item)["authorAccountId"] == ACCOUNT]:
        del ddb.tables["comments"][key]
    results = {r.store: r for r in make_engine(ddb, s3).apply(ACCOUNT, "updated", NOW)}
    assert results["registry"].deleted == 1 and results["registry"].remaining == 0
    assert k(ACCOUNT) not in ddb.tables["accounts"] and k(OTHER) in ddb.tables["accounts"]


# ------------------------------------------------------------------ export
def test_export_lists_every_personal_attribute(world):
    ddb, s3 = world
    engine = make_engine(ddb, s3, hooks={"consent.export_account": lambda a: [{"c_news": {"granted": True}}]})
    out = engine.export(ACCOUNT)
    assert out["profile-cache"] == [
        {
            "accountId": ACCOUNT,
            "displayName": "Ada Lovelace",
            "email": f"{ACCOUNT}@example.com",
            "avatarUrl": "https://a/x.png",
            "sites": ["s1", "s2"],
            "fetchedAt": "2025-01-01",
        }
    ]
    assert sorted(c["commentId"] for c in out["comments"]) == [f"{ACCOUNT}-{n}" for n in range(3)]
    assert all(set(c) == {"commentId", "authorAccountId", "authorName"} for c in out["comments"])
    assert len(out["avatars"]) == 3 and {a["key"] for a in out["avatars"]} == {f"avatars/{ACCOUNT}/a.png"}
    assert [a["deleteMarker"] for a in out["avatars"]].count(True) == 1
    assert out["registry"][0]["accountId"] == ACCOUNT
    assert out["consent"] == [{"c_news": {"granted": True}}]
    json.dumps(out)  # JSON-ready
    assert "consent" not in make_engine(ddb, s3, hooks={}).export(ACCOUNT)  # no export hook wired


def _many_comments(ddb, n: int) -> list[str]:
    ids = [f"{ACCOUNT}-many-{i:04d}" for i in range(n)]
    for i, comment_id in enumerate(ids):
        ddb.put("comments", {"commentId": comment_id, "authorAccountId": ACCOUNT, "authorName": "Ada Lovelace",
                             "body": f"many {i}", "site": "s1", "createdAt": "2025-01-02"})
    return ids


def _batch_gets(ddb, table: str) -> list[int]:
    return [len(r[table]["Keys"]) for r in calls(ddb, "batch_get_item") if table in r]


def test_index_hits_are_read_back_100_per_batch_not_one_call_each(world):
    ddb, s3 = world
    ids = _many_comments(ddb, 247) + [f"{ACCOUNT}-{n}" for n in range(3)]
    out = make_engine(ddb, s3).export(ACCOUNT)
    assert sorted(c["commentId"] for c in out["comments"]) == sorted(ids)
    assert all(c["authorName"] == "Ada Lovelace" for c in out["comments"])  # read from the table itself
    assert _batch_gets(ddb, "comments") == [100, 100, 50]
    assert calls(ddb, "get_item", "comments") == []


def test_verification_reads_index_hits_in_batches_and_counts_what_is_left(world):
    ddb, s3 = world
    _many_comments(ddb, 147)
    original = ddb.update_item

    def app_ignores_scrubs(**p):  # the store keeps the data (a bug in the app, a stale replica)
        if p["TableName"] != "comments":
            return original(**p)
        ddb.calls.append(("update_item", p))
        return {}

    ddb.update_item = app_ignores_scrubs
    with pytest.raises(VerificationFailed) as info:
        make_engine(ddb, s3).apply(ACCOUNT, "closed", NOW)
    assert {r.store: r.remaining for r in info.value.results}["comments"] == 150
    assert _batch_gets(ddb, "comments") == [100, 50]  # the verification's reads
    assert ACCOUNT not in str(info.value)


def test_unprocessed_reads_are_retried_and_every_item_is_read_once():
    ddb, s3 = FakeDynamoDB(), FakeS3()
    _many_comments(ddb, 40)
    ddb.unprocessed_get_rounds = 2
    sleeps: list[float] = []
    out = make_engine(ddb, s3, sleep=sleeps.append).export(ACCOUNT)
    assert len(out["comments"]) == 40 and len({c["commentId"] for c in out["comments"]}) == 40
    assert _batch_gets(ddb, "comments") == [40, 20, 10] and len(sleeps) == 2


def test_reads_unprocessed_forever_raise_without_personal_data():
    ddb, s3 = FakeDynamoDB(), FakeS3()
    _many_comments(ddb, 5)
    ddb.unprocessed_get_rounds = 10**6
    with pytest.raises(ErasureError) as info:
        make_engine(ddb, s3, max_attempts=3).export(ACCOUNT)
    assert "store 'comments': 1 reads unprocessed after 3 attempts" in str(info.value)
    assert ACCOUNT not in str(info.value)


# ------------------------------------------------------------------ messages
def test_parse_action_message():
    erase = parse_action_message(
        json.dumps(
            {
                "schema": 1,
                "action": "erase",
                "reason": "closed",
                "accountId": ACCOUNT,
                "reportedAt": "2025-03-01T00:00:00Z",
                "cycle": 3,
            }
        )
    )
    assert (erase.action, erase.reason, erase.cycle, erase.reported_at) == (
        "erase",
        "closed",
        3,
        "2025-03-01T00:00:00.000Z",
    )
    assert erase.idempotency_data("s") == {"subject": "s", "action": "erase"}
    refresh = parse_action_message(
        json.dumps({"schema": 1, "action": "refresh", "accountId": ACCOUNT, "cycle": 4})
    )
    assert refresh.idempotency_data("s") == {"subject": "s", "action": "refresh", "cycle": 4}


@pytest.mark.parametrize(
    "body",
    [
        "Hello from SQS!",
        "[]",
        json.dumps({"schema": 2, "action": "erase", "accountId": ACCOUNT}),
        json.dumps({"schema": True, "action": "erase", "accountId": ACCOUNT}),
        json.dumps({"schema": 1, "action": "delete", "accountId": ACCOUNT}),
        json.dumps({"schema": 1, "action": "erase", "reason": "updated", "accountId": ACCOUNT}),
        json.dumps({"schema": 1, "action": "erase", "accountId": "unknown"}),
        json.dumps({"schema": 1, "action": "erase", "accountId": "bad id with spaces <x@example.com>"}),
        json.dumps({"schema": 1, "action": "refresh", "accountId": ACCOUNT}),
        json.dumps({"schema": 1, "action": "erase", "accountId": ACCOUNT, "reportedAt": "yesterday"}),
        json.dumps({"schema": 1, "action": "erase", "accountId": ACCOUNT, "cycle": -1}),
    ],
)
def test_malformed_messages_are_rejected_without_echo(body):
    with pytest.raises(InvalidMessage) as info:
        parse_action_message(body)
    assert "example.com" not in str(info.value) and ACCOUNT not in str(info.value)


# ------------------------------------------------------------------ audit and the whole action
def test_audit_record_has_only_allowed_attributes_and_no_personal_data(world):
    ddb, s3 = world
    results = make_engine(ddb, s3).apply(ACCOUNT, "closed", NOW)
    subject = PZ.account(ACCOUNT)
    record = audit.build_record(
        action="erase",
        subject=subject,
        cycle=3,
        reported_at="2025-03-01T00:00:00.000Z",
        results=results,
        started_at=NOW,
        finished_at=NOW,
    )
    assert set(record) == set(audit.AUDIT_ATTRIBUTES)
    assert record["recordId"] == f"erase#{subject}" and record["day"] == "2025-03-04"
    assert record["verified"] is True and record["stores"]["comments"]["scrubbed"] == 3
    text = json.dumps(record)
    for secret in (ACCOUNT, "Ada", "Lovelace", "example.com"):
        assert secret not in text
    assert audit.record_id("refresh", subject, 7) == f"refresh#{subject}#7"
    with pytest.raises(ValueError):
        audit.record_id("erase", ACCOUNT)  # a raw id is never a subject


def test_execute_action_audits_once_and_tombstones(world):
    ddb, s3 = world
    writer = audit.AuditWriter("audit", ddb)
    message = parse_action_message(
        json.dumps({"schema": 1, "action": "erase", "accountId": ACCOUNT, "cycle": 1})
    )
    subject = PZ.account(ACCOUNT)
    first = execute_action(
        message, engine=make_engine(ddb, s3), audit=writer, subject=subject, now=lambda: NOW
    )
    again = execute_action(
        message, engine=make_engine(ddb, s3), audit=writer, subject=subject, now=lambda: NOW
    )
    assert first["recorded"] is True and again["recorded"] is False
    assert list(ddb.tables["audit"]) == [f"erase#{subject}"]
    assert again["stores"]["profile-cache"]["found"] == 0
    assert k("tombstone#" + subject) in ddb.tables["accounts"]
    assert k(ACCOUNT) not in ddb.tables["accounts"]
