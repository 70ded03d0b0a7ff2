"""The erasure function end to end on moto: the stores and tables come from the templates themselves,
the handler runs with the environment CloudFormation would give it, and events use AWS's SQS shape."""

from __future__ import annotations

import copy
import io
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from gdpr_core.adapters import aws
from gdpr_core.consent.model import Consent, ConsentEvent
from gdpr_core.consent.store import ConsentStore
from gdpr_core.erasure.audit import AUDIT_ATTRIBUTES
from gdpr_core.pseudonym import Pseudonymizer
from tests.support import aws_events, moto_world, stacks

REGION = "us-east-1"
REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "functions" / "erasure" / "app.py"
AWS_SAMPLE = aws_events.path("sqs-receive-message.json")
SQS_SAMPLE = json.loads(
    AWS_SAMPLE.read_text()
)
PSEUDONYM_KEY = "integration-test-pseudonym-key-0123456789"
ACCOUNT = "5be24ba3f91c106033269289"  # Atlassian's published closed test account
NEIGHBOUR = ACCOUNT + "-2"  # shares the id as a prefix: must be left alone
NAME, EMAIL = "Ada Lovelace", "ada.lovelace@example.com"
NOW = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)


@dataclass
class World:
    ddb: Any
    s3: Any
    env: dict[str, str]
    app: Any
    logs: io.StringIO

    def invoke(self, *bodies: str) -> dict:
        records = []
        for body in bodies:
            record = copy.deepcopy(SQS_SAMPLE["Records"][0])
            record["body"] = body
            if len(bodies) > 1:  # partial failures are reported by message id: keep them distinct
                record["messageId"] = str(uuid.uuid4())
            records.append(record)
        return self.app.lambda_handler({"Records": records}, LambdaContext())

    def scan(self, table_env: str) -> list[dict]:
        return [
            i
            for p in self.ddb.get_paginator("scan").paginate(TableName=self.env[table_env])
            for i in p["Items"]
        ]


class LambdaContext(moto_world.LambdaContext):
    function_name = "gdpr-erasure"
    region = REGION
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    remaining_ms = 120_000


def message(action: str = "erase", account_id: str = ACCOUNT, **extra) -> str:
    doc = {
        "schema": 1,
        "action": action,
        "reason": "closed" if action == "erase" else "updated",
        "accountId": account_id,
        "reportedAt": "2026-12-01T10:00:00.000Z",
        "cycle": 3,
        **extra,
    }
    return json.dumps(doc)


@pytest.fixture
def world(monkeypatch):
    moto_world.fake_aws_env(monkeypatch, REGION)
    with moto_world.mocked_aws():
        ddb, s3 = boto3.client("dynamodb", region_name=REGION), boto3.client("s3", region_name=REGION)
        stacks.create_sample_app(ddb, s3)
        tables = stacks.create_service_tables(ddb)
        secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="pseudonym-key", SecretString=PSEUDONYM_KEY
        )["ARN"]
        env = stacks.function_environment("ErasureFunction", tables)
        env.update(
            PSEUDONYM_KEY_SECRET_ARN=secret,
            POWERTOOLS_TRACE_DISABLED="true",
            POWERTOOLS_LOG_LEVEL="DEBUG",
            AWS_LAMBDA_FUNCTION_NAME="gdpr-erasure",
        )
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with moto_world.manual_clock(NOW):
            # Loaded like the sandbox runtime does: by path, under the function's environment.
            app = moto_world.load_handler(HANDLER)
            with moto_world.redirect_logs(app.logger, io.StringIO()) as logs:
                yield World(ddb, s3, env, app, logs)


