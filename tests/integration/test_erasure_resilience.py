"""The erasure function under the failures the issue names, on moto with the templates' own tables:
DynamoDB throttling in the middle of an account, a crash after half the stores, the same account
delivered to two instances at once, and an account with 10,000 items. Every run ends with the account
gone from every store and exactly one audit record; logs, EMF metrics and audit records hold none of
the test's personal data."""

from __future__ import annotations

import copy
import json
import math
import threading
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gdpr_core.adapters import aws
from gdpr_core.erasure import pdmap
from gdpr_core.pseudonym import Pseudonymizer
from tests.integration import test_erasure_moto as base
from tests.integration.test_erasure_moto import (
    ACCOUNT,
    EMAIL,
    HANDLER,
    NAME,
    PSEUDONYM_KEY,
    SQS_SAMPLE,
    CountingHook,
    LambdaContext,
    World,
    author_index,
    avatar_versions,
    comments_of,
    get,
    message,
    seed_account,
    seed_consent,
)
from tests.support import moto_world

world = base.world  # the same moto world: templates' tables, the handler loaded by path
SUBJECT = Pseudonymizer(PSEUDONYM_KEY).account(ACCOUNT)
PERSONAL = (ACCOUNT, NAME, "Ada", "Lovelace", EMAIL, "example.com")


# ------------------------------------------------------------------ helpers
def _table_of(params: dict[str, Any]) -> str | None:
    if "TableName" in params:
        return params["TableName"]
    if "RequestItems" in params:
        return next(iter(params["RequestItems"]))
    for item in params.get("TransactItems", []):
        return next(iter(item.values()))["TableName"]
    return None


class ThrottledDynamoDB:
    """The real client, except that chosen calls fail with a throttling error, as DynamoDB answers
    once botocore's own retries are used up. `fail` maps (method, table) to the call numbers (1-based)
    that fail; later calls succeed, so a redelivery finds the capacity back."""

    def __init__(self, real: Any, fail: dict[tuple[str, str], set[int]], code: str):
        self._real, self._fail, self._code = real, fail, code
        self.seen: dict[tuple[str, str], int] = {}
        self.raised = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        if not callable(method) or name.startswith("_") or name in ("meta", "exceptions"):
            return method

        def call(**params: Any) -> Any:
            key = (name, _table_of(params) or "")
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] in self._fail.get(key, set()):
                self.raised += 1
                raise ClientError({"Error": {"Code": self._code, "Message": "Rate of requests exceeds the "
                                             "allowed throughput."}}, name)
            return method(**params)

        return call


@pytest.fixture
def clients(world):
    """Service name -> a client the handler gets instead of the real one; undone before the world's
    teardown (which resets the real clients)."""
    real, overrides = aws.client, {}
    world.app.aws.client = lambda service: overrides.get(service) or real(service)
    try:
        yield overrides
    finally:
        world.app.aws.client = real


def metrics_emitted(stdout: str) -> dict[str, float]:
    """Metric name -> summed value over every EMF document Powertools printed."""
    totals: dict[str, float] = {}
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        if "_aws" not in doc:
            continue
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = doc[metric["Name"]]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(value if isinstance(value, list)
                                                                            else [value])
    return totals


def assert_erased_everywhere(w: World, consent) -> None:
    assert get(w, "PROFILE_CACHE_TABLE", {"accountId": {"S": ACCOUNT}}) is None
    assert author_index(w, ACCOUNT) == 0
    assert all("authorAccountId" not in c and c["authorName"] == {"S": "Former user"}
               for c in comments_of(w, ACCOUNT))
    assert avatar_versions(w, ACCOUNT) == 0
    assert consent.lookup(EMAIL) == {}
    assert get(w, "REGISTRY_TABLE", {"accountId": {"S": ACCOUNT}}) is None
    assert get(w, "REGISTRY_TABLE", {"accountId": {"S": "tombstone#" + SUBJECT}})["status"] == {"S": "erased"}


def one_audit_record(w: World) -> dict[str, Any]:
    records = w.scan("AUDIT_TABLE")
    assert [r["recordId"]["S"] for r in records] == [f"erase#{SUBJECT}"]
    assert records[0]["verified"] == {"BOOL": True}
    return records[0]


def failed_item() -> dict:
    return {"batchItemFailures": [{"itemIdentifier": SQS_SAMPLE["Records"][0]["messageId"]}]}


