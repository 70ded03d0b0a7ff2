"""Standard Webhooks verification (spec/consent.md), no AWS."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from gdpr_core.consent.signature import SignatureError, secret_key, sign, verify, verify_headers

NOW = datetime(2026, 11, 30, 10, 15, 2, tzinfo=UTC)
TS = str(int(NOW.timestamp()))
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
PREVIOUS = "whsec_" + base64.b64encode(b"p" * 32).decode()
BODY = b'{"type": "consent.updated"}'


def reason(callable_, *args, **kwargs) -> str:
    with pytest.raises(SignatureError) as caught:
        callable_(*args, **kwargs)
    return caught.value.reason


def test_known_answer_from_the_standard_webhooks_reference():
    # The reference vector published with the Standard Webhooks libraries.
    header = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                  b'{"test": 2432232314}')  # fmt: skip
    assert header == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_round_trip_and_secret_forms():
    verify([SECRET], "msg_1", TS, sign(SECRET, "msg_1", TS, BODY), BODY, now=NOW)
    assert secret_key(SECRET) == b"k" * 32
    # Without the prefix the secret is its own UTF-8 bytes (CloudFormation-generated secrets).
    assert secret_key("plain-secret") == b"plain-secret"
    verify(["plain-secret"], "msg_1", TS, sign("plain-secret", "msg_1", TS, BODY), BODY, now=NOW)
    with pytest.raises(ValueError):
        secret_key("whsec_not base64!")


def test_one_valid_entry_among_several_is_enough_and_rotation_accepts_previous():
    forged = "v1," + base64.b64encode(b"x" * 32).decode()
    header = f"v1a,ignored {forged} {sign(PREVIOUS, 'msg_1', TS, BODY)}"
    verify([SECRET, PREVIOUS], "msg_1", TS, header, BODY, now=NOW)
    verify([SECRET, "", None], "msg_1", TS, sign(SECRET, "msg_1", TS, BODY), BODY, now=NOW)  # type: ignore[list-item]
    assert reason(verify, [SECRET], "msg_1", TS, header, BODY, now=NOW) == "bad_signature"


@pytest.mark.parametrize(
    ("webhook_id", "body", "timestamp_signed"),
    [("msg_2", BODY, TS), ("msg_1", BODY + b" ", TS), ("msg_1", BODY, str(int(TS) - 1))],
)
def test_any_change_to_id_body_or_timestamp_breaks_the_signature(webhook_id, body, timestamp_signed):
    header = sign(SECRET, "msg_1", timestamp_signed, BODY)
    assert reason(verify, [SECRET], webhook_id, TS, header, body, now=NOW) == "bad_signature"


@pytest.mark.parametrize(
    "header", ["", "v1,", "v1,!!!notbase64", "v2," + base64.b64encode(b"a").decode(), "garbage"]
)
def test_malformed_signature_headers(header):
    expected = "missing_headers" if header == "" else "bad_signature"
    assert reason(verify, [SECRET], "msg_1", TS, header, BODY, now=NOW) == expected


def test_missing_and_bad_timestamps():
    good = sign(SECRET, "msg_1", TS, BODY)
    assert reason(verify, [SECRET], None, TS, good, BODY, now=NOW) == "missing_headers"
    assert reason(verify, [SECRET], "msg_1", None, good, BODY, now=NOW) == "missing_headers"
    assert reason(verify, [SECRET], "msg_1", "12.5", good, BODY, now=NOW) == "bad_timestamp"
    assert reason(verify, [SECRET], "msg_1", "-5", good, BODY, now=NOW) == "bad_timestamp"


@pytest.mark.parametrize("skew", [timedelta(minutes=5, seconds=1), -timedelta(minutes=5, seconds=1)])
def test_timestamp_tolerance_is_five_minutes_either_way(skew):
    ts = str(int((NOW + skew).timestamp()))
    header = sign(SECRET, "msg_1", ts, BODY)
    assert reason(verify, [SECRET], "msg_1", ts, header, BODY, now=NOW) == "timestamp_out_of_tolerance"
    edge = str(int((NOW + skew / abs(skew.total_seconds()) * 300).timestamp()))
    verify([SECRET], "msg_1", edge, sign(SECRET, "msg_1", edge, BODY), BODY, now=NOW)


def test_clock_is_the_injected_one(monkeypatch):
    from gdpr_core import clock

    clock.install(clock.ManualClock(NOW))
    try:
        verify([SECRET], "msg_1", TS, sign(SECRET, "msg_1", TS, BODY), BODY)
        clock.install(clock.ManualClock(NOW + timedelta(hours=1)))
        header = sign(SECRET, "msg_1", TS, BODY)
        assert reason(verify, [SECRET], "msg_1", TS, header, BODY) == "timestamp_out_of_tolerance"
    finally:
        clock.install(clock.SystemClock())


def test_headers_are_case_insensitive_and_errors_echo_nothing():
    headers = {
        "Webhook-Id": "msg_1",
        "WEBHOOK-TIMESTAMP": TS,
        "webhook-signature": sign(SECRET, "msg_1", TS, BODY),
    }
    assert verify_headers([SECRET], headers, BODY, now=NOW) == "msg_1"
    with pytest.raises(SignatureError) as caught:
        verify_headers([PREVIOUS], headers, BODY, now=NOW)
    assert str(caught.value) == "bad_signature"