def seed_account(w: World, account_id: str, name: str, email: str, comments: int = 3) -> None:
    w.ddb.put_item(
        TableName=w.env["PROFILE_CACHE_TABLE"],
        Item={
            "accountId": {"S": account_id},
            "displayName": {"S": name},
            "email": {"S": email},
            "avatarUrl": {"S": f"https://avatar.example.com/{account_id}.png"},
            "sites": {"SS": ["site-a", "site-b"]},
            "fetchedAt": {"S": "2026-11-20T00:00:00.000Z"},
        },
    )
    w.ddb.put_item(
        TableName=w.env["REGISTRY_TABLE"],
        Item={
            "accountId": {"S": account_id},
            "sites": {"SS": ["site-a"]},
            "status": {"S": "erasing"},
            "updatedAt": {"S": "2026-11-20T00:00:00.000Z"},
            "registeredAt": {"S": "2026-11-20T00:00:00.000Z"},
        },
    )
    for start in range(0, comments, 25):
        w.ddb.batch_write_item(
            RequestItems={
                w.env["COMMENTS_TABLE"]: [
                    {
                        "PutRequest": {
                            "Item": {
                                "commentId": {"S": f"{account_id}#{n:05d}"},
                                "authorAccountId": {"S": account_id},
                                "authorName": {"S": name},
                                "body": {"S": f"comment number {n}"},
                                "site": {"S": "site-a"},
                                "createdAt": {"S": "2026-11-21T00:00:00.000Z"},
                            }
                        }
                    }
                    for n in range(start, min(comments, start + 25))
                ]
            }
        )
    bucket = w.env["AVATAR_BUCKET"]
    for version in range(3):
        w.s3.put_object(
            Bucket=bucket,
            Key=f"avatars/{account_id}/current.png",
            Body=b"png%d" % version,
            ContentType="image/png",
            Metadata={"displayname": "x"},
        )
    w.s3.put_object(Bucket=bucket, Key=f"avatars/{account_id}/old.png", Body=b"old")
    w.s3.delete_object(Bucket=bucket, Key=f"avatars/{account_id}/old.png")  # leaves a delete marker


def seed_consent(w: World, account_id: str, email: str) -> ConsentStore:
    store = ConsentStore(w.env["CONSENT_TABLE"], Pseudonymizer(PSEUDONYM_KEY), client=w.ddb)
    store.apply(
        ConsentEvent(
            webhook_id="wh-1",
            type="consent.updated",
            occurred_at=NOW.replace(day=1),
            email=email,
            account_id=account_id,
            locale="DE",
            consents=(Consent(key="generalMarketingOptIn", granted=True),),
        )
    )
    return store


def avatar_versions(w: World, account_id: str) -> int:
    pages = w.s3.get_paginator("list_object_versions").paginate(
        Bucket=w.env["AVATAR_BUCKET"], Prefix=f"avatars/{account_id}/"
    )
    return sum(len(p.get("Versions", [])) + len(p.get("DeleteMarkers", [])) for p in pages)


def comments_of(w: World, account_id: str) -> list[dict]:
    return [i for i in w.scan("COMMENTS_TABLE") if i["commentId"]["S"].startswith(account_id + "#")]


def author_index(w: World, account_id: str) -> int:
    return w.ddb.query(
        TableName=w.env["COMMENTS_TABLE"],
        IndexName="author-index",
        KeyConditionExpression="authorAccountId = :a",
        ExpressionAttributeValues={":a": {"S": account_id}},
    )["Count"]


def get(w: World, table_env: str, key: dict) -> dict | None:
    return w.ddb.get_item(TableName=w.env[table_env], Key=key, ConsistentRead=True).get("Item")


def assert_no_personal_data(text: str, *needles: str) -> None:
    for needle in needles:
        assert needle not in text, "personal data leaked"