# ------------------------------------------------------------------ throttling mid-account
@pytest.mark.parametrize(
    ("method", "table_env", "calls", "code", "done_before"),
    [
        # after the profile is deleted, on the second of three comment scrubs
        ("update_item", "COMMENTS_TABLE", {2}, "ProvisionedThroughputExceededException", "profile"),
        # the first delete batch of the profile cache, then its retry is throttled too
        ("batch_write_item", "PROFILE_CACHE_TABLE", {1}, "ThrottlingException", "nothing"),
        # every store erased and verified, the audit put throttled
        ("put_item", "AUDIT_TABLE", {1}, "ProvisionedThroughputExceededException", "stores"),
        # audited, then the tombstone transaction throttled
        ("transact_write_items", "REGISTRY_TABLE", {1}, "ThrottlingException", "audit"),
    ],
)
def test_throttling_mid_account_fails_the_message_and_the_retry_completes_once(
    world, clients, capsys, method, table_env, calls, code, done_before
):
    seed_account(world, ACCOUNT, NAME, EMAIL)
    consent = seed_consent(world, ACCOUNT, EMAIL)
    flaky = ThrottledDynamoDB(aws.client("dynamodb"), {(method, world.env[table_env]): calls}, code)
    clients["dynamodb"] = flaky

    assert world.invoke(message()) == failed_item()
    assert flaky.raised == 1
    first_out = capsys.readouterr().out
    assert metrics_emitted(first_out).get("ActionsFailed") == 1
    assert "EraseCompleted" not in metrics_emitted(first_out)
    assert world.scan("IDEMPOTENCY_TABLE") == []  # released: the redelivery runs again
    assert get(world, "REGISTRY_TABLE", {"accountId": {"S": ACCOUNT}}) is not None  # not tombstoned
    assert len(world.scan("AUDIT_TABLE")) == (1 if done_before == "audit" else 0)
    if done_before in ("profile", "stores", "audit"):
        assert get(world, "PROFILE_CACHE_TABLE", {"accountId": {"S": ACCOUNT}}) is None
    if done_before == "nothing":
        assert get(world, "PROFILE_CACHE_TABLE", {"accountId": {"S": ACCOUNT}}) is not None
    logged = world.logs.getvalue()
    assert f'"reason":"{code}"' in logged.replace(" ", "")

    assert world.invoke(message()) == {"batchItemFailures": []}  # SQS redelivers; capacity is back
    assert_erased_everywhere(world, consent)
    record = one_audit_record(world)
    assert all(int(c["M"]["remaining"]["N"]) == 0 for c in record["stores"]["M"].values())
    second_out = capsys.readouterr().out
    assert metrics_emitted(second_out).get("EraseCompleted") == 1
    written = json.dumps(world.scan("AUDIT_TABLE")) + json.dumps(world.scan("IDEMPOTENCY_TABLE"))
    base.assert_no_personal_data(written + world.logs.getvalue() + first_out + second_out, *PERSONAL)


# ------------------------------------------------------------------ a crash after half the stores
class LambdaTimeout(BaseException):
    """The Lambda runtime killing the invocation: nothing in the handler gets to clean up."""


