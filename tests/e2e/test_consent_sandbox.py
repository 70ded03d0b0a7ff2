"""Consent on the sandbox's own HTTP endpoint (the sandbox runs in a subprocess, as with `make up`):
racing deliveries, the issue's done-when set of never-seen deliveries, the IAM-authorised lookup,
and captured consent pushed through the real queue and function to the ConsentHub emulator."""

from __future__ import annotations

import base64
import json
import random
import secrets
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gdpr_core.consent import capture, signature
from gdpr_core.consent.model import requires_opt_in

from .conftest import run

KEY = "generalMarketingOptIn"
NEWS = "productNews"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    state = tmp_path_factory.mktemp("consent-sandbox")
    env = {"GDPR_SANDBOX_DIR": str(state), "CONSENTHUB_API_URL": ""}
    run([sys.executable, "-m", "gdpr_sandbox", "up"], env=env, timeout=180)
    endpoints = json.loads((state / "endpoints.json").read_text())
    deployment = json.loads((state / "deployment.json").read_text())
    try:
        yield Box(state, endpoints, deployment)
    finally:
        run([sys.executable, "-m", "gdpr_sandbox", "down"], env=env, timeout=60)


class Box:
    def __init__(self, state, endpoints, deployment):
        self.state = state
        self.endpoints = endpoints
        self.deployment = deployment
        self.base = endpoints["webhook_base_url"]
        self.secret = endpoints["webhook_signing_secret"]
        self.emails: set[str] = set()

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoints["aws_endpoint_url"],
                            region_name=self.endpoints["region"], aws_access_key_id="sandbox",
                            aws_secret_access_key="sandbox")  # noqa: S106 - the sandbox's fake credentials

    def email(self, label: str) -> str:
        value = f"{label}.{uuid.uuid4().hex[:10]}@example.com"
        self.emails.add(value)
        return value

    def post(self, body: bytes, headers: dict[str, str], path: str = "/consenthub/events") -> requests.Response:
        return requests.post(self.base + path, data=body, headers=headers, timeout=30)

    def lookup(self, email: str, signed: bool = True) -> requests.Response:
        body = json.dumps({"email": email}).encode()
        headers = {"content-type": "application/json"}
        if signed:
            request = AWSRequest(method="POST", url=self.base + "/consent/lookup", data=body, headers=headers)
            SigV4Auth(Credentials("sandbox", "sandbox"), "execute-api", self.endpoints["region"]).add_auth(request)
            headers = dict(request.headers.items())
        return self.post(body, headers, "/consent/lookup")

    def state_of(self, email: str) -> dict:
        answer = self.lookup(email)
        assert answer.status_code == 200, answer.text
        return answer.json()["consents"]

    def function_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.state / "logs").glob("*.log"))


