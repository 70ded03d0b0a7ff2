"""Captured consent to ConsentHub on moto: capture.enqueue → ConsentPushQueue (from the template, with
its redrive policy) → the push handler → the ConsentHub emulator on 127.0.0.1, as SQS's poller would."""

from __future__ import annotations

import base64
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.client
import pytest

from gdpr_core.consent import capture, hub
from gdpr_core.consent.model import ValidationError, parse_event
from gdpr_core.consent.store import ConsentStore
from gdpr_core.pseudonym import Pseudonymizer
from gdpr_sandbox.consenthub_emulator import ConsentHubEmulator
from gdpr_sandbox.event_sources import sqs_event
from tests.support import moto_world, stacks

REGION = "eu-west-1"
REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "functions" / "consent_push" / "app.py"
PSEUDONYM_KEY = "push-test-pseudonym-key-0123456789"
EMAIL = "Marie.Curie@Example.org"
ACCOUNT = "5be24ad8b1653240376955d2"
HUB_USER, HUB_TOKEN = "vendor-bot@example.net", "hub-token-0123456789"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TEXT = "Yes, send me news about the product (you can unsubscribe at any time)."
PSEUDONYMS = Pseudonymizer(PSEUDONYM_KEY)
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")


class LambdaContext(moto_world.LambdaContext):
    function_name = "gdpr-consent-push"
    region = REGION
    aws_request_id = "5e1d2c3b-0000-4000-8000-000000000001"
    remaining_ms = 30_000


@pytest.fixture
def world(monkeypatch, capsys):
    moto_world.fake_aws_env(monkeypatch, REGION)
    emulator = ConsentHubEmulator(email=HUB_USER, api_token=HUB_TOKEN).start()
    try:
        with moto_world.mocked_aws():
            ddb, sqs = boto3.client("dynamodb", region_name=REGION), boto3.client("sqs", region_name=REGION)
            sm = boto3.client("secretsmanager", region_name=REGION)
            stacks.create_consent_table(ddb, "consent")
            queues = stacks.create_queues(sqs, prefix="t-")
            names = {
                "ConsentTable": "consent",
                "ConsentPushQueue": queues["ConsentPushQueue"],
                "ConsentHubApiUrl": emulator.url,
                "ConsentHubApiSecret": sm.create_secret(
                    Name="hub", SecretString=json.dumps({"email": HUB_USER, "apiToken": HUB_TOKEN}))["ARN"],
                "PseudonymKeySecret": sm.create_secret(Name="pseudonym", SecretString=PSEUDONYM_KEY)["ARN"],
            }
            env = stacks.function_environment("ConsentPushFunction", names)
            env.update(PSEUDONYM_KEY_SECRET_ARN=names["PseudonymKeySecret"], POWERTOOLS_TRACE_DISABLED="true",
                       CONSENTHUB_API_SECRET_ARN=names["ConsentHubApiSecret"], POWERTOOLS_LOG_LEVEL="DEBUG",
                       POWERTOOLS_METRICS_NAMESPACE="GdprComplianceTest")
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            with moto_world.manual_clock(NOW):
                app = moto_world.load_handler(HANDLER)
                # Put back at stderr, not the saved stream: that may be a capture pytest has closed.
                with moto_world.redirect_logs(app.logger, io.StringIO(), restore=sys.__stderr__) as logs:
                    yield SimpleNamespace(ddb=ddb, sqs=sqs, sm=sm, env=env, app=app, logs=logs, emulator=emulator,
                                          queue=queues["ConsentPushQueue"], dlq=queues["ConsentPushDeadLetterQueue"],
                                          store=ConsentStore("consent", PSEUDONYMS, client=ddb), capsys=capsys,
                                          secret_arn=names["ConsentHubApiSecret"])
    finally:
        emulator.stop()


