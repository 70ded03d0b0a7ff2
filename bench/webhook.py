"""Webhook benchmark: the consent webhook handler on moto with HTTP API 2.0 events (AWS's sample shape),
for valid, duplicate and forged deliveries, next to a naive handler that fetches its secrets on every
delivery and writes without conditions."""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gdpr_core import clock
from gdpr_core.consent import signature

from . import meter
from .erasure import _environment, _quiet_metrics, _silence, moto_at
from .reporter import REGION

REPO = Path(__file__).resolve().parents[1]
HANDLER = REPO / "functions" / "consent_webhook" / "app.py"
NOW = datetime(2026, 3, 9, 10, 20, tzinfo=UTC)
CURRENT = "whsec_" + base64.b64encode(b"bench-current-signing-key-012345").decode()
PREVIOUS = "whsec_" + base64.b64encode(b"bench-previous-signing-key-01234").decode()
FORGED = "whsec_" + base64.b64encode(b"not-the-senders-key-0123456789ab").decode()
PSEUDONYM_KEY = "bench-pseudonym-key-0123456789abcdef"


class Context:
    function_name = "bench-consent-webhook"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:bench-consent-webhook"
    aws_request_id = "00000000-0000-0000-0000-000000000002"


def _body(i: int) -> bytes:
    return json.dumps({
        "type": "consent.updated",
        "occurredAt": clock.format_rfc3339(NOW.replace(minute=10, microsecond=i * 1000 % 1_000_000)),
        "data": {
            "email": f"bench.subscriber.{i}@example.invalid",
            "locale": "DE",
            "consents": [{"key": "generalMarketingOptIn", "granted": i % 2 == 0,
                          "displayedText": "Yes, send me product news"}],
            "formUrl": "https://example.invalid/preferences",
        },
    }).encode()


def _event(sample: dict[str, Any], webhook_id: str, body: bytes, secret: str) -> dict[str, Any]:
    ts = int(NOW.timestamp())
    event = copy.deepcopy(sample)
    path = "/consenthub/events"
    event.update(routeKey=f"POST {path}", rawPath=path, rawQueryString="", isBase64Encoded=True,
                 headers={"content-type": "application/json", "webhook-id": webhook_id,
                          "webhook-timestamp": str(ts),
                          "webhook-signature": signature.sign(secret, webhook_id, ts, body)},
                 body=base64.b64encode(body).decode())
    event.pop("queryStringParameters", None)
    event["requestContext"]["routeKey"] = f"POST {path}"
    event["requestContext"]["http"].update(method="POST", path=path)
    return event


def naive_handler(sm: Any, ddb: Any, env: dict[str, str], event: dict[str, Any]) -> int:
    """Reads both secrets on every delivery, then puts history and latest unconditionally: duplicates
    cost as much as new events and a late event overwrites a newer one."""
    from gdpr_core.pseudonym import Pseudonymizer

    secrets = json.loads(sm.get_secret_value(SecretId=env["CONSENTHUB_SIGNING_SECRET_ARN"])["SecretString"])
    body = base64.b64decode(event["body"])
    try:
        webhook_id = signature.verify_headers([secrets["current"], secrets["previous"]], event["headers"], body)
    except signature.SignatureError:
        return 401
    doc = json.loads(body)
    key = sm.get_secret_value(SecretId=env["PSEUDONYM_KEY_SECRET_ARN"])["SecretString"]
    pk = "subject#" + Pseudonymizer(key).email(doc["data"]["email"])
    consents = {c["key"]: {"BOOL": bool(c["granted"])} for c in doc["data"]["consents"]}
    ddb.put_item(TableName=env["CONSENT_TABLE"], Item={"pk": {"S": pk}, "sk": {"S": "delivery#" + webhook_id},
                                                      "occurredAt": {"S": doc["occurredAt"]}})
    ddb.put_item(TableName=env["CONSENT_TABLE"], Item={"pk": {"S": pk}, "sk": {"S": "latest"},
                                                      "consents": {"M": consents}})
    return 200


