"""Regression: the sandbox's moto grew by ~11 MB per ListObjectVersions on a 2,000-version bucket
(moto tracks every model instance it creates, including the copies each listing makes), so a site
uninstall on the demo data ran the machine out of memory. Counted in live objects, not in time."""

from __future__ import annotations

import gc

import boto3
from moto.s3.models import FakeKey

from tests.support.moto_world import mocked_aws

REGION = "us-east-1"


def _live_keys() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, FakeKey))


def test_listing_versions_keeps_no_copies(monkeypatch):
    from tests.support.moto_world import fake_aws_env

    fake_aws_env(monkeypatch, REGION)
    with mocked_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="leak-check")
        s3.put_bucket_versioning(Bucket="leak-check", VersioningConfiguration={"Status": "Enabled"})
        for n in range(50):
            s3.put_object(Bucket="leak-check", Key=f"avatars/{n}/a.png", Body=b"x")
        before = _live_keys()
        for n in range(10):
            page = s3.list_object_versions(Bucket="leak-check", Prefix=f"avatars/{n}/")
            assert [v["Key"] for v in page["Versions"]] == [f"avatars/{n}/a.png"]
        # Unpatched moto keeps 10 listings x 50 copies = 500 more FakeKeys alive.
        assert _live_keys() - before == 0


# ------------------------------------------------------------ listing versions by prefix
def _bucket_with_history(s3) -> None:
    s3.create_bucket(Bucket="history")
    s3.put_bucket_versioning(Bucket="history", VersioningConfiguration={"Status": "Enabled"})
    for n in range(12):
        for v in range(n % 4 + 1):
            s3.put_object(Bucket="history", Key=f"avatars/{n:02d}/site-{n % 3}.png", Body=b"v%d" % v)
        s3.put_object(Bucket="history", Key=f"avatars/{n:02d}/site-{n % 3}.png.bak", Body=b"b")
        if n % 5 == 0:
            s3.delete_object(Bucket="history", Key=f"avatars/{n:02d}/site-{n % 3}.png")  # a delete marker
    s3.put_object(Bucket="history", Key="other/x", Body=b"x")


def _every_page(s3, **params) -> list[dict]:
    pages, params = [], {"Bucket": "history", **params}
    while True:
        page = s3.list_object_versions(**params)
        pages.append({
            "versions": [(v["Key"], v["VersionId"], v["IsLatest"], v["Size"]) for v in page.get("Versions", [])],
            "markers": [(m["Key"], m["VersionId"], m["IsLatest"]) for m in page.get("DeleteMarkers", [])],
            "prefixes": [p["Prefix"] for p in page.get("CommonPrefixes", [])],
            "next": (page.get("NextKeyMarker"), page.get("NextVersionIdMarker")),
        })
        if not page.get("IsTruncated"):
            return pages
        params.update(KeyMarker=page["NextKeyMarker"])
        if page.get("NextVersionIdMarker"):
            params["VersionIdMarker"] = page["NextVersionIdMarker"]
        else:
            params.pop("VersionIdMarker", None)


LISTINGS = [
    {"Prefix": "avatars/03/"}, {"Prefix": "avatars/0"}, {"Prefix": "avatars/", "MaxKeys": 3},
    {"Prefix": "avatars/", "Delimiter": "/"}, {"Prefix": "avatars/", "Delimiter": "/", "MaxKeys": 4},
    {"Prefix": "avatars/10/site-1.png"}, {"Prefix": "nothing/"}, {}, {"MaxKeys": 5},
    {"Prefix": "avatars/", "KeyMarker": "avatars/05/site-2.png"},  # marker alone: left to moto
]


def test_listing_by_prefix_answers_exactly_as_moto_does(monkeypatch):
    from moto.s3.models import S3Backend

    from tests.support.moto_world import fake_aws_env

    fake_aws_env(monkeypatch, REGION)
    with mocked_aws():
        s3 = boto3.client("s3", region_name=REGION)
        _bucket_with_history(s3)
        patched = [_every_page(s3, **listing) for listing in LISTINGS]
        monkeypatch.setattr(S3Backend, "list_object_versions", S3Backend.list_object_versions.moto_original)
        unpatched = [_every_page(s3, **listing) for listing in LISTINGS]
    assert patched == unpatched
    assert sum(len(p["versions"]) for p in patched[2]) > 3 * 3  # the paged listing did span several pages
    assert [v[0] for v in patched[0][0]["versions"]] == ["avatars/03/site-0.png"] * 4 + ["avatars/03/site-0.png.bak"]


def test_listing_by_prefix_copies_only_the_keys_under_it(monkeypatch):
    import copy as real_copy

    import moto.s3.models as s3_models

    from tests.support.moto_world import fake_aws_env

    copied: list[int] = []

    class CountingCopy:
        @staticmethod
        def deepcopy(value, *args, **kwargs):
            copied.append(1)
            return real_copy.deepcopy(value, *args, **kwargs)

        copy = staticmethod(real_copy.copy)

    fake_aws_env(monkeypatch, REGION)
    with mocked_aws():
        s3 = boto3.client("s3", region_name=REGION)
        _bucket_with_history(s3)  # 25 names
        monkeypatch.setattr(s3_models, "copy", CountingCopy)
        s3.list_object_versions(Bucket="history", Prefix="avatars/03/")
    assert len(copied) == 2  # site-0.png and site-0.png.bak; moto alone copies all 25 names' versions