# ---------------------------------------------------------------------------- deliveries, signed per the spec
def ts(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class Delivery:
    def __init__(self, doc: dict, webhook_id: str | None = None):
        self.doc = doc
        self.id = webhook_id or "msg_" + uuid.uuid4().hex
        self.body = json.dumps(doc).encode()

    def headers(self, *secrets_: str, timestamp: int | None = None, content_type: str = "application/json") -> dict:
        stamp = int(time.time()) if timestamp is None else timestamp
        return {
            "content-type": content_type,
            "webhook-id": self.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": " ".join(signature.sign(s, self.id, stamp, self.body) for s in secrets_),
        }


def updated(email: str, when: datetime, granted: bool, key: str = KEY, locale: str = "DE", **data) -> dict:
    consent = {"key": key, "granted": granted, "displayedText": f"Marketing e-mails ({key}), text v{when.second}"}
    return {"type": "consent.updated", "occurredAt": ts(when),
            "data": {"email": email, "locale": locale, "consents": [consent], **data}}


def erased(email: str, when: datetime) -> dict:
    return {"type": "consent.erased", "occurredAt": ts(when), "data": {"email": email}}


def expected_state(genuine: list[Delivery]) -> dict[str, dict]:
    """Applies the genuine deliveries in the spec's order (occurredAt, then webhook id): the reference."""
    state: dict[str, dict] = {}
    for d in sorted({d.id: d for d in genuine}.values(), key=lambda d: (d.doc["occurredAt"], d.id)):
        email = d.doc["data"]["email"].strip().lower()
        person = state.setdefault(email, {})
        if d.doc["type"] == "consent.erased":
            person.clear()
            continue
        for consent in d.doc["data"]["consents"]:
            locale = d.doc["data"]["locale"].upper()
            person[consent["key"]] = {"granted": consent["granted"], "occurredAt": d.doc["occurredAt"],
                                      "locale": locale, "requiresOptIn": requires_opt_in(locale)}
    return state


def post_all_at_once(box: Box, jobs: list[tuple[bytes, dict]], threads: int = 32) -> list[requests.Response]:
    gate = threading.Barrier(min(threads, len(jobs)))

    def send(job):
        try:
            gate.wait(timeout=10)
        except threading.BrokenBarrierError:
            pass  # the last, smaller wave: go anyway
        return box.post(*job)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(send, jobs))


# ---------------------------------------------------------------------------- concurrency
def test_racing_duplicates_and_competing_deliveries_end_in_the_newest_state(sandbox):
    rng = random.Random(5)
    start = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    genuine: list[Delivery] = []
    for p in range(4):
        email = sandbox.email(f"race{p}")
        for i in range(6):  # competing: six choices for the same key, one of them newest
            genuine.append(Delivery(updated(email, start + timedelta(seconds=i * 7 + p), granted=rng.random() < .5,
                                            locale=rng.choice(["DE", "US", "UNKNOWN", "fr"]))))
        same = start + timedelta(seconds=100)  # a tie on occurredAt: the greater webhook id must win
        genuine += [Delivery(updated(email, same, granted=g, key=NEWS), f"msg_tie_{p}_{g}") for g in (True, False)]
    jobs = [(d.body, d.headers(sandbox.secret)) for d in genuine for _ in range(4)]  # every delivery 4 times
    rng.shuffle(jobs)

    answers = post_all_at_once(sandbox, jobs)

    assert [a.status_code for a in answers] == [200] * len(jobs), {a.status_code for a in answers}
    outcomes = [a.json()["outcome"] for a in answers]
    assert set(outcomes) <= {"applied", "duplicate", "stale"} and "duplicate" in outcomes
    expected = expected_state(genuine)
    for email in {d.doc["data"]["email"] for d in genuine}:
        assert sandbox.state_of(email) == expected[email], email
        assert expected[email][NEWS]["granted"] is True  # "msg_tie_…_True" > "msg_tie_…_False"


# ---------------------------------------------------------------------------- the lookup route's IAM auth
def test_lookup_needs_sigv4_and_answers_the_state(sandbox):
    email = sandbox.email("lookup")
    d = Delivery(updated(email, datetime(2026, 11, 30, 9, 0, tzinfo=UTC), granted=True, locale="US"))
    assert sandbox.post(d.body, d.headers(sandbox.secret)).status_code == 200
    for headers in ({}, {"authorization": "Bearer x"}, {"authorization": "Basic eDp5"}):
        unsigned = sandbox.post(json.dumps({"email": email}).encode(), {"content-type": "application/json", **headers},
                                "/consent/lookup")
        assert unsigned.status_code == 403 and unsigned.json() == {"message": "Forbidden"}
        assert email not in unsigned.text
    assert sandbox.state_of(email.upper()) == {KEY: {"granted": True, "occurredAt": "2026-11-30T09:00:00.000Z",
                                                     "locale": "US", "requiresOptIn": False}}
    # The webhook route stays open to ConsentHub (its HMAC is the authentication).
    assert sandbox.post(b"{}", {"content-type": "application/json"}).status_code == 401