# ------------------------------------------------------------------ closed
def test_closed_account_is_erased_everywhere_audited_once_and_tombstoned(world, capsys, caplog):
    caplog.set_level(logging.INFO)
    seed_account(world, ACCOUNT, NAME, EMAIL)
    seed_account(world, NEIGHBOUR, "Grace Hopper", "grace@example.com", comments=2)
    consent = seed_consent(world, ACCOUNT, EMAIL)
    assert consent.lookup(EMAIL)
    subject = Pseudonymizer(PSEUDONYM_KEY).account(ACCOUNT)

    assert world.invoke(message()) == {"batchItemFailures": []}

    assert get(world, "PROFILE_CACHE_TABLE", {"accountId": {"S": ACCOUNT}}) is None
    assert avatar_versions(world, ACCOUNT) == 0
    assert author_index(world, ACCOUNT) == 0
    scrubbed = comments_of(world, ACCOUNT)
    assert len(scrubbed) == 3  # the comments stay, anonymous
    for item in scrubbed:
        assert "authorAccountId" not in item and item["authorName"] == {"S": "Former user"}
        assert item["body"]["S"].startswith("comment number")
    assert consent.lookup(EMAIL) == {}
    assert get(world, "REGISTRY_TABLE", {"accountId": {"S": ACCOUNT}}) is None
    assert get(world, "REGISTRY_TABLE", {"accountId": {"S": "tombstone#" + subject}}) == {
        "accountId": {"S": "tombstone#" + subject},
        "status": {"S": "erased"},
        "erasedAt": {"S": "2026-12-01T10:30:00.000Z"},
    }
    # The neighbour (whose id starts with ACCOUNT) keeps everything.
    assert get(world, "PROFILE_CACHE_TABLE", {"accountId": {"S": NEIGHBOUR}}) is not None
    assert avatar_versions(world, NEIGHBOUR) == 5 and author_index(world, NEIGHBOUR) == 2

    records = world.scan("AUDIT_TABLE")
    assert len(records) == 1
    record = records[0]
    assert record["recordId"] == {"S": f"erase#{subject}"}
    assert record["verified"] == {"BOOL": True}
    assert set(record) == set(AUDIT_ATTRIBUTES)
    stores = {
        name: {k: int(v["N"]) for k, v in counts["M"].items()}
        for name, counts in record["stores"]["M"].items()
    }
    assert stores == {
        "profile-cache": {"found": 1, "deleted": 1, "scrubbed": 0, "remaining": 0},
        "comments": {"found": 3, "deleted": 0, "scrubbed": 3, "remaining": 0},
        "avatars": {"found": 5, "deleted": 5, "scrubbed": 0, "remaining": 0},
        "consent": {"found": 1, "deleted": 1, "scrubbed": 0, "remaining": 0},
        "registry": {"found": 1, "deleted": 1, "scrubbed": 0, "remaining": 0},
    }
    everything_written = json.dumps(records) + json.dumps(world.scan("IDEMPOTENCY_TABLE"))
    everything_logged = world.logs.getvalue() + capsys.readouterr().out + caplog.text
    assert "action done" in everything_logged
    assert_no_personal_data(
        everything_written + everything_logged, ACCOUNT, NAME, "Ada", "Lovelace", EMAIL, "example.com"
    )


def test_same_message_twice_erases_and_audits_once(world):
    seed_account(world, ACCOUNT, NAME, EMAIL)
    assert world.invoke(message(), message()) == {"batchItemFailures": []}  # twice in one batch
    assert world.invoke(message(cycle=4)) == {"batchItemFailures": []}  # and redelivered later, next cycle
    assert len(world.scan("AUDIT_TABLE")) == 1
    assert len(world.scan("IDEMPOTENCY_TABLE")) == 1  # keyed on account + action, not message id


def test_audit_record_already_there_counts_as_done(world):
    seed_account(world, ACCOUNT, NAME, EMAIL)
    assert world.invoke(message()) == {"batchItemFailures": []}
    world.ddb.delete_item(
        TableName=world.env["IDEMPOTENCY_TABLE"], Key={"id": world.scan("IDEMPOTENCY_TABLE")[0]["id"]}
    )  # idempotency expired
    seed_account(world, ACCOUNT, NAME, EMAIL, comments=0)  # the app wrote data again meanwhile
    assert world.invoke(message()) == {"batchItemFailures": []}
    assert len(world.scan("AUDIT_TABLE")) == 1
    assert get(world, "PROFILE_CACHE_TABLE", {"accountId": {"S": ACCOUNT}}) is None


