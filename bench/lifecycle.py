"""Lifecycle benchmark: a site's uninstall (request, chunks) and one pass of the retention sweep, each
through the erasure function's handler on moto, next to naive baselines on the same data.

Uninstall: `accounts` on the uninstalled site (a fifth also on another site), as many again only on the
other site (the registry scan skips them), each with a profile, comments and avatar versions per site.
Naive: scan the registry, then one call per item (read, delete or update each), no verification, no
checkpoints. Retention: `accounts` registered, a tenth of the profile copies past 30 days. Naive: scan
the whole profile cache and delete each old copy (and leaves the registry's `updatedAt` wrong).
Only the function's own calls are counted: the queue polling that Lambda's event-source mapping does
is not (the drain below stands in for it)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from . import meter
from .erasure import HANDLER, SQS_BATCH, _environment, _quiet_metrics, _records, _silence, moto_at
from .reporter import REGION

PSEUDONYM_KEY = "bench-lifecycle-pseudonym-key-0123456789"
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SITE, OTHER_SITE = "gone.bench.example", "stays.bench.example"
COMMENTS_PER_SITE = 2
SHARED_EVERY = 5  # every 5th account of the site also lives on the other site
OLD_EVERY = 10  # retention: every 10th profile copy is past its maximum age


def _line(account: str, site: str, n: int, updated: str) -> dict[str, Any]:
    return {"accountId": account, "site": site, "updatedAt": updated,
            "profile": {"displayName": f"Bench Person {n}", "email": f"bench.person.{n}@example.invalid",
                        "avatarUrl": f"https://avatars.example.invalid/{n}.png"},
            "comments": [{"commentId": f"c-{account}-{site}-{i}", "body": "ok", "createdAt": updated}
                         for i in range(COMMENTS_PER_SITE)]}


def _world(prefix: str) -> tuple[Any, Any, Any, dict[str, str], str]:
    import boto3

    from tests.support import stacks

    ddb, s3, sqs = (boto3.client(s, region_name=REGION) for s in ("dynamodb", "s3", "sqs"))
    stacks.create_sample_app(ddb, s3)
    tables = stacks.create_service_tables(ddb, prefix=prefix)
    queues = stacks.create_queues(sqs, prefix=prefix)
    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=f"{prefix}pseudonym-key", SecretString=PSEUDONYM_KEY)["ARN"]
    env = stacks.function_environment("ErasureFunction", {**tables, **queues, "UninstallGraceHours": "0"})
    env.update(PSEUDONYM_KEY_SECRET_ARN=secret, POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_LOG_LEVEL="WARNING",
               POWERTOOLS_METRICS_NAMESPACE="GdprComplianceBench", AWS_LAMBDA_FUNCTION_NAME="bench-erasure")
    return ddb, s3, sqs, env, queues["ActionsQueue"]


def _context() -> Any:
    from tests.support.moto_world import LambdaContext

    return LambdaContext(function_name="bench-erasure", region=REGION,
                         aws_request_id="00000000-0000-0000-0000-000000000002", remaining_ms=120_000)


def _scan(ddb: Any, table: str) -> list[dict[str, Any]]:
    return [i for p in ddb.get_paginator("scan").paginate(TableName=table) for i in p["Items"]]


def _avatar_versions(s3: Any, bucket: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix="avatars/"):
        out += page.get("Versions", []) + page.get("DeleteMarkers", [])
    return out


def _held_for(ddb: Any, s3: Any, env: dict[str, str], site: str) -> dict[str, int]:
    """What the stores still hold for `site`, read from the stores themselves."""
    return {
        "registry": sum(site in i.get("sites", {}).get("SS", []) for i in _scan(ddb, env["REGISTRY_TABLE"])),
        "profiles": sum(site in i["sites"]["SS"] for i in _scan(ddb, env["PROFILE_CACHE_TABLE"])),
        "comments": sum(i["site"]["S"] == site and "authorAccountId" in i for i in _scan(ddb, env["COMMENTS_TABLE"])),
        "avatarVersions": sum(v["Key"].endswith(f"/{site}.png") for v in _avatar_versions(s3, env["AVATAR_BUCKET"])),
    }


# ------------------------------------------------------------------ uninstall
def naive_uninstall(ddb: Any, s3: Any, env: dict[str, str], site: str) -> None:
    """Scan the registry for the site, then one call per item in every store; one audit put."""
    for item in _scan(ddb, env["REGISTRY_TABLE"]):
        sites = item.get("sites", {}).get("SS", [])
        if site not in sites:
            continue
        key = {"accountId": item["accountId"]}
        profile = ddb.get_item(TableName=env["PROFILE_CACHE_TABLE"], Key=key).get("Item")
        if profile is not None and profile["sites"]["SS"] == [site]:
            ddb.delete_item(TableName=env["PROFILE_CACHE_TABLE"], Key=key)
        elif profile is not None:
            ddb.update_item(TableName=env["PROFILE_CACHE_TABLE"], Key=key, UpdateExpression="DELETE sites :s",
                            ExpressionAttributeValues={":s": {"SS": [site]}})
        comments = ddb.query(TableName=env["COMMENTS_TABLE"], IndexName="author-index",
                             KeyConditionExpression="authorAccountId = :a",
                             ExpressionAttributeValues={":a": item["accountId"]})["Items"]
        for comment in comments:  # the index holds keys only: the site is checked by the update itself
            try:
                ddb.update_item(TableName=env["COMMENTS_TABLE"], Key={"commentId": comment["commentId"]},
                                UpdateExpression="SET authorName = :n REMOVE authorAccountId",
                                ConditionExpression="site = :site",
                                ExpressionAttributeValues={":n": {"S": "Former user"}, ":site": {"S": site}})
            except ddb.exceptions.ConditionalCheckFailedException:
                pass
        prefix = f"avatars/{item['accountId']['S']}/{site}.png"
        listing = s3.list_object_versions(Bucket=env["AVATAR_BUCKET"], Prefix=prefix)
        for entry in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
            s3.delete_object(Bucket=env["AVATAR_BUCKET"], Key=entry["Key"], VersionId=entry["VersionId"])
        if sites == [site]:
            ddb.delete_item(TableName=env["REGISTRY_TABLE"], Key=key)
        else:
            ddb.update_item(TableName=env["REGISTRY_TABLE"], Key=key, UpdateExpression="DELETE sites :s",
                            ExpressionAttributeValues={":s": {"SS": [site]}})
    ddb.put_item(TableName=env["AUDIT_TABLE"], Item={
        "recordId": {"S": str(uuid.uuid4())}, "action": {"S": "uninstall"}, "day": {"S": "2026-12-01"},
        "recordedAt": {"S": "2026-12-01T10:00:00.000Z"}})


def _uninstall_case(accounts: int, ours: bool) -> dict[str, Any]:
    import boto3

    from gdpr_core.lifecycle.uninstall import request_message
    from gdpr_core.pseudonym import Pseudonymizer
    from gdpr_sandbox.sample_app import seed
    from tests.support import aws_events
    from tests.support.moto_world import load_handler

    tag = "ours" if ours else "naive"
    with moto_at(NOW):
        ddb, s3, sqs, env, queue = _world(f"bench-{tag}-")
        updated = "2026-11-20T00:00:00.000Z"
        on_site = [f"5be2{n:020x}" for n in range(accounts)]
        elsewhere = [f"6ce2{n:020x}" for n in range(accounts)]
        lines = [_line(a, SITE, n, updated) for n, a in enumerate(on_site)]
        lines += [_line(a, OTHER_SITE, n, updated) for n, a in enumerate(on_site[::SHARED_EVERY] + elsewhere)]
        seed(boto3, env, lines, Pseudonymizer(PSEUDONYM_KEY))
        items_on_site = sum(_held_for(ddb, s3, env, SITE).values())
        other_before = _held_for(ddb, s3, env, OTHER_SITE)
        tally, messages, failures = meter.Tally(), 0, 0
        if ours:
            sample = aws_events.load("sqs-receive-message.json")
            with _environment(env), _quiet_metrics():
                app = load_handler(HANDLER, f"bench_lifecycle_app_{uuid.uuid4().hex}")
                restore_logs = _silence(app)
                sqs.send_message(QueueUrl=queue, MessageBody=request_message(SITE, NOW))
                while got := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=SQS_BATCH).get("Messages"):
                    with meter.measure(tally):
                        answer = app.lambda_handler(_records(sample, [m["Body"] for m in got]), _context())
                    failures += len(answer.get("batchItemFailures", []))
                    messages += len(got)
                    for m in got:
                        sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
                restore_logs()
        else:
            with meter.measure(tally):
                naive_uninstall(ddb, s3, env, SITE)
        left = _held_for(ddb, s3, env, SITE)
        other_after = _held_for(ddb, s3, env, OTHER_SITE)
        audit = _scan(ddb, env["AUDIT_TABLE"])
    return {
        "itemsOnSite": items_on_site,
        "awsCallsPerAccount": round(tally.aws_calls / accounts, 3),
        "awsCallsPerItem": round(tally.aws_calls / items_on_site, 3),
        "writeUnitsPerAccount": round(tally.write_units / accounts, 3),
        "readUnitsPerAccount": round(tally.read_units / accounts, 3),
        "registryScans": tally.count("dynamodb", {"Scan"}),
        "queueMessages": messages,
        "failedItems": failures,
        "cpuMillisecondsPerAccount": round(tally.cpu_seconds / accounts * 1000, 2),
        "leftOnSite": left,
        "otherSiteUnchanged": other_after == other_before,
        "auditRecords": len(audit),
        "tally": tally.as_dict(),
    }


def bench_uninstall(accounts: int) -> dict[str, Any]:
    from gdpr_core.lifecycle.uninstall import DEFAULT_CHUNK

    started = time.perf_counter()
    out = {"accounts": accounts, "alsoOnOtherSite": len(range(0, accounts, SHARED_EVERY)),
           "onlyOnOtherSite": accounts, "commentsPerSite": COMMENTS_PER_SITE, "chunkSize": DEFAULT_CHUNK,
           "ours": _uninstall_case(accounts, ours=True), "naive": _uninstall_case(accounts, ours=False)}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


# ------------------------------------------------------------------ retention
def naive_retention(ddb: Any, env: dict[str, str], cutoff: str) -> int:
    """Scan the whole profile cache, delete each copy older than the cutoff (registry left as it was)."""
    purged = 0
    for item in _scan(ddb, env["PROFILE_CACHE_TABLE"]):
        if item["fetchedAt"]["S"] < cutoff:
            ddb.delete_item(TableName=env["PROFILE_CACHE_TABLE"], Key={"accountId": item["accountId"]})
            purged += 1
    return purged


def _retention_case(accounts: int, ours: bool) -> dict[str, Any]:
    from gdpr_core import clock
    from gdpr_core.pseudonym import Pseudonymizer
    from gdpr_core.registry import Registry
    from tests.support.moto_world import load_handler

    tag = "ours" if ours else "naive"
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=5)
    with moto_at(NOW):
        ddb, _s3, _sqs, env, _queue = _world(f"bench-r{tag}-")
        registry = Registry(env["REGISTRY_TABLE"], Pseudonymizer(PSEUDONYM_KEY), client=ddb)
        old_ids = set()
        for n in range(accounts):
            account = f"7de2{n:020x}"
            fetched = old if n % OLD_EVERY == 0 else recent
            if fetched == old:
                old_ids.add(account)
            registry.record(account, SITE, fetched)
            ddb.put_item(TableName=env["PROFILE_CACHE_TABLE"], Item={
                "accountId": {"S": account}, "displayName": {"S": f"Bench Person {n}"},
                "email": {"S": f"bench.person.{n}@example.invalid"}, "sites": {"SS": [SITE]},
                "avatarUrl": {"S": f"https://avatars.example.invalid/{n}.png"},
                "fetchedAt": {"S": clock.format_rfc3339(fetched)}})
        tally, ticks, purged = meter.Tally(), 0, 0
        if ours:
            with _environment(env), _quiet_metrics():
                app = load_handler(HANDLER, f"bench_retention_app_{uuid.uuid4().hex}")
                restore_logs = _silence(app)
                while True:
                    with meter.measure(tally):
                        summary = app.lambda_handler({"source": "gdpr.scheduler", "action": "lifecycle"},
                                                     _context())["retention"]
                    ticks += 1
                    purged += summary["purged"]
                    if summary["passCompleted"] or ticks > 50:
                        break
                restore_logs()
        else:
            with meter.measure(tally):
                purged = naive_retention(ddb, env, clock.format_rfc3339(NOW - timedelta(days=30)))
        profiles = {i["accountId"]["S"] for i in _scan(ddb, env["PROFILE_CACHE_TABLE"])}
        stale_registry = sum(i["accountId"]["S"] in old_ids for i in _scan(ddb, env["REGISTRY_TABLE"]))
    return {
        "purged": purged,
        "oldCopiesLeft": len(profiles & old_ids),
        "recentCopiesLeft": len(profiles - old_ids),
        "registryItemsOfPurgedAccountsLeft": stale_registry,
        "ticks": ticks,
        "itemsReadPerPurgedCopy": round(tally.items_read / max(purged, 1), 2),
        "readUnitsPerPurgedCopy": round(tally.read_units / max(purged, 1), 3),
        "readUnitsPerRegisteredAccount": round(tally.read_units / accounts, 4),
        "awsCallsPerPurgedCopy": round(tally.aws_calls / max(purged, 1), 3),
        "tally": tally.as_dict(),
    }


def bench_retention(accounts: int) -> dict[str, Any]:
    started = time.perf_counter()
    out = {"accounts": accounts, "oldCopies": len(range(0, accounts, OLD_EVERY)), "maxAgeDays": 30,
           "ours": _retention_case(accounts, ours=True), "naive": _retention_case(accounts, ours=False)}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
