"""Erasure benchmark: the erasure function's handler on moto (stores from the templates, the function's
resolved environment, AWS's SQS event shape), next to a one-call-per-item eraser on the same data."""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import meter
from .reporter import REGION, aws_env

REPO = Path(__file__).resolve().parents[1]
HANDLER = REPO / "functions" / "erasure" / "app.py"
PSEUDONYM_KEY = "bench-pseudonym-key-0123456789abcdef"
NOW = datetime(2026, 3, 9, 10, 0, tzinfo=UTC)
COMMENTS_PER_ACCOUNT = 3
AVATAR_VERSIONS = 2
SQS_BATCH = 10  # the template's BatchSize for the actions queue


def erased_account(i: int) -> str:
    return f"5be24e5e{i:016x}"


@contextmanager
def moto_at(now: datetime) -> Iterator[None]:
    """moto with fake credentials (bench.reporter.aws_env), Powertools' parameter cache emptied, and
    the product's clock standing at `now`; the system clock again afterwards."""
    from tests.support.moto_world import manual_clock

    with manual_clock(now), aws_env():
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()
        yield


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _seed(ddb: Any, s3: Any, env: dict[str, str], account: str, i: int) -> None:
    ddb.put_item(TableName=env["PROFILE_CACHE_TABLE"], Item={
        "accountId": {"S": account}, "displayName": {"S": f"Bench User {i}"},
        "email": {"S": f"bench.user.{i}@example.invalid"},
        "avatarUrl": {"S": f"https://avatars.example.invalid/{i}.png"},
        "sites": {"SS": ["site-0.bench.example"]}, "fetchedAt": {"S": "2026-02-01T00:00:00.000Z"},
    })
    ddb.batch_write_item(RequestItems={env["COMMENTS_TABLE"]: [
        {"PutRequest": {"Item": {
            "commentId": {"S": f"c-{i}-{n}"}, "authorAccountId": {"S": account},
            "authorName": {"S": f"Bench User {i}"}, "body": {"S": f"comment {n}"},
            "site": {"S": "site-0.bench.example"}, "createdAt": {"S": "2026-02-02T00:00:00.000Z"},
        }}} for n in range(COMMENTS_PER_ACCOUNT)
    ]})
    for version in range(AVATAR_VERSIONS):
        s3.put_object(Bucket=env["AVATAR_BUCKET"], Key=f"avatars/{account}/current.png", Body=b"png%d" % version)
    ddb.put_item(TableName=env["REGISTRY_TABLE"], Item={
        "accountId": {"S": account}, "sites": {"SS": ["site-0.bench.example"]}, "status": {"S": "erasing"},
        "updatedAt": {"S": "2026-02-01T00:00:00.000Z"}, "registeredAt": {"S": "2026-02-01T00:00:00.000Z"},
    })


def _kinds(env: dict[str, str]) -> dict[str, str]:
    """Physical resource name -> the store kind it is counted under."""
    return {
        env["PROFILE_CACHE_TABLE"]: "dynamodb store (profile-cache)",
        env["COMMENTS_TABLE"]: "dynamodb store (comments, scrubbed)",
        env["AVATAR_BUCKET"]: "s3 store (avatars, versioned)",
        env["CONSENT_TABLE"]: "hook (consent)",
        env["REGISTRY_TABLE"]: "registry",
        env["AUDIT_TABLE"]: "audit",
        env["IDEMPOTENCY_TABLE"]: "idempotency",
    }


def by_kind(tally: meter.Tally, env: dict[str, str], accounts: int) -> dict[str, dict[str, float]]:
    kinds = _kinds(env)
    out: dict[str, Counter] = {}
    for key, calls in tally.resources.items():
        resource, operation = key.split("|", 1)
        kind = next((k for name, k in kinds.items() if name in resource.split(",")), None)
        if kind is None:
            kind = "secrets" if operation.startswith("secretsmanager") else "other"
        out.setdefault(kind, Counter())[operation.split(":", 1)[1]] += calls
    return {
        kind: {**{op: round(n / accounts, 3) for op, n in sorted(ops.items())},
               "total": round(sum(ops.values()) / accounts, 3)}
        for kind, ops in sorted(out.items())
    }