def test_malformed_messages_are_failed_items_never_dropped(world):
    seed_account(world, ACCOUNT, NAME, EMAIL)
    bad_bodies = [
        "Hello from SQS!",
        json.dumps({"schema": 2, "action": "erase", "accountId": ACCOUNT}),
        message(action="obliterate"),
        message(account_id=f"<{EMAIL}>"),
    ]
    for body in bad_bodies:
        event_result = world.invoke(body)
        assert event_result == {
            "batchItemFailures": [{"itemIdentifier": SQS_SAMPLE["Records"][0]["messageId"]}]
        }
    result = world.invoke(message(), "Hello from SQS!")
    assert len(result["batchItemFailures"]) == 1
    assert world.scan("AUDIT_TABLE")[0]["action"] == {"S": "erase"}
    assert_no_personal_data(world.logs.getvalue(), ACCOUNT, EMAIL)


def test_refresh_deletes_stale_copies_keeps_comments_and_audits_per_cycle(world):
    seed_account(world, ACCOUNT, NAME, EMAIL)
    subject = Pseudonymizer(PSEUDONYM_KEY).account(ACCOUNT)
    # An `updated` account is active and in its shard of the cycle (only `closed` ones move to erasing).
    world.ddb.update_item(TableName=world.env["REGISTRY_TABLE"], Key={"accountId": {"S": ACCOUNT}},
                          UpdateExpression="SET #s = :a, reportKey = :k", ExpressionAttributeNames={"#s": "status"},
                          ExpressionAttributeValues={":a": {"S": "active"}, ":k": {"S": "s#017"}})
    before = get(world, "REGISTRY_TABLE", {"accountId": {"S": ACCOUNT}})
    assert world.invoke(message("refresh"), message("refresh")) == {"batchItemFailures": []}
    assert get(world, "PROFILE_CACHE_TABLE", {"accountId": {"S": ACCOUNT}}) is None
    assert avatar_versions(world, ACCOUNT) == 0
    assert author_index(world, ACCOUNT) == 3
    # The comments still name the account: it stays registered (and reported), updatedAt moved forward.
    after = get(world, "REGISTRY_TABLE", {"accountId": {"S": ACCOUNT}})
    assert after is not None and after["status"] == {"S": "active"} and after["reportKey"] == before["reportKey"]
    assert after["updatedAt"]["S"] > before["updatedAt"]["S"]
    assert get(world, "REGISTRY_TABLE", {"accountId": {"S": "tombstone#" + subject}}) is None
    records = world.scan("AUDIT_TABLE")
    assert [r["recordId"]["S"] for r in records] == [f"refresh#{subject}#3"]
    assert set(records[0]["stores"]["M"]) == {"profile-cache", "avatars", "registry"}


# ------------------------------------------------------------------ scale and failure
class CountingHook:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, model, params, **kwargs):
        self.calls.append((model.name, params))

    def count(self, operation: str, table: str | None = None) -> int:
        return sum(
            1
            for name, p in self.calls
            if name == operation and (table is None or p.get("TableName") == table)
        )


def test_2500_comments_are_paged_and_scrubbed(world):
    seed_account(world, ACCOUNT, NAME, EMAIL, comments=2500)
    counter = CountingHook()
    aws.client("dynamodb").meta.events.register("provide-client-params.dynamodb.*", counter)
    assert world.invoke(message()) == {"batchItemFailures": []}
    comments_table = world.env["COMMENTS_TABLE"]
    assert author_index(world, ACCOUNT) == 0
    assert len(comments_of(world, ACCOUNT)) == 2500
    assert counter.count("UpdateItem", comments_table) == 2500  # one scrub per comment
    # One query per page to find (moto pages at 1 MB, so one here), one to verify; never a Scan.
    assert counter.count("Query", comments_table) == 2
    assert counter.count("Scan") == 0
    audit_record = world.scan("AUDIT_TABLE")[0]
    assert audit_record["stores"]["M"]["comments"]["M"]["scrubbed"] == {"N": "2500"}