class CrashingS3:
    def __init__(self, real: Any):
        self._real, self.crashes = real, 1

    def delete_objects(self, **params: Any) -> Any:
        if self.crashes:
            self.crashes -= 1
            raise LambdaTimeout()
        return self._real.delete_objects(**params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_crash_after_half_the_stores_then_the_retry_completes_with_one_audit_record(world, clients, capsys):
    seed_account(world, ACCOUNT, NAME, EMAIL)
    consent = seed_consent(world, ACCOUNT, EMAIL)
    clients["s3"] = CrashingS3(aws.client("s3"))

    with pytest.raises(LambdaTimeout):  # the invocation dies: no batch response at all
        world.invoke(message())
    # Half done: the DynamoDB stores are erased, the avatars, consent and registry are not.
    assert get(world, "PROFILE_CACHE_TABLE", {"accountId": {"S": ACCOUNT}}) is None
    assert author_index(world, ACCOUNT) == 0
    assert avatar_versions(world, ACCOUNT) == 5
    assert consent.lookup(EMAIL) != {}
    assert get(world, "REGISTRY_TABLE", {"accountId": {"S": ACCOUNT}}) is not None
    assert world.scan("AUDIT_TABLE") == []
    (lock,) = world.scan("IDEMPOTENCY_TABLE")
    assert lock["status"] == {"S": "INPROGRESS"}

    # Redelivered while the dead invocation's time could still be running: refused, not run twice.
    assert world.invoke(message()) == failed_item()
    assert "IdempotencyAlreadyInProgressError" in world.logs.getvalue()
    assert world.scan("AUDIT_TABLE") == []

    # Once that invocation's timeout has passed (what Powertools compares with), the retry runs.
    world.ddb.update_item(TableName=world.env["IDEMPOTENCY_TABLE"], Key={"id": lock["id"]},
                          UpdateExpression="SET in_progress_expiration = :past",
                          ExpressionAttributeValues={":past": {"N": str(int(time.time() * 1000) - 1)}})
    assert world.invoke(message()) == {"batchItemFailures": []}
    assert_erased_everywhere(world, consent)
    record = one_audit_record(world)
    stores = {k: {n: int(v["N"]) for n, v in c["M"].items()} for k, c in record["stores"]["M"].items()}
    # The completing run records what it found: the avatars it deleted, "0 found" where the crashed
    # run had already erased.
    assert stores["avatars"]["deleted"] == 5 and stores["profile-cache"]["found"] == 0
    base.assert_no_personal_data(world.logs.getvalue() + capsys.readouterr().out
                                 + json.dumps(world.scan("AUDIT_TABLE")), *PERSONAL)


# ------------------------------------------------------------------ two instances, same account
def load_instance(w: World) -> Any:
    """A second Lambda instance: the handler module loaded again, with its own processor and state."""
    return moto_world.load_handler(HANDLER)


def invoke(app: Any, body: str) -> dict:
    record = copy.deepcopy(SQS_SAMPLE["Records"][0])
    record["body"], record["messageId"] = body, str(uuid.uuid4())
    return {"id": record["messageId"], "result": app.lambda_handler({"Records": [record]}, LambdaContext())}


class GatedS3:
    """Holds instance A inside its erasure (at its first S3 listing) until the test releases it."""

    def __init__(self, real: Any):
        self._real = real
        self.inside, self.release = threading.Event(), threading.Event()

    def list_object_versions(self, **params: Any) -> Any:
        if threading.current_thread().name == "instance-a" and not self.inside.is_set():
            self.inside.set()
            assert self.release.wait(60), "the test never released instance A"
        return self._real.list_object_versions(**params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_same_account_delivered_twice_concurrently(world, clients):
    """Instance B gets the account while A is erasing it: B's message fails (the idempotency record is
    in progress) and SQS redelivers it; the redelivery returns A's stored result. One audit record."""
    seed_account(world, ACCOUNT, NAME, EMAIL)
    consent = seed_consent(world, ACCOUNT, EMAIL)
    gated = clients["s3"] = GatedS3(aws.client("s3"))
    instance_b = load_instance(world)
    results: dict[str, dict] = {}

    a = threading.Thread(target=lambda: results.update(a=invoke(world.app, message())), name="instance-a")
    a.start()
    assert gated.inside.wait(60), "instance A never reached the stores"
    b = threading.Thread(target=lambda: results.update(b=invoke(instance_b, message())), name="instance-b")
    b.start()
    b.join(60)
    assert results["b"]["result"] == {"batchItemFailures": [{"itemIdentifier": results["b"]["id"]}]}
    assert world.scan("AUDIT_TABLE") == []  # A has not finished: nothing claims erasure yet
    gated.release.set()
    a.join(60)
    assert results["a"]["result"] == {"batchItemFailures": []}
    one_audit_record(world)

    counter = CountingHook()
    aws.client("dynamodb").meta.events.register("provide-client-params.dynamodb.*", counter)
    assert invoke(instance_b, message())["result"] == {"batchItemFailures": []}  # B's redelivery
    assert counter.count("Query") == 0 and counter.count("PutItem", world.env["AUDIT_TABLE"]) == 0
    one_audit_record(world)
    assert_erased_everywhere(world, consent)


def test_same_account_racing_on_two_instances_converges_to_one_record(world):
    """No gate: whichever way the race goes, each message ends successful or is retried to success,
    and the account has exactly one audit record."""
    seed_account(world, ACCOUNT, NAME, EMAIL)
    consent = seed_consent(world, ACCOUNT, EMAIL)
    apps = [world.app, load_instance(world)]
    start = threading.Barrier(2)
    results: list[dict] = [{}, {}]

    def run(n: int) -> None:
        start.wait(30)
        results[n] = invoke(apps[n], message())

    threads = [threading.Thread(target=run, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outcomes = [bool(r["result"]["batchItemFailures"]) for r in results]
    assert outcomes.count(True) <= 1  # at most the loser of the race fails
    for n, failed in enumerate(outcomes):
        if failed:
            assert invoke(apps[n], message())["result"] == {"batchItemFailures": []}
    one_audit_record(world)
    assert_erased_everywhere(world, consent)


# ------------------------------------------------------------------ 10,000 items
def seed_bulk(w: World, comments: int, avatar_keys: int, versions: int) -> None:
    seed_account(w, ACCOUNT, NAME, EMAIL, comments=0)
    bucket = w.env["AVATAR_BUCKET"]
    w.s3.delete_objects(Bucket=bucket, Delete={"Objects": [  # start from exactly the bulk avatars
        {"Key": v["Key"], "VersionId": v["VersionId"]}
        for p in w.s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=f"avatars/{ACCOUNT}/")
        for v in p.get("Versions", []) + p.get("DeleteMarkers", [])]})
    body = "A comment long enough that one account's comments fill several 1 MB query pages. " * 5
    table = w.env["COMMENTS_TABLE"]
    for start in range(0, comments, 25):
        w.ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": {
            "commentId": {"S": f"{ACCOUNT}#{n:05d}"}, "authorAccountId": {"S": ACCOUNT},
            "authorName": {"S": NAME}, "body": {"S": body}, "site": {"S": "site-a"},
            "createdAt": {"S": "2026-11-21T00:00:00.000Z"}}}} for n in range(start, min(comments, start + 25))]})
    for k in range(avatar_keys):
        for v in range(versions):
            w.s3.put_object(Bucket=bucket, Key=f"avatars/{ACCOUNT}/{k:04d}.png", Body=b"v%d" % v)


