"""The benchmark's meter charges read units the way DynamoDB bills them: a filtered Query or Scan pays
for every item it read, not only for those it returned."""

from __future__ import annotations

import boto3

from bench import meter
from tests.support import moto_world

REGION = "us-east-1"


def test_a_filtered_scan_is_charged_for_the_items_it_read(monkeypatch):
    meter.install()
    moto_world.fake_aws_env(monkeypatch, REGION)
    with moto_world.mocked_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        ddb.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])
        for n in range(40):  # 40 items of about 1 KB: 40 KB read, 10 units strongly consistent
            ddb.put_item(TableName="t", Item={"k": {"S": f"{n:03d}"}, "pad": {"S": "x" * 1000}})
        size = sum(meter.item_size(i) for i in ddb.scan(TableName="t")["Items"])
        with meter.measure() as filtered:
            page = ddb.scan(TableName="t", ConsistentRead=True, FilterExpression="k = :k",
                            ExpressionAttributeValues={":k": {"S": "007"}})
        with meter.measure() as whole:
            ddb.scan(TableName="t", ConsistentRead=True)
    assert page["Count"] == 1 and page["ScannedCount"] == 40
    assert filtered.items_read == 1  # items returned
    assert filtered.read_units == whole.read_units == -(-size // 4096) > 1
    assert filtered.aws_calls == 1  # the re-read that sizes the page is not counted as a call


def test_a_batch_get_is_charged_like_the_get_items_it_stands_for(monkeypatch):
    meter.install()
    moto_world.fake_aws_env(monkeypatch, REGION)
    with moto_world.mocked_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        ddb.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])
        for n in range(3):  # 5 KB, 100 B, 100 B: 2 + 1 + 1 units strongly consistent
            ddb.put_item(TableName="t", Item={"k": {"S": f"{n}"}, "pad": {"S": "x" * (5000 if n == 0 else 100)}})
        keys = [{"k": {"S": f"{n}"}} for n in range(3)]
        with meter.measure() as batch:
            ddb.batch_get_item(RequestItems={"t": {"Keys": keys, "ConsistentRead": True}})
        with meter.measure() as singles:
            for key in keys:
                ddb.get_item(TableName="t", Key=key, ConsistentRead=True)
    assert batch.items_read == singles.items_read == 3
    assert batch.read_units == singles.read_units == 4
    assert batch.aws_calls == 1 and singles.aws_calls == 3