def test_2500_items_deleted_25_per_batch_write_with_pagination(world):
    """Same count on a deleting store: the engine on moto, with a page size that forces pagination."""
    from gdpr_core.erasure import pdmap
    from gdpr_core.erasure.engine import ErasureEngine

    seed_account(world, ACCOUNT, NAME, EMAIL, comments=2500)
    doc = json.loads(pdmap.DEFAULT_MAP_PATH.read_text())
    for store in doc["stores"]:
        if store["name"] == "comments":
            store["closed"] = {"action": "deleteItems"}
    the_map = pdmap.parse(doc)
    ddb = boto3.client("dynamodb", region_name=REGION)
    counter = CountingHook()
    ddb.meta.events.register("provide-client-params.dynamodb.*", counter)
    engine = ErasureEngine(
        the_map,
        the_map.resolve(world.env),
        dynamodb=ddb,
        s3=boto3.client("s3", region_name=REGION),
        hooks={"consent.erase_account": lambda a, n: 0},
        page_size=200,
    )
    results = {r.store: r for r in engine.apply(ACCOUNT, "closed", NOW)}
    assert (results["comments"].found, results["comments"].deleted, results["comments"].remaining) == (
        2500,
        2500,
        0,
    )
    table = world.env["COMMENTS_TABLE"]
    writes = [p["RequestItems"] for name, p in counter.calls if name == "BatchWriteItem"]
    assert [len(w[table]) for w in writes if table in w] == [25] * 100
    assert all(len(requests) <= 25 for w in writes for requests in w.values())
    # 13 pages of at most 200 to find, one (empty) page to verify.
    assert counter.count("Query", world.env["COMMENTS_TABLE"]) == 13 + 1
    assert comments_of(world, ACCOUNT) == []


class StickyDynamoDB:
    """A client whose deletes on one table silently do nothing: that store keeps returning data."""

    def __init__(self, real: Any, table: str):
        self._real, self._table = real, table

    def batch_write_item(self, RequestItems, **kw):
        kept = {t: r for t, r in RequestItems.items() if t != self._table}
        return self._real.batch_write_item(RequestItems=kept, **kw) if kept else {"UnprocessedItems": {}}

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_store_that_keeps_returning_data_fails_the_item_without_audit(world, monkeypatch, capsys):
    seed_account(world, ACCOUNT, NAME, EMAIL)
    real_client = aws.client
    sticky = StickyDynamoDB(real_client("dynamodb"), world.env["PROFILE_CACHE_TABLE"])
    monkeypatch.setattr(
        world.app.aws, "client", lambda service: sticky if service == "dynamodb" else real_client(service)
    )

    result = world.invoke(message())

    assert result == {"batchItemFailures": [{"itemIdentifier": SQS_SAMPLE["Records"][0]["messageId"]}]}
    assert world.scan("AUDIT_TABLE") == []
    assert get(world, "REGISTRY_TABLE", {"accountId": {"S": ACCOUNT}}) is not None  # not tombstoned
    assert world.scan("IDEMPOTENCY_TABLE") == []  # released, so the redelivery tries again
    logged = world.logs.getvalue() + capsys.readouterr().out
    assert "verification failed (profile-cache: 1 remaining)" in logged
    assert_no_personal_data(logged, ACCOUNT, NAME, EMAIL)

    monkeypatch.setattr(world.app.aws, "client", real_client)  # the store behaves again: the retry succeeds
    assert world.invoke(message()) == {"batchItemFailures": []}
    assert len(world.scan("AUDIT_TABLE")) == 1