class PageCounter:
    """Counts Query responses by table: pages, and pages that said there is more. The erasure runs on
    one thread, so each response belongs to the request just made."""

    def __init__(self):
        self.pages: dict[str, int] = {}
        self.more: dict[str, int] = {}
        self._table = ""

    def request(self, params, **kwargs):
        self._table = params["TableName"]

    def response(self, parsed, **kwargs):
        self.pages[self._table] = self.pages.get(self._table, 0) + 1
        self.more[self._table] = self.more.get(self._table, 0) + bool(parsed.get("LastEvaluatedKey"))


def test_account_with_10000_items_is_paged_and_batched(world, monkeypatch, capsys):
    comments, avatar_keys, versions = 7999, 1000, 2  # + 1 profile = 10,000 items
    seed_bulk(world, comments, avatar_keys, versions)
    # The shipped map scrubs comments (one UpdateItem each, there is no batch update); deleting them
    # shows the batched path at this size.
    doc = json.loads(pdmap.DEFAULT_MAP_PATH.read_text())
    next(s for s in doc["stores"] if s["name"] == "comments")["closed"] = {"action": "deleteItems"}
    monkeypatch.setattr(world.app, "PD_MAP", pdmap.parse(doc))
    ddb, s3 = aws.client("dynamodb"), aws.client("s3")
    calls, s3_calls, pages = CountingHook(), CountingHook(), PageCounter()
    ddb.meta.events.register("provide-client-params.dynamodb.*", calls)
    ddb.meta.events.register("provide-client-params.dynamodb.Query", pages.request)
    ddb.meta.events.register("after-call.dynamodb.Query", pages.response)
    s3.meta.events.register("provide-client-params.s3.*", s3_calls)

    assert world.invoke(message()) == {"batchItemFailures": []}

    table, profiles = world.env["COMMENTS_TABLE"], world.env["PROFILE_CACHE_TABLE"]
    record = one_audit_record(world)
    stores = {k: {n: int(v["N"]) for n, v in c["M"].items()} for k, c in record["stores"]["M"].items()}
    assert stores["comments"] == {"found": comments, "deleted": comments, "scrubbed": 0, "remaining": 0}
    assert stores["avatars"]["deleted"] == avatar_keys * versions
    assert stores["profile-cache"]["deleted"] == 1
    assert sum(stores[s]["found"] for s in ("comments", "avatars", "profile-cache")) == 10_000
    assert author_index(world, ACCOUNT) == 0 and comments_of(world, ACCOUNT) == []
    assert avatar_versions(world, ACCOUNT) == 0

    # Queries: one per page, to find and then to verify; the find really paged.
    assert pages.more[table] >= 2, "the comments did not span several pages"
    assert calls.count("Query", table) == pages.pages[table] == pages.more[table] + 2
    assert calls.count("Query", profiles) == 2
    assert calls.count("Scan") == 0
    writes = [p["RequestItems"] for name, p in calls.calls if name == "BatchWriteItem"]
    assert [len(w[table]) for w in writes if table in w] == [25] * (comments // 25) + [comments % 25]
    assert [len(w[profiles]) for w in writes if profiles in w] == [1]
    deletes = [len(p["Delete"]["Objects"]) for name, p in s3_calls.calls if name == "DeleteObjects"]
    assert deletes == [1000] * (avatar_keys * versions // 1000)
    # Listing pages of at most 1,000 versions to find, one empty page to verify.
    assert s3_calls.count("ListObjectVersions") == math.ceil(avatar_keys * versions / 1000) + 1
    assert calls.count("GetItem", table) == 0  # nothing left in the index, so nothing to re-read
    with capsys.disabled():
        print(f"\n10,000 items: comments {pages.pages[table]} Query pages ({pages.more[table]} with more), "
              f"{len([w for w in writes if table in w])} BatchWriteItem; avatars {len(deletes)} DeleteObjects, "
              f"{s3_calls.count('ListObjectVersions')} ListObjectVersions; total DynamoDB calls "
              f"{len(calls.calls)}, S3 calls {len(s3_calls.calls)}")


# ------------------------------------------------------------------ calls per erased account
STORE_OF_ENV = {"PROFILE_CACHE_TABLE": "profile-cache (dynamodb, by key)",
                "COMMENTS_TABLE": "comments (dynamodb, by index, scrub)",
                "AVATAR_BUCKET": "avatars (s3, versioned)", "CONSENT_TABLE": "consent (hook)",
                "REGISTRY_TABLE": "registry", "AUDIT_TABLE": "audit", "IDEMPOTENCY_TABLE": "idempotency"}


def test_calls_per_erased_account_by_store(world, capsys):
    """Measures every AWS call one erasure makes, by store, and holds them to the targets: one query
    per store page to find and one to verify, deletes batched, one audit put, one registry write."""
    seed_account(world, ACCOUNT, NAME, EMAIL, comments=3)
    seed_consent(world, ACCOUNT, EMAIL)
    by_name = {world.env[e]: label for e, label in STORE_OF_ENV.items()}
    measured: dict[str, dict[str, int]] = {}

    def count(model, params, **kwargs):
        resource = _table_of(params) or params.get("Bucket") or params.get("SecretId") or "-"
        store = by_name.get(resource, model.service_model.service_name)
        measured.setdefault(store, {})
        measured[store][model.name] = measured[store].get(model.name, 0) + 1

    for service in ("dynamodb", "s3", "secretsmanager"):
        aws.client(service).meta.events.register(f"provide-client-params.{service}.*", count)

    assert world.invoke(message()) == {"batchItemFailures": []}
    one_audit_record(world)
    with capsys.disabled():
        print("\ncalls per erased account (1 profile, 3 comments, 5 avatar versions, 1 consent subject):")
        for store, ops in sorted(measured.items()):
            print(f"  {store:40} {json.dumps(ops, sort_keys=True)}")
    assert measured["profile-cache (dynamodb, by key)"] == {"Query": 2, "BatchWriteItem": 1}
    assert measured["comments (dynamodb, by index, scrub)"] == {"Query": 2, "UpdateItem": 3}
    assert measured["avatars (s3, versioned)"] == {"ListObjectVersions": 2, "DeleteObjects": 1}
    assert measured["audit"] == {"PutItem": 1}
    assert measured["registry"] == {"GetItem": 1, "TransactWriteItems": 1}
    # The consent hook is the consent store's own (measured and reported, not held to a count here).
    assert "Scan" not in measured["consent (hook)"]
    assert set(measured) <= set(STORE_OF_ENV.values()) | {"secretsmanager"}