def _records(sample: dict[str, Any], bodies: list[str]) -> dict[str, Any]:
    records = []
    for body in bodies:
        record = copy.deepcopy(sample["Records"][0])
        record["body"] = body
        record["messageId"] = str(uuid.uuid4())
        records.append(record)
    return {"Records": records}


def _message(account: str) -> str:
    return json.dumps({"schema": 1, "action": "erase", "reason": "closed", "accountId": account,
                       "reportedAt": "2026-03-09T09:00:00.000Z", "cycle": 2})


def naive_erase(ddb: Any, s3: Any, env: dict[str, str], account: str, consent_hook: Any) -> None:
    """One call per item: read then delete each item, scrub each comment, delete each object version,
    one audit put, delete the registry item; no verification, no idempotency record."""
    profile = {"accountId": {"S": account}}
    if "Item" in ddb.get_item(TableName=env["PROFILE_CACHE_TABLE"], Key=profile):
        ddb.delete_item(TableName=env["PROFILE_CACHE_TABLE"], Key=profile)
    comments = ddb.query(TableName=env["COMMENTS_TABLE"], IndexName="author-index",
                         KeyConditionExpression="authorAccountId = :a",
                         ExpressionAttributeValues={":a": {"S": account}})["Items"]
    for comment in comments:
        ddb.update_item(TableName=env["COMMENTS_TABLE"], Key={"commentId": comment["commentId"]},
                        UpdateExpression="SET authorName = :n REMOVE authorAccountId",
                        ExpressionAttributeValues={":n": {"S": "Former user"}})
    versions = s3.list_object_versions(Bucket=env["AVATAR_BUCKET"], Prefix=f"avatars/{account}/")
    for entry in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
        s3.delete_object(Bucket=env["AVATAR_BUCKET"], Key=entry["Key"], VersionId=entry["VersionId"])
    consent_hook(account, NOW)
    ddb.put_item(TableName=env["AUDIT_TABLE"], Item={
        "recordId": {"S": str(uuid.uuid4())}, "action": {"S": "erase"}, "day": {"S": "2026-03-09"},
        "recordedAt": {"S": "2026-03-09T10:00:00.000Z"},
    })
    ddb.delete_item(TableName=env["REGISTRY_TABLE"], Key=profile)


