"""Independent checks for the demo and the end-to-end tests: they read the stores and the emulator's
own request log directly, not what the functions said they did."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC
from typing import Any

from gdpr_core.clock import parse_rfc3339


def verify_report_log(log: list[dict[str, Any]], held: set[str], closed: set[str]) -> dict[str, Any]:
    problems: list[str] = []
    accepted = [r for r in log if r.get("path", "").endswith("/report-accounts/") and r["status"] in (200, 204)]
    counts: Counter = Counter(a for r in accepted for a in r["accountIds"])
    oversize = [r for r in log if len(r.get("accountIds", [])) > 90]
    if oversize:
        problems.append(f"{len(oversize)} report requests carried more than 90 accounts")
    twice = [a for a, n in counts.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} accounts were reported more than once in the cycle")
    missing = held - set(counts)
    if missing:
        problems.append(f"{len(missing)} registered accounts were never reported")
    unknown = set(counts) - held
    if unknown:
        problems.append(f"{len(unknown)} reported accounts were never registered")
    return {
        "requests": len(accepted),
        "max_accounts_per_request": max((len(r["accountIds"]) for r in log), default=0),
        "accounts_reported": len(counts),
        "accounts_reported_twice": len(twice),
        "closed_reported": len(closed & set(counts)),
        "problems": problems,
    }


def pd_left_for(sandbox: Any, env: dict[str, str], account_id: str) -> dict[str, int]:
    """Every place the sample app and the registry could still hold the account's data."""
    ddb = sandbox.client("dynamodb")
    s3 = sandbox.client("s3")
    left = {
        "profile": int("Item" in ddb.get_item(TableName=env["PROFILE_CACHE_TABLE"],
                                              Key={"accountId": {"S": account_id}}, ConsistentRead=True)),
        "comments": sum(page["Count"] for page in ddb.get_paginator("query").paginate(
            TableName=env["COMMENTS_TABLE"], IndexName="author-index",
            KeyConditionExpression="authorAccountId = :a", ExpressionAttributeValues={":a": {"S": account_id}})),
        "registry": int("Item" in ddb.get_item(TableName=env["REGISTRY_TABLE"],
                                               Key={"accountId": {"S": account_id}}, ConsistentRead=True)),
        "avatars": 0,
    }
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=env["AVATAR_BUCKET"],
                                                                  Prefix=f"avatars/{account_id}/"):
        left["avatars"] += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
    return left


def _scan_all(ddb: Any, table: str) -> list[dict[str, Any]]:
    return [item for page in ddb.get_paginator("scan").paginate(TableName=table) for item in page["Items"]]


def verify_closed_erased(sandbox: Any, closed_held: set[str],
                         personal_strings: set[str] | None = None) -> dict[str, Any]:
    env = sandbox.env()["ErasureFunction"]
    ddb = sandbox.client("dynamodb")
    problems: list[str] = []
    left_total = 0
    erased = 0
    for account_id in sorted(closed_held):
        left = pd_left_for(sandbox, env, account_id)
        n = sum(left.values())
        left_total += n
        erased += n == 0
    if left_total:
        problems.append(f"{left_total} personal-data items left for accounts answered closed")
    audit = _scan_all(ddb, env["AUDIT_TABLE"])
    erase_records = [a for a in audit if a.get("action", {}).get("S") == "erase"]
    needles = set(closed_held) | (personal_strings or set())
    with_pd = sum(1 for a in audit if any(s in json.dumps(a) for s in needles))
    if with_pd:
        problems.append(f"{with_pd} audit records contain personal data")
    if len(erase_records) != len(closed_held):
        problems.append(f"{len(erase_records)} erase audit records for {len(closed_held)} closed accounts")
    sqs = sandbox.client("sqs")
    dlq = int(sqs.get_queue_attributes(QueueUrl=sandbox.output("ActionsDeadLetterQueueUrl"),
                                       AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
        "ApproximateNumberOfMessages"])
    if dlq:
        problems.append(f"{dlq} messages in the dead-letter queue")
    return {"erased_accounts": erased, "pd_items_left": left_total, "audit_records": len(erase_records),
            "audit_records_with_personal_data": with_pd, "dead_letters": dlq, "problems": problems}


def expected_consent(deliveries: list[dict[str, Any]],
                     closed_accounts: set[str] = frozenset()) -> dict[str, bool | None]:
    """The spec's rule, computed independently: per email, the newest genuine event wins
    (occurredAt, then webhook-id); an erasure leaves no consent state, and neither does the closure
    of the Atlassian account the deliveries linked the email to."""
    closed_emails = {d["body"]["data"]["email"].strip().lower() for d in deliveries
                     if d["signature"] == "valid" and d["body"]["data"].get("accountId") in closed_accounts}
    newest: dict[str, tuple] = {}
    for d in deliveries:
        if d["signature"] != "valid":
            continue
        body = d["body"]
        email = body["data"]["email"].strip().lower()
        order = (parse_rfc3339(body["occurredAt"]).astimezone(UTC), d["webhookId"])
        if email not in newest or order > newest[email][0]:
            newest[email] = (order, body)
    result: dict[str, bool | None] = {}
    for email, (_, body) in newest.items():
        if body["type"] == "consent.erased" or email in closed_emails:
            result[email] = None
        else:
            result[email] = next(c["granted"] for c in body["data"]["consents"] if c["key"] == "generalMarketingOptIn")
    return result


def verify_consent(sandbox: Any, deliveries: list[dict[str, Any]], closed_accounts: set[str]) -> dict[str, Any]:
    from gdpr_core.consent.store import ConsentStore
    from gdpr_core.secrets import load_pseudonymizer

    env = sandbox.env()["ConsentWebhookFunction"]
    store = ConsentStore(env["CONSENT_TABLE"], load_pseudonymizer(env["PSEUDONYM_KEY_SECRET_ARN"]),
                         client=sandbox.client("dynamodb"))
    problems = []
    for email, granted in expected_consent(deliveries, closed_accounts).items():
        state = store.lookup(email).get("generalMarketingOptIn")
        actual = None if state is None else state["granted"]
        if actual != granted:
            problems.append("consent state differs from the newest genuine event for one subject")
    return {"matches": not problems, "problems": problems}