def enqueue(w, **overrides) -> str:
    kwargs: dict[str, Any] = {
        "email": EMAIL, "locale": "de",
        "consents": [{"key": "generalMarketingOptIn", "granted": True, "displayedText": TEXT}],
        "form_url": "https://vendor.example.com/signup", "provider_id": ACCOUNT,
    }
    kwargs.update(overrides)
    return capture.enqueue(**kwargs, queue_url=w.queue, sqs=w.sqs)


def drain(w, rounds: int = 20) -> list[dict]:
    """Lambda's SQS poller, in accelerated time: a failed message is visible again at once."""
    results = []
    for _ in range(rounds):
        got = w.sqs.receive_message(QueueUrl=w.queue, MaxNumberOfMessages=10, AttributeNames=["All"],
                                    MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            return results
        result = w.app.lambda_handler(sqs_event(got, "arn:aws:sqs:eu-west-1:123456789012:t-ConsentPushQueue",
                                                REGION), LambdaContext())
        results.append(result)
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for m in got:
            if m["MessageId"] in failed:
                w.sqs.change_message_visibility(QueueUrl=w.queue, ReceiptHandle=m["ReceiptHandle"],
                                                VisibilityTimeout=0)
            else:
                w.sqs.delete_message(QueueUrl=w.queue, ReceiptHandle=m["ReceiptHandle"])
    raise AssertionError("queue did not drain")


def push_item(w, push_id: str, email: str = EMAIL) -> dict:
    item = w.ddb.get_item(TableName="consent", Key={"pk": {"S": "subject#" + PSEUDONYMS.email(email)},
                                                     "sk": {"S": "push#" + push_id}}).get("Item")
    return {k: boto3.dynamodb.types.TypeDeserializer().deserialize(v) for k, v in (item or {}).items()}


def dlq_bodies(w) -> list[dict]:
    got = w.sqs.receive_message(QueueUrl=w.dlq, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in got]


def emitted_metrics(w) -> list[str]:
    names = []
    for line in w.capsys.readouterr().out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        for directive in doc.get("_aws", {}).get("CloudWatchMetrics", []):
            names += [m["Name"] for m in directive["Metrics"] for _ in range(len(doc.get(m["Name"], [1])))]
    return names


def visibility_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = botocore.client.BaseClient._make_api_call

    def spy(self, operation_name, api_params):
        if operation_name == "ChangeMessageVisibility" and api_params.get("VisibilityTimeout"):
            calls.append(api_params["VisibilityTimeout"])
        return original(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)
    return calls


# ---------------------------------------------------------------------------- the happy path
def test_captured_consent_reaches_consenthub_with_its_body_and_basic_auth(world):
    push_id = enqueue(world)
    drain(world)
    [request] = world.emulator.requests
    assert request["path"] == "/consent-hub/consent" and request["status"] == 202
    assert request["authOk"] is True and request["user"] == HUB_USER
    assert request["body"] == {
        "email": EMAIL.strip(), "locale": "DE",
        "consents": [{"key": "generalMarketingOptIn", "granted": True, "displayedText": TEXT}],
        "formUrl": "https://vendor.example.com/signup", "providerId": ACCOUNT,
    }
    item = push_item(world, push_id)
    assert item["outcome"] == "accepted" and item["attempts"] == 1 and item["lastStatus"] == "202"
    assert item["displayedText"] == {"generalMarketingOptIn": TEXT}  # the proof, keyed by the email hash
    assert item["accountRef"] == PSEUDONYMS.account(ACCOUNT)
    dump = json.dumps(world.ddb.scan(TableName="consent")["Items"]).lower()
    assert EMAIL.lower() not in dump and ACCOUNT not in dump
    assert dlq_bodies(world) == []
    # consent-config/get answers what was pushed, for the same normalised email.
    client = hub.ConsentHubClient(world.emulator.url, hub.Credentials(HUB_USER, HUB_TOKEN))
    assert client.config_get(email=" marie.curie@example.org") == {
        "locale": "DE", "localeRequiresMarketingCommunicationOptIn": True,
        "hasUserMadeChoiceOnMarketingCommunicationOptIn": True, "usersChoiceOnMarketingCommunicationOptIn": True,
    }
    assert client.config_get(user_ip="192.0.2.1")["locale"] == "UNKNOWN"


def test_a_redelivered_accepted_push_is_not_posted_again(world):
    message = capture.build(EMAIL, "DE", [{"key": "k", "granted": False, "displayedText": TEXT}]).to_message()
    world.sqs.send_message(QueueUrl=world.queue, MessageBody=message)
    drain(world)
    world.sqs.send_message(QueueUrl=world.queue, MessageBody=message)  # SQS's at-least-once
    drain(world)
    assert len(world.emulator.requests) == 1
    assert push_item(world, json.loads(message)["pushId"])["outcome"] == "accepted"


# ---------------------------------------------------------------------------- failures
def test_a_permanent_400_is_posted_once_and_ends_in_the_dlq(world, monkeypatch):
    world.emulator.configure({"failures": {"status": 400, "count": 1}})
    delays = visibility_calls(monkeypatch)
    push_id = enqueue(world)
    results = drain(world)
    assert len(results) == 5  # five receives, then SQS's redrive moves it
    assert [r["status"] for r in world.emulator.requests] == [400]  # later receives do not post again
    assert [b["pushId"] for b in dlq_bodies(world)] == [push_id]
    item = push_item(world, push_id)
    assert item["outcome"] == "rejected" and item["lastStatus"] == "400"
    assert delays == []  # no back-off for what cannot get better
    assert emitted_metrics(world).count("ConsentPushFailed") == 1
    log = world.logs.getvalue()
    assert '"reason":"http_400"' in log and '"permanent":true' in log


def test_a_503_is_retried_with_back_off_then_succeeds(world, monkeypatch):
    world.emulator.configure({"failures": {"status": 503, "count": 2}})
    delays = visibility_calls(monkeypatch)
    push_id = enqueue(world)
    drain(world)
    assert [r["status"] for r in world.emulator.requests] == [503, 503, 202]
    assert delays == [30, 60]  # doubling back-off set on the failed message
    item = push_item(world, push_id)
    assert item["outcome"] == "accepted" and item["attempts"] == 3
    assert dlq_bodies(world) == []
    assert "ConsentPushFailed" not in emitted_metrics(world)


def test_429_waits_at_least_retry_after_and_exhausted_retries_end_in_the_dlq(world, monkeypatch):
    world.emulator.configure({"failures": {"status": 429, "count": 10, "retryAfter": 600}})
    delays = visibility_calls(monkeypatch)
    push_id = enqueue(world)
    drain(world)
    assert [r["status"] for r in world.emulator.requests] == [429] * 5
    assert delays == [600, 600, 600, 600, 600]
    assert [b["pushId"] for b in dlq_bodies(world)] == [push_id]
    assert push_item(world, push_id)["outcome"] == "pending"
    assert emitted_metrics(world).count("ConsentPushFailed") == 1  # the last receive gave up


def test_an_unreachable_consenthub_is_retried(world, monkeypatch):
    world.emulator.stop()  # connection refused, like a network failure
    push_id = enqueue(world)
    got = world.sqs.receive_message(QueueUrl=world.queue, AttributeNames=["All"])["Messages"]
    result = world.app.lambda_handler(sqs_event(got, "arn:aws:sqs:eu-west-1:1:q", REGION), LambdaContext())
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == [got[0]["MessageId"]]
    assert push_item(world, push_id)["lastStatus"] == "connection"


def test_wrong_credentials_are_a_rejection(world):
    world.sm.put_secret_value(SecretId=world.secret_arn,
                              SecretString=json.dumps({"email": HUB_USER, "apiToken": "wrong"}))
    enqueue(world)
    drain(world)
    assert [(r["status"], r["authOk"]) for r in world.emulator.requests] == [(401, False)]
    assert len(dlq_bodies(world)) == 1


def test_an_empty_credentials_secret_posts_nothing_and_retries(world):
    world.sm.put_secret_value(SecretId=world.secret_arn, SecretString=json.dumps({"email": "", "apiToken": ""}))
    enqueue(world)
    drain(world)
    assert world.emulator.requests == []
    assert len(dlq_bodies(world)) == 1
    assert "ConsentHub API secret needs non-empty email and apiToken" in world.logs.getvalue()


def test_a_foreign_message_fails_into_the_dlq(world):
    world.sqs.send_message(QueueUrl=world.queue, MessageBody='{"email": "x@example.com"}')
    drain(world)
    assert world.emulator.requests == [] and len(dlq_bodies(world)) == 1
    assert '"reason":"schema:message"' in world.logs.getvalue()


# ---------------------------------------------------------------------------- erasure wins
def test_a_capture_older_than_an_erasure_is_not_pushed_and_keeps_no_payload(world):
    push_id = enqueue(world)  # captured at NOW
    erasure = json.dumps({"type": "consent.erased", "occurredAt": "2026-12-01T09:05:00Z",
                          "data": {"email": EMAIL.lower()}}).encode()
    assert world.store.apply(parse_event(erasure, "msg_erase")) == "applied"
    drain(world)
    assert world.emulator.requests == []
    item = push_item(world, push_id)
    assert item["outcome"] == "superseded"
    assert not {"displayedText", "locale", "formUrl", "consents"} & set(item)


def test_an_erasure_after_the_push_strips_its_payload_and_account_closure_deletes_it(world):
    push_id = enqueue(world)
    drain(world)
    erasure = json.dumps({"type": "consent.erased", "occurredAt": "2026-12-01T09:05:00Z",
                          "data": {"email": EMAIL}}).encode()
    world.store.apply(parse_event(erasure, "msg_erase"))
    item = push_item(world, push_id)
    assert item["outcome"] == "accepted" and "displayedText" not in item and "locale" not in item
    assert world.store.erase_account(PSEUDONYMS.account(ACCOUNT), NOW) == 1  # found through the push
    assert push_item(world, push_id) == {}


# ---------------------------------------------------------------------------- the producer side
@pytest.mark.parametrize(("overrides", "reason"), [
    ({"email": "not an email"}, "schema:email"),
    ({"locale": "Germany"}, "schema:locale"),
    ({"consents": []}, "schema:consents"),
    ({"consents": [{"key": "k", "granted": "yes", "displayedText": TEXT}]}, "schema:consents.granted"),
    ({"consents": [{"key": "k", "granted": True}]}, "schema:consents.displayedText"),
    ({"consents": [{"key": "k", "granted": True, "displayedText": " "}]}, "schema:consents.displayedText"),
    ({"form_url": 7}, "schema:formUrl"),
])
def test_enqueue_refuses_bad_captures_with_a_reason_and_queues_nothing(world, overrides, reason):
    with pytest.raises(ValidationError) as caught:
        enqueue(world, **overrides)
    assert caught.value.reason == reason
    assert EMAIL not in str(caught.value)
    assert world.sqs.receive_message(QueueUrl=world.queue).get("Messages") is None


def test_logs_and_metrics_hold_no_personal_data(world):
    world.emulator.configure({"failures": {"status": 503, "count": 1}})
    enqueue(world)
    enqueue(world, email="other.person@example.com", provider_id=None)
    world.sqs.send_message(QueueUrl=world.queue, MessageBody="not json " + EMAIL)
    drain(world)
    captured = world.logs.getvalue() + world.capsys.readouterr().out
    assert "consent push done" in captured and "consent push failed" in captured  # the capture works
    for needle in (EMAIL, EMAIL.lower(), "other.person@example.com", ACCOUNT, TEXT, HUB_TOKEN,
                   base64.b64encode(f"{HUB_USER}:{HUB_TOKEN}".encode()).decode()):
        assert needle.lower() not in captured.lower(), needle