def bench_webhook(deliveries: int) -> dict[str, Any]:
    import boto3

    from tests.support import aws_events, stacks
    from tests.support.moto_world import load_handler

    sample = aws_events.load("http-api-proxy.json")
    started = time.perf_counter()
    with moto_at(NOW):
        ddb = boto3.client("dynamodb", region_name=REGION)
        sm = boto3.client("secretsmanager", region_name=REGION)
        table = stacks.create_consent_table(ddb, "bench-consent")
        env = {
            "CONSENT_TABLE": table,
            "CONSENTHUB_SIGNING_SECRET_ARN": sm.create_secret(
                Name="bench-signing", SecretString=json.dumps({"current": CURRENT, "previous": PREVIOUS}))["ARN"],
            "PSEUDONYM_KEY_SECRET_ARN": sm.create_secret(
                Name="bench-pseudonym", SecretString=PSEUDONYM_KEY)["ARN"],
            "POWERTOOLS_SERVICE_NAME": "bench-consent", "POWERTOOLS_METRICS_NAMESPACE": "GdprComplianceBench",
            "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_TRACE_DISABLED": "true",
        }
        with _environment(env), _quiet_metrics():
            app = load_handler(HANDLER, f"bench_webhook_app_{uuid.uuid4().hex}")
            restore_logs = _silence(app)
            refresh_interval = getattr(app, "SECRET_REFRESH_INTERVAL_SECONDS", None)
            statuses: dict[str, list[int]] = {"valid": [], "duplicate": [], "forged": []}
            # Warm: caches both secrets (not counted), as any delivery after a cold start does.
            app.lambda_handler(_event(sample, "msg_warm", _body(10**6), CURRENT), Context())
            events = [(f"msg_{i}", _body(i)) for i in range(deliveries)]
            tallies = {}
            for kind in ("valid", "duplicate", "forged"):
                secret = FORGED if kind == "forged" else CURRENT
                prepared = [_event(sample, wid, body, secret) for wid, body in events]
                if kind == "forged":
                    # The first bad signature may re-read the signing secret (rotation), at most
                    # once per interval; counted on its own, the flood after it is what is measured.
                    with meter.measure() as first_forged:
                        app.lambda_handler(_event(sample, "msg_forged_first", _body(1), FORGED), Context())
                with meter.measure() as tally:
                    for event in prepared:
                        statuses[kind].append(app.lambda_handler(event, Context())["statusCode"])
                tallies[kind] = tally
            restore_logs()
        naive_tallies = {}
        naive_statuses: dict[str, list[int]] = {"valid": [], "duplicate": [], "forged": []}
        naive_events = [(f"naive_{i}", _body(i)) for i in range(deliveries)]
        for kind in ("valid", "duplicate", "forged"):
            secret = FORGED if kind == "forged" else CURRENT
            prepared = [_event(sample, wid, body, secret) for wid, body in naive_events]
            with meter.measure() as tally:
                for event in prepared:
                    naive_statuses[kind].append(naive_handler(sm, ddb, env, event))
            naive_tallies[kind] = tally

    def row(tally: meter.Tally, codes: list[int]) -> dict[str, Any]:
        return {
            "awsCallsPerDelivery": round(tally.aws_calls / deliveries, 3),
            "dynamodbWritesPerDelivery": round(tally.ddb_writes / deliveries, 3),
            "cpuMillisecondsPerDelivery": round(tally.cpu_seconds / deliveries * 1000, 3),
            "statusCodes": sorted(set(codes)),
            "calls": tally.as_dict()["calls"],
        }

    return {
        "deliveries": deliveries,
        "ours": {k: row(tallies[k], statuses[k]) for k in tallies},
        "oursFirstForgedCalls": first_forged.as_dict()["calls"],
        "secretRefreshIntervalSeconds": refresh_interval,
        "naive": {k: row(naive_tallies[k], naive_statuses[k]) for k in naive_tallies},
        "seconds": round(time.perf_counter() - started, 1),
    }
