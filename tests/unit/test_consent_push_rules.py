"""The push rules without AWS: message round trip, ConsentHub answer classification, back-off."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from gdpr_core.consent import capture, hub
from gdpr_core.consent.model import ValidationError
from gdpr_core.consent.push import account_ref, backoff_seconds
from gdpr_core.pseudonym import Pseudonymizer

WHEN = datetime(2026, 12, 1, 9, 0, 0, 123000, tzinfo=UTC)
CONSENT = {"key": "generalMarketingOptIn", "granted": True, "displayedText": "Yes please"}


def test_a_capture_survives_the_queue_unchanged():
    request = capture.build(" Ada@Example.com ", "uk", [CONSENT], "https://f.example/x", "site-user-7",
                            push_id="abc", captured_at=WHEN)
    again = capture.parse_message(request.to_message())
    assert again == request
    assert again.email == "Ada@Example.com" and again.locale == "UK"
    assert again.version == "2026-12-01T09:00:00.123000Z|push#abc"


@pytest.mark.parametrize(("body", "reason"), [
    ("nope", "invalid_json"),
    ("[" * 100_000 + "]" * 100_000, "invalid_json"),
    (json.dumps({"schema": 2}), "schema:message"),
    (json.dumps({"schema": 1, "capturedAt": "later"}), "schema:capturedAt"),
])
def test_foreign_messages_are_refused_with_a_reason(body, reason):
    with pytest.raises(ValidationError) as caught:
        capture.parse_message(body)
    assert caught.value.reason == reason


def test_duplicate_keys_and_bad_push_ids_are_refused():
    with pytest.raises(ValidationError, match="schema:consents.key"):
        capture.build("a@example.com", "DE", [CONSENT, CONSENT])
    with pytest.raises(ValidationError, match="schema:pushId"):
        capture.build("a@example.com", "DE", [CONSENT], push_id="../x")


def test_enqueue_needs_a_queue():
    with pytest.raises(ValueError, match="CONSENT_PUSH_QUEUE_URL"):
        capture.enqueue("a@example.com", "DE", [CONSENT], sqs=object(), queue_url="")


@pytest.mark.parametrize(("receives", "retry_after", "expected"), [
    (1, None, 30), (2, None, 60), (3, None, 120), (5, None, 480), (9, None, 900), (1, 600, 600), (4, 5, 240),
])
def test_backoff_doubles_is_capped_and_honours_retry_after(receives, retry_after, expected):
    assert backoff_seconds(receives, retry_after) == expected


def test_only_atlassian_account_ids_link_a_capture_to_an_account():
    pseudonyms = Pseudonymizer("k" * 32)
    assert account_ref(pseudonyms, "5be24ad8b1653240376955d2") == pseudonyms.account("5be24ad8b1653240376955d2")
    assert account_ref(pseudonyms, None) is None
    assert account_ref(pseudonyms, "unknown") is None


class FakeSession:
    def __init__(self, status, headers=None, payload=None):
        self.answer = SimpleNamespace(status_code=status, headers=headers or {}, json=lambda: payload)
        self.calls = []

    def post(self, url, **kwargs):
        self.calls.append((url, kwargs))
        return self.answer


CREDS = hub.Credentials("bot@example.net", "t0ken")


@pytest.mark.parametrize(("status", "error", "reason"), [
    (400, hub.PushRejected, "http_400"), (401, hub.PushRejected, "http_401"), (404, hub.PushRejected, "http_404"),
    (429, hub.PushUnavailable, "http_429"), (500, hub.PushUnavailable, "http_500"),
    (503, hub.PushUnavailable, "http_503"), (200, hub.PushUnavailable, "bad_response"),
])
def test_consenthub_answers_are_classified(status, error, reason):
    client = hub.ConsentHubClient("https://hub.example/", CREDS, session=FakeSession(status, {"Retry-After": "7"}))
    with pytest.raises(error) as caught:
        client.push("a@example.com", "DE", [CONSENT])
    assert caught.value.reason == reason
    assert "a@example.com" not in str(caught.value)
    if status == 429:
        assert caught.value.retry_after == 7


def test_push_sends_the_documented_body_with_basic_auth():
    session = FakeSession(202)
    client = hub.ConsentHubClient("https://hub.example/", CREDS, session=session)
    assert client.push("a@example.com", "DE", [CONSENT], provider_id="p1") == 202
    [(url, kwargs)] = session.calls
    assert url == "https://hub.example/consent-hub/consent"
    assert kwargs["auth"] == ("bot@example.net", "t0ken")
    assert json.loads(kwargs["data"]) == {"email": "a@example.com", "locale": "DE", "consents": [CONSENT],
                                          "providerId": "p1"}
    assert "t0ken" not in repr(client) and "t0ken" not in repr(CREDS)


def test_config_get_needs_an_email_or_an_ip_and_checks_the_answer():
    with pytest.raises(ValueError):
        hub.ConsentHubClient("https://hub.example", CREDS, session=FakeSession(200)).config_get()
    with pytest.raises(hub.PushUnavailable):
        hub.ConsentHubClient("https://hub.example", CREDS, session=FakeSession(200, payload=[])).config_get("a@b.io")
    session = FakeSession(200, payload={"locale": "US"})
    assert hub.ConsentHubClient("https://hub.example", CREDS, session=session).config_get(user_ip="192.0.2.9") == {
        "locale": "US"}
    assert json.loads(session.calls[0][1]["data"]) == {"userIp": "192.0.2.9"}


def test_an_unfilled_secret_is_a_configuration_error_without_values():
    with pytest.raises(ValueError, match="non-empty email and apiToken"):
        hub.Credentials.from_secret({"email": "", "apiToken": ""})