def bench_erasure(accounts: int) -> dict[str, Any]:
    import boto3

    from gdpr_core.consent.store import ConsentStore
    from gdpr_core.erasure.service import consent_hooks
    from gdpr_core.pseudonym import Pseudonymizer
    from tests.support import aws_events, stacks
    from tests.support.moto_world import LambdaContext, load_handler

    sample = aws_events.load("sqs-receive-message.json")
    context = LambdaContext(function_name="bench-erasure", region=REGION,
                            aws_request_id="00000000-0000-0000-0000-000000000001", remaining_ms=120_000)
    started = time.perf_counter()
    with moto_at(NOW):
        ddb, s3 = boto3.client("dynamodb", region_name=REGION), boto3.client("s3", region_name=REGION)
        stacks.create_sample_app(ddb, s3)
        tables = stacks.create_service_tables(ddb, prefix="bench-")
        secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="bench-pseudonym-key", SecretString=PSEUDONYM_KEY)["ARN"]
        env = stacks.function_environment("ErasureFunction", tables)
        env.update(PSEUDONYM_KEY_SECRET_ARN=secret, POWERTOOLS_TRACE_DISABLED="true",
                   POWERTOOLS_LOG_LEVEL="WARNING", POWERTOOLS_METRICS_NAMESPACE="GdprComplianceBench",
                   AWS_LAMBDA_FUNCTION_NAME="bench-erasure")
        ours_ids = [erased_account(i) for i in range(accounts + 1)]
        naive_ids = [erased_account(10_000 + i) for i in range(accounts)]
        for i, account in enumerate(ours_ids + naive_ids):
            _seed(ddb, s3, env, account, i)
        with _environment(env), _quiet_metrics():
            app = load_handler(HANDLER, f"bench_erasure_app_{uuid.uuid4().hex}")
            restore_logs = _silence(app)
            # Warm: the first invocation fetches the secret and creates clients (not counted).
            warm = app.lambda_handler(_records(sample, [_message(ours_ids[0])]), context)
            failures = len(warm.get("batchItemFailures", []))
            with meter.measure() as ours:
                for start in range(1, accounts + 1, SQS_BATCH):
                    answer = app.lambda_handler(
                        _records(sample, [_message(a) for a in ours_ids[start : start + SQS_BATCH]]), context)
                    failures += len(answer.get("batchItemFailures", []))
            restore_logs()
        consent = ConsentStore(env["CONSENT_TABLE"], Pseudonymizer(PSEUDONYM_KEY), client=ddb)
        hook = consent_hooks(consent, Pseudonymizer(PSEUDONYM_KEY))["consent.erase_account"]
        with meter.measure() as naive:
            for account in naive_ids:
                naive_erase(ddb, s3, env, account, hook)
        left = _leftovers(ddb, s3, env, ours_ids + naive_ids)
    return {
        "accounts": accounts,
        "perAccount": {"commentItems": COMMENTS_PER_ACCOUNT, "avatarVersions": AVATAR_VERSIONS, "profileItems": 1},
        "ours": {**_per_account(ours, env, accounts), "failedItems": failures, "tally": ours.as_dict()},
        "naive": {**_per_account(naive, env, accounts), "tally": naive.as_dict()},
        "leftAfterwards": left,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _per_account(tally: meter.Tally, env: dict[str, str], accounts: int) -> dict[str, Any]:
    return {
        "awsCallsPerAccount": round(tally.aws_calls / accounts, 3),
        "byStore": by_kind(tally, env, accounts),
        "writeUnitsPerAccount": round(tally.write_units / accounts, 3),
        "readUnitsPerAccount": round(tally.read_units / accounts, 3),
        "cpuMillisecondsPerAccount": round(tally.cpu_seconds / accounts * 1000, 2),
    }


def _leftovers(ddb: Any, s3: Any, env: dict[str, str], accounts: list[str]) -> dict[str, int]:
    """What still links to the erased accounts, per store (both erasers must leave nothing)."""
    wanted = set(accounts)
    profiles = sum(1 for p in ddb.get_paginator("scan").paginate(TableName=env["PROFILE_CACHE_TABLE"])
                   for i in p["Items"] if i["accountId"]["S"] in wanted)
    comments = sum(1 for p in ddb.get_paginator("scan").paginate(TableName=env["COMMENTS_TABLE"])
                   for i in p["Items"] if i.get("authorAccountId", {}).get("S") in wanted)
    listing = s3.list_object_versions(Bucket=env["AVATAR_BUCKET"], Prefix="avatars/")
    objects = sum(1 for e in listing.get("Versions", []) + listing.get("DeleteMarkers", [])
                  if e["Key"].split("/")[1] in wanted)
    registry = sum(1 for p in ddb.get_paginator("scan").paginate(TableName=env["REGISTRY_TABLE"])
                   for i in p["Items"] if i["accountId"]["S"] in wanted)
    return {"profiles": profiles, "comments": comments, "avatarObjects": objects, "registryItems": registry}


@contextmanager
def _quiet_metrics() -> Iterator[None]:
    """Powertools prints EMF metrics to stdout; the benchmark's stdout is its table."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _silence(app: Any) -> Any:
    """Points the function's log handlers at a buffer; returns what puts them back."""
    import io
    import logging

    logger = getattr(app, "logger", None)
    handlers = [h for h in logging.getLogger(logger.service).handlers
                if isinstance(h, logging.StreamHandler)] if logger is not None else []
    saved = [h.setStream(io.StringIO()) for h in handlers]

    def restore() -> None:
        for handler, stream in zip(handlers, saved, strict=True):
            handler.setStream(stream)

    return restore
