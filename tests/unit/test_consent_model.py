"""Webhook body validation, version order and locale rules, no AWS."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from gdpr_core.consent.model import (
    ERASED,
    UPDATED,
    ValidationError,
    make_version,
    parse_event,
    requires_opt_in,
)

EMAIL = "Person.Model@Example.com"


def body(**overrides) -> bytes:
    doc = {
        "type": UPDATED,
        "occurredAt": "2026-11-30T10:15:02.120Z",
        "data": {
            "email": EMAIL,
            "accountId": "5be24ad8b1653240376955d2",
            "locale": "de",
            "consents": [{"key": "generalMarketingOptIn", "granted": False, "displayedText": "Send me news"}],
            "formUrl": "https://example.com/preferences",
        },
    }
    data = overrides.pop("data", {})
    doc.update(overrides)
    doc["data"].update(data)
    return json.dumps(doc).encode()


def reason_for(raw: bytes | str, webhook_id: str = "msg_1") -> str:
    with pytest.raises(ValidationError) as caught:
        parse_event(raw, webhook_id)
    assert EMAIL.lower() not in str(caught.value).lower()
    return caught.value.reason


def test_updated_event_is_parsed_and_normalised():
    event = parse_event(body(), "msg_1")
    assert event.type == UPDATED
    assert event.occurred_at == datetime(2026, 11, 30, 10, 15, 2, 120000, tzinfo=UTC)
    assert event.locale == "DE"
    assert event.account_id == "5be24ad8b1653240376955d2"
    assert event.consents[0].key == "generalMarketingOptIn"
    assert event.consents[0].granted is False
    assert event.consents[0].displayed_text == "Send me news"
    assert event.form_url == "https://example.com/preferences"
    assert event.version == "2026-11-30T10:15:02.120000Z|msg_1"


def test_erased_needs_only_the_email():
    raw = json.dumps({"type": ERASED, "occurredAt": "2026-11-30T10:15:02Z", "data": {"email": EMAIL}})
    event = parse_event(raw, "msg_9")
    assert (event.type, event.consents, event.locale) == (ERASED, (), None)


def test_optional_fields_may_be_absent_and_unknown_locale_is_kept():
    raw = json.dumps(
        {
            "type": UPDATED,
            "occurredAt": "2026-11-30T10:15:02Z",
            "data": {"email": EMAIL, "locale": "UNKNOWN", "consents": [{"key": "k", "granted": True}]},
        }
    )
    event = parse_event(raw, "msg_1")
    assert (event.account_id, event.form_url, event.consents[0].displayed_text) == (None, None, None)
    assert event.locale == "UNKNOWN"


def test_version_order_is_the_spec_order():
    early = datetime(2026, 1, 1, 9, 59, 59, 999999, tzinfo=UTC)
    late = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
    assert make_version(early, "zzz") < make_version(late, "aaa")  # newer occurredAt wins
    assert make_version(late, "msg_b") > make_version(late, "msg_a")  # ties: greater webhook id
    # Offsets are normalised to UTC, so the same instant compares equal whatever the sender wrote.
    offset = parse_event(body(occurredAt="2026-11-30T11:15:02.12+01:00"), "msg_1")
    assert offset.version == parse_event(body(), "msg_1").version
    # Fixed width: whole seconds still carry microseconds.
    assert make_version(late, "x") == "2026-01-01T10:00:00.000000Z|x"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[]", "schema:body"),
        (body(type=None), "schema:type"),
        (body(type="consent.deleted"), "unknown_type"),
        (body(occurredAt="yesterday"), "schema:occurredAt"),
        (body(occurredAt="2026-11-30T10:15:02"), "schema:occurredAt"),
        (body(data={"email": None}), "schema:data.email"),
        (body(data={"email": "no-at-sign"}), "schema:data.email"),
        (body(data={"email": "a b@example.com"}), "schema:data.email"),
        (body(data={"accountId": "unknown"}), "schema:data.accountId"),
        (body(data={"accountId": "bad id!"}), "schema:data.accountId"),
        (body(data={"locale": "DEU"}), "schema:data.locale"),
        (body(data={"locale": None}), "schema:data.locale"),
        (body(data={"consents": []}), "schema:data.consents"),
        (body(data={"consents": ["x"]}), "schema:data.consents"),
        (body(data={"consents": [{"key": "", "granted": True}]}), "schema:data.consents.key"),
        (body(data={"consents": [{"key": "k", "granted": "yes"}]}), "schema:data.consents.granted"),
        (body(data={"consents": [{"key": "k", "granted": True, "displayedText": 5}]}),
         "schema:data.consents.displayedText"),
        (body(data={"consents": [{"key": "k", "granted": True}, {"key": "k", "granted": False}]}),
         "schema:data.consents.key"),
        (body(data={"formUrl": 7}), "schema:data.formUrl"),
        (json.dumps({"type": UPDATED, "occurredAt": "2026-11-30T10:15:02Z"}), "schema:data"),
    ],
)  # fmt: skip
def test_rejections_carry_a_machine_readable_reason(raw, expected):
    assert reason_for(raw) == expected


@pytest.mark.parametrize("webhook_id", ["", "has space", "x" * 257, "tab\t"])
def test_webhook_id_must_be_a_bounded_visible_token(webhook_id):
    assert reason_for(body(), webhook_id) == "schema:webhook-id"


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("UNKNOWN", True), (None, True), ("DE", True), ("fr", True), ("GB", True), ("CH", True), ("NO", True),
     ("IS", True), ("US", False), ("AU", False), ("JP", False)],
)  # fmt: skip
def test_requires_opt_in(locale, expected):
    assert requires_opt_in(locale) is expected


def test_deeply_nested_json_is_a_bad_request_not_a_crash():
    # Regression: ~10,000 nested arrays (20 KB, under the 64 KiB limit) raised RecursionError,
    # which the handler answered 500, so the sender would have retried it for days.
    body = b'{"type":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with pytest.raises(ValidationError) as error:
        parse_event(body, "msg_deep")
    assert error.value.reason == "invalid_json"