# ------------------------------------------------------------ DynamoDB query by partition key
def _tables_with_items(ddb) -> None:
    ddb.create_table(
        TableName="comments", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in
                              (("pk", "S"), ("sk", "N"), ("author", "S"), ("day", "S"))],
        GlobalSecondaryIndexes=[
            {"IndexName": "by-author", "KeySchema": [{"AttributeName": "author", "KeyType": "HASH"}],
             "Projection": {"ProjectionType": "KEYS_ONLY"}},
            {"IndexName": "by-author-day", "KeySchema": [{"AttributeName": "author", "KeyType": "HASH"},
                                                         {"AttributeName": "day", "KeyType": "RANGE"}],
             "Projection": {"ProjectionType": "ALL"}},
        ])
    ddb.create_table(TableName="profiles", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    for n in range(60):
        item = {"pk": {"S": f"thread-{n % 7}"}, "sk": {"N": str(n)}, "body": {"S": "x" * (n % 5)}}
        if n % 4:  # some comments have no author (scrubbed): the indexes must not return them
            item["author"] = {"S": f"author-{n % 3}"}
        if n % 3:
            item["day"] = {"S": f"2026-11-{n % 28 + 1:02d}"}
        ddb.put_item(TableName="comments", Item=item)
    for n in range(10):
        ddb.put_item(TableName="profiles", Item={"pk": {"S": f"p-{n}"}, "n": {"N": str(n)}})


QUERIES = [
    {"TableName": "comments", "KeyConditionExpression": "pk = :h",
     "ExpressionAttributeValues": {":h": {"S": "thread-3"}}},
    {"TableName": "comments", "KeyConditionExpression": "pk = :h AND sk BETWEEN :a AND :b", "ScanIndexForward": False,
     "ExpressionAttributeValues": {":h": {"S": "thread-2"}, ":a": {"N": "5"}, ":b": {"N": "40"}}},
    {"TableName": "comments", "KeyConditionExpression": "pk = :h", "Limit": 3,
     "ExpressionAttributeValues": {":h": {"S": "thread-1"}}},
    {"TableName": "comments", "IndexName": "by-author", "KeyConditionExpression": "author = :a", "Limit": 4,
     "ExpressionAttributeValues": {":a": {"S": "author-1"}}},
    {"TableName": "comments", "IndexName": "by-author-day", "KeyConditionExpression": "author = :a AND #d > :d",
     "ExpressionAttributeNames": {"#d": "day"}, "FilterExpression": "size(body) > :s", "ScanIndexForward": False,
     "ExpressionAttributeValues": {":a": {"S": "author-2"}, ":d": {"S": "2026-11-09"}, ":s": {"N": "1"}}},
    {"TableName": "comments", "IndexName": "by-author", "KeyConditionExpression": "author = :a",
     "ExpressionAttributeValues": {":a": {"S": "nobody"}}},
    {"TableName": "profiles", "KeyConditionExpression": "pk = :h", "ExpressionAttributeValues": {":h": {"S": "p-4"}}},
    {"TableName": "profiles", "KeyConditionExpression": "pk = :h", "ExpressionAttributeValues": {":h": {"S": "p-x"}}},
]


def _every_query_page(ddb, query: dict) -> list[dict]:
    pages, params = [], dict(query)
    while True:
        page = ddb.query(**params)
        pages.append({k: page.get(k) for k in ("Items", "Count", "ScannedCount", "LastEvaluatedKey")})
        if "LastEvaluatedKey" not in page:
            return pages
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_query_by_key_answers_exactly_as_moto_does(monkeypatch):
    from moto.dynamodb.models.table import Table

    from tests.support.moto_world import fake_aws_env

    fake_aws_env(monkeypatch, REGION)
    with mocked_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        _tables_with_items(ddb)
        patched = [_every_query_page(ddb, q) for q in QUERIES]
        monkeypatch.setattr(Table, "query", Table.query.moto_original)
        unpatched = [_every_query_page(ddb, q) for q in QUERIES]
    assert patched == unpatched
    assert len(patched[2]) > 1 and len(patched[3]) > 1  # the limited queries did page
    assert [i["sk"]["N"] for p in patched[0] for i in p["Items"]] == [str(n) for n in range(3, 60, 7)]
    assert patched[6][0]["Items"] == [{"pk": {"S": "p-4"}, "n": {"N": "4"}}]


def test_query_by_key_reads_only_the_partition(monkeypatch):
    from moto.dynamodb.models.table import Table

    from tests.support.moto_world import fake_aws_env

    read: list[int] = []
    original_all_items = Table.all_items

    def counted(self):
        items = original_all_items(self)
        read.append(len(items))
        return items

    fake_aws_env(monkeypatch, REGION)
    with mocked_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        _tables_with_items(ddb)
        monkeypatch.setattr(Table, "all_items", counted)
        ddb.query(**QUERIES[0])
        ddb.query(**QUERIES[3])
    assert read == []  # moto alone sorts and walks all 60 items for each query