# ---------------------------------------------------------------------------- done when
def test_never_seen_deliveries_get_the_spec_statuses_and_the_lookup_the_newest_genuine_state(sandbox):
    rng = random.Random()  # deliberately unseeded: a set the project has never seen
    old_secret = sandbox.secret
    t0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC) + timedelta(seconds=rng.randrange(86_400))
    at = [t0 + timedelta(seconds=rng.randrange(3600)) for _ in range(40)]
    people = [sandbox.email(f"p{i}") for i in range(5)]
    genuine: list[Delivery] = []

    def expect(status: int, delivery: Delivery, headers: dict, body: bytes | None = None, reason: str | None = None):
        answer = sandbox.post(delivery.body if body is None else body, headers)
        assert answer.status_code == status, (status, answer.status_code, answer.text)
        if reason:
            assert answer.json() == {"error": reason}
        if status == 200:
            genuine.append(delivery)
        return answer

    # 1. Genuine updates and erasures, duplicated and in shuffled order, signed with the current secret.
    batch = []
    for i, email in enumerate(people):
        for _ in range(rng.randint(2, 5)):
            batch.append(Delivery(updated(email, rng.choice(at), rng.random() < .5, key=rng.choice([KEY, NEWS]),
                                          locale=rng.choice(["DE", "GB", "US", "BR", "UNKNOWN"]))))
        if i % 2:
            batch.append(Delivery(erased(email, rng.choice(at))))
    batch += rng.sample(batch, k=len(batch) // 2)  # redeliveries
    rng.shuffle(batch)
    for d in batch:
        outcome = expect(200, d, d.headers(old_secret)).json()["outcome"]
        assert outcome in ("applied", "duplicate", "stale")

    # 2. Rotation: ConsentHub's secret is rotated in Secrets Manager; new, old and both-entry signatures pass.
    new_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    sandbox.client("secretsmanager").put_secret_value(
        SecretId=sandbox.deployment["secrets"]["ConsentHubSigningSecret"],
        SecretString=json.dumps({"current": new_secret, "previous": old_secret}))
    for signer in ((new_secret,), (old_secret,), (old_secret, new_secret), (new_secret,)):
        d = Delivery(updated(rng.choice(people), rng.choice(at), rng.random() < .5))
        expect(200, d, d.headers(*signer))
    d = Delivery(erased(people[0], t0 - timedelta(hours=1)))  # older than everything: removes nothing
    expect(200, d, d.headers(new_secret))

    # 3. Skewed timestamps: 4 minutes off is fine, 6 minutes either way is refused.
    now = int(time.time())
    d = Delivery(updated(people[1], at[1], True))
    expect(200, d, d.headers(new_secret, timestamp=now - 240))
    for skew in (-360, 360):
        d = Delivery(updated(people[1], t0 + timedelta(days=2), False))
        expect(401, d, d.headers(new_secret, timestamp=now + skew), reason="timestamp_out_of_tolerance")

    # 4. Forgeries, each newer than anything genuine, so storing one would show in the lookup.
    late = t0 + timedelta(days=3)
    forger = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    for email in people:
        d = Delivery(updated(email, late, rng.random() < .5, locale="US"))
        expect(401, d, d.headers(forger), reason="bad_signature")
        other = Delivery(updated(email, late, True), d.id)
        expect(401, d, other.headers(new_secret), reason="bad_signature")  # a signature over another body
        expect(401, d, {**d.headers(new_secret), "webhook-id": "msg_" + uuid.uuid4().hex}, reason="bad_signature")
        stripped = {k: v for k, v in d.headers(new_secret).items() if k != "webhook-signature"}
        expect(401, d, stripped, reason="missing_headers")
        erase = Delivery(erased(email, late))
        expect(401, erase, erase.headers("a-secret-that-is-not-ours"), reason="bad_signature")

    # 5. Oversize, wrong content type, malformed bodies: the precise status and reason, nothing stored.
    d = Delivery(updated(people[2], late, False, formUrl="https://x.example/" + "a" * (64 * 1024)))
    expect(413, d, d.headers(new_secret), reason="body_too_large")
    d = Delivery(updated(people[2], late, False))
    expect(415, d, d.headers(new_secret, content_type="text/plain"), reason="unsupported_media_type")
    expect(415, d, d.headers(new_secret, content_type="application/x-www-form-urlencoded"))
    malformed = [
        (b"{not json", "invalid_json"),
        (json.dumps({**updated(people[3], late, False), "type": "consent.deleted"}).encode(), "unknown_type"),
        (json.dumps(updated(people[3], late, False) | {"data": {"locale": "DE"}}).encode(), "schema:data.email"),
        (json.dumps(updated(people[3], late, False, locale="Deutschland")).encode(), "schema:data.locale"),
        (json.dumps({**updated(people[3], late, False), "occurredAt": "yesterday"}).encode(), "schema:occurredAt"),
        (json.dumps([updated(people[3], late, False)]).encode(), "schema:body"),
    ]
    for body, reason in malformed:
        bad = Delivery({}, None)
        bad.body = body
        expect(400, bad, bad.headers(new_secret), reason=reason)

    # The lookup answers exactly the newest genuine event's state per person.
    expected = expected_state(genuine)
    for email in people:
        assert sandbox.state_of(email) == expected[email.lower()], email

    # And nothing personal reached a log line.
    logs = sandbox.function_logs()
    assert "consent delivery stored" in logs and "request rejected" in logs
    for email in sandbox.emails:
        assert email.lower() not in logs.lower()


# ---------------------------------------------------------------------------- push to ConsentHub
def _wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def test_captured_consent_is_pushed_retried_and_dead_lettered(sandbox):
    hub_url = sandbox.endpoints["consenthub_url"]
    assert hub_url and hub_url.startswith("http://127.0.0.1:")
    outputs = sandbox.endpoints["stack_outputs"]
    sqs = sandbox.client("sqs")
    text = "Send me marketing e-mails. You can withdraw at any time."

    def control(config):
        requests.post(hub_url + "/_emulator/config", json=config, timeout=10).raise_for_status()

    def hub_log():
        return requests.get(hub_url + "/_emulator/log", timeout=10).json()["requests"]

    def enqueue(email):
        return capture.enqueue(email, "at", [{"key": KEY, "granted": True, "displayedText": text}],
                               form_url="https://vendor.example.com/prefs", queue_url=outputs["ConsentPushQueueUrl"],
                               sqs=sqs)

    control({"clearLog": True, "failures": {"status": 503, "count": 2}})
    retried = sandbox.email("push-retried")
    enqueue(retried)
    log = _wait_for(lambda: [r for r in hub_log() if r["status"] == 202], "the retried push")
    assert [r["status"] for r in hub_log()] == [503, 503, 202]
    assert log[0]["authOk"] is True and log[0]["user"] == "gdpr-sandbox@example.invalid"
    assert log[0]["body"] == {"email": retried, "locale": "AT", "formUrl": "https://vendor.example.com/prefs",
                              "consents": [{"key": KEY, "granted": True, "displayedText": text}]}

    control({"clearLog": True, "failures": {"status": 400, "count": 1}})
    refused = sandbox.email("push-refused")
    push_id = enqueue(refused)

    def dead_lettered():
        got = sqs.receive_message(QueueUrl=outputs["ConsentPushDeadLetterQueueUrl"], WaitTimeSeconds=0)
        return got.get("Messages")

    [message] = _wait_for(dead_lettered, "the refused push in the DLQ")
    assert json.loads(message["Body"])["pushId"] == push_id
    assert [r["status"] for r in hub_log()] == [400]  # posted once, never again
    logs = sandbox.function_logs()
    assert '"reason":"http_400"' in logs
    assert retried not in logs and refused not in logs
