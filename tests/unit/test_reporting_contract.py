"""The Atlassian contract: request shape, auth, every answer kind, headers; and the emulator that plays
Atlassian's side over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from gdpr_core.ids import TEST_ACCOUNT_ACTIVE, TEST_ACCOUNT_CLOSED
from gdpr_core.reporting import contract
from gdpr_core.reporting.contract import (
    Answered,
    BadRequest,
    CredentialRejected,
    RateLimited,
    ReportClient,
    Unavailable,
    parse_cycle_period,
    parse_retry_after,
)
from gdpr_sandbox.atlassian_emulator import AtlassianEmulator

T = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
BEARER = {"id": "default", "type": "oauth3lo", "token": "tok-1"}
CONNECT = {
    "id": "site-a",
    "type": "connect",
    "baseUrl": "https://example.atlassian.net/wiki/",
    "appKey": "com.example.app",
    "sharedSecret": "s3cret-shared",
}


class FakeResponse:
    def __init__(self, status: int, body: bytes = b"", headers: dict | None = None):
        self.status_code = status
        self.content = body
        self.headers = requests.structures.CaseInsensitiveDict(headers or {})

    def json(self):  # a 204 must never be parsed
        raise AssertionError("json() must not be called")


class FakeSession:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls: list[dict] = []

    def post(self, url, data=None, headers=None, timeout=None):
        self.calls.append(
            {"url": url, "body": json.loads(data), "headers": dict(headers), "timeout": timeout}
        )
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client_with(*answers) -> tuple[ReportClient, FakeSession]:
    session = FakeSession(*answers)
    return ReportClient("https://api.example.test/", session=session), session


# ------------------------------------------------------------------ Cycle-Period
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", timedelta(days=7)),
        ("7 days", timedelta(days=7)),
        ("20 Days", timedelta(days=20)),
        ("1 day", timedelta(days=1)),
        ("14d", timedelta(days=14)),
        ("P7D", timedelta(days=7)),
        ("P14D", timedelta(days=14)),
        ("p14d", timedelta(days=14)),
        ("P2W", timedelta(weeks=2)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("PT36H", timedelta(hours=36)),
        (" P7D ", timedelta(days=7)),
    ],
)
def test_cycle_period_readings_seen_in_the_wild(value, expected):
    assert parse_cycle_period(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "  ",
        "garbage",
        "0",
        "0 days",
        "P0D",
        "PT0H",
        "-7",
        "P",
        "PT",
        "P1DT",
        "7 weeks",
        "P-1D",
        "9999",
    ],
)
def test_cycle_period_rejects_garbage_zero_and_negative(value):
    assert parse_cycle_period(value) is None


@given(st.text(max_size=30))
def test_cycle_period_never_raises_and_is_positive(value):
    period = parse_cycle_period(value)
    assert period is None or period > timedelta(0)


# ------------------------------------------------------------------ Retry-After
def test_retry_after_seconds_date_and_default():
    assert parse_retry_after("120") == 120
    assert parse_retry_after("0") == 0
    later = format_datetime(T + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=T.replace(microsecond=0)) == 30
    assert parse_retry_after(format_datetime(T - timedelta(hours=1), usegmt=True), now=T) == 0
    assert parse_retry_after(None) == 60
    assert parse_retry_after("soon") == 60
    assert parse_retry_after("-5") == 60


# ------------------------------------------------------------------ request
def test_request_body_is_exactly_accounts_with_account_id_and_updated_at():
    client, session = client_with(FakeResponse(204))
    client.report([(TEST_ACCOUNT_ACTIVE, T), ("abc:123-x", T + timedelta(days=1))], BEARER)
    call = session.calls[0]
    assert call["url"] == "https://api.example.test/app/report-accounts/"
    assert call["body"] == {
        "accounts": [
            {"accountId": TEST_ACCOUNT_ACTIVE, "updatedAt": "2026-03-01T12:30:45.123Z"},
            {"accountId": "abc:123-x", "updatedAt": "2026-03-02T12:30:45.123Z"},
        ]
    }
    assert call["headers"]["Authorization"] == "Bearer tok-1"
    assert call["headers"]["Content-Type"] == "application/json"


def test_refuses_more_than_90_accounts_and_invalid_ids_before_sending():
    client, session = client_with()
    with pytest.raises(ValueError, match="at most 90"):
        client.report([(f"acc-{i}", T) for i in range(91)], BEARER)
    secret_like_id = "bad id with spaces"
    with pytest.raises(ValueError) as raised:
        client.report([(secret_like_id, T)], BEARER)
    assert secret_like_id not in str(raised.value)
    with pytest.raises(ValueError):
        client.report([("unknown", T)], BEARER)
    with pytest.raises(ValueError):
        client.report([], BEARER)
    with pytest.raises(ValueError):
        client.report([("acc-1", datetime(2026, 1, 1))], BEARER)  # naive time  # noqa: DTZ001
    assert session.calls == []


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_connect_credential_signs_an_hs256_jwt_with_qsh():
    client, session = client_with(FakeResponse(204))
    client.report([("acc-1", T)], CONNECT)
    call = session.calls[0]
    assert call["url"] == "https://example.atlassian.net/wiki/rest/atlassian-connect/latest/report-accounts"
    scheme, token = call["headers"]["Authorization"].split(" ")
    assert scheme == "JWT"
    header_b64, claims_b64, signature_b64 = token.split(".")
    expected = hmac.new(b"s3cret-shared", f"{header_b64}.{claims_b64}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(_b64decode(signature_b64), expected)
    assert json.loads(_b64decode(header_b64)) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(_b64decode(claims_b64))
    assert claims["iss"] == "com.example.app"
    assert claims["exp"] - claims["iat"] == 180
    canonical = b"POST&/rest/atlassian-connect/latest/report-accounts&"
    assert claims["qsh"] == hashlib.sha256(canonical).hexdigest()


def test_unknown_credential_type_is_refused():
    client, _ = client_with()
    with pytest.raises(ValueError):
        client.report([("acc-1", T)], {"type": "basic", "token": "x"})


# ------------------------------------------------------------------ answers
def test_200_keeps_only_closed_and_updated_for_requested_accounts():
    body = {
        "accounts": [
            {"accountId": "acc-1", "status": "closed"},
            {"accountId": "acc-2", "status": "updated"},
            {"accountId": "acc-3", "status": "active"},
            {"accountId": "not-requested", "status": "closed"},
            "junk",
        ]
    }
    client, _ = client_with(FakeResponse(200, json.dumps(body).encode(), {"Cycle-Period": "P14D"}))
    outcome = client.report([("acc-1", T), ("acc-2", T), ("acc-3", T)], BEARER)
    assert isinstance(outcome, Answered)
    assert dict(outcome.actions) == {"acc-1": "closed", "acc-2": "updated"}
    assert outcome.unknown_status == 2
    assert outcome.unrequested == 1
    assert outcome.cycle_period == timedelta(days=14)


def test_204_is_not_parsed():
    client, _ = client_with(FakeResponse(204, b"{definitely not json", {"cycle-period": "20 Days"}))
    outcome = client.report([("acc-1", T)], BEARER)
    assert outcome == Answered(204, (), 0, 0, timedelta(days=20))


def test_400_keeps_error_type_without_echoing_the_message():
    body = {"errorType": "InvalidAccountId", "errorMessage": "acc-1 is not valid"}
    client, _ = client_with(FakeResponse(400, json.dumps(body).encode()))
    outcome = client.report([("acc-1", T)], BEARER)
    assert isinstance(outcome, BadRequest)
    assert outcome.error_type == "InvalidAccountId"
    assert "acc-1" not in repr(outcome)


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_reject_the_credential(status):
    client, _ = client_with(FakeResponse(status, b"nope"))
    assert isinstance(client.report([("acc-1", T)], BEARER), CredentialRejected)


def test_429_carries_retry_after_or_the_default():
    client, _ = client_with(FakeResponse(429, b"", {"Retry-After": "7"}), FakeResponse(429, b""))
    assert client.report([("acc-1", T)], BEARER) == RateLimited(7.0)
    assert client.report([("acc-1", T)], BEARER) == RateLimited(60.0)


def test_server_errors_timeouts_and_connection_errors_are_unavailable():
    client, _ = client_with(
        FakeResponse(500, b'{"errorType":"x"}'),
        FakeResponse(503),
        requests.Timeout("slow"),
        requests.ConnectionError("refused"),
        FakeResponse(200, b"<html>"),
    )
    reasons = [client.report([("acc-1", T)], BEARER) for _ in range(5)]
    assert all(isinstance(r, Unavailable) for r in reasons)
    assert [r.reason for r in reasons] == ["http_500", "http_503", "timeout", "connection", "bad_response"]


# ------------------------------------------------------------------ against the emulator over HTTP
@pytest.fixture
def emulator():
    with AtlassianEmulator(tokens=["tok-1"], closed=["closed-1"], updated=["updated-1"]) as running:
        yield running


def test_client_and_emulator_agree(emulator):
    client = ReportClient(emulator.url)
    outcome = client.report(
        [(TEST_ACCOUNT_CLOSED, T), (TEST_ACCOUNT_ACTIVE, T), ("closed-1", T), ("updated-1", T)], BEARER
    )
    assert isinstance(outcome, Answered) and outcome.status_code == 200
    assert dict(outcome.actions) == {
        TEST_ACCOUNT_CLOSED: "closed",
        "closed-1": "closed",
        "updated-1": "updated",
    }
    assert client.report([(TEST_ACCOUNT_ACTIVE, T)], BEARER) == Answered(204)
    assert isinstance(
        client.report([(TEST_ACCOUNT_ACTIVE, T)], {**BEARER, "token": "wrong"}), CredentialRejected
    )
    log = emulator.requests
    assert [entry["status"] for entry in log] == [200, 204, 401]
    assert log[0]["accounts"] == 4 and log[0]["path"] == "/app/report-accounts/"
    assert log[1]["accountIds"] == [TEST_ACCOUNT_ACTIVE]


def test_emulator_answers_updated_only_while_the_copy_is_older_than_the_change(emulator):
    emulator.configure({"updated": {"updated-2": "2026-03-01T00:00:00Z"}})
    client = ReportClient(emulator.url)
    assert dict(client.report([("updated-2", T - timedelta(days=1))], BEARER).actions) == {
        "updated-2": "updated"
    }
    assert client.report([("updated-2", T)], BEARER) == Answered(204)


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        ({"accountIds": ["acc-1"]}, "InvalidRequest"),
        ({"accounts": [{"accountId": "acc-1", "updatedAt": "x"}], "accountIds": []}, "InvalidRequest"),
        ({"accounts": []}, "InvalidRequest"),
        (
            {"accounts": [{"accountId": f"a{i}", "updatedAt": "2026-01-01T00:00:00Z"} for i in range(91)]},
            "TooManyAccounts",
        ),
        ({"accounts": [{"accountId": "unknown", "updatedAt": "2026-01-01T00:00:00Z"}]}, "InvalidAccountId"),
        ({"accounts": [{"accountId": "a b", "updatedAt": "2026-01-01T00:00:00Z"}]}, "InvalidAccountId"),
        ({"accounts": [{"accountId": "acc-1", "updatedAt": "2026-01-01 00:00:00"}]}, "InvalidTimestamp"),
        ({"accounts": [{"accountId": "acc-1"}]}, "InvalidAccount"),
    ],
)
def test_emulator_rejects_malformed_bodies(emulator, body, error_type):
    answer = requests.post(
        emulator.url + "/app/report-accounts/",
        json=body,
        headers={"Authorization": "Bearer tok-1"},
        timeout=5,
    )
    assert answer.status_code == 400
    assert answer.json()["errorType"] == error_type
    assert "errorMessage" in answer.json()


def test_emulator_rate_limit_failures_cycle_period_and_control_endpoints(emulator):
    client = ReportClient(emulator.url)
    config = requests.post(
        emulator.url + "/_emulator/config",
        json={"rateLimit": {"requests": 1, "windowSeconds": 3600, "retryAfter": 9}, "cyclePeriod": "P14D"},
        timeout=5,
    ).json()
    assert config["cyclePeriod"] == "P14D"
    first = client.report([("acc-1", T)], BEARER)
    assert first == Answered(204, cycle_period=timedelta(days=14))
    assert client.report([("acc-1", T)], BEARER) == RateLimited(9.0, cycle_period=timedelta(days=14))
    emulator.configure({"rateLimit": None, "failures": {"status": 503, "count": 2}})
    assert isinstance(client.report([("acc-1", T)], BEARER), Unavailable)
    assert isinstance(client.report([("acc-1", T)], BEARER), Unavailable)
    assert isinstance(client.report([("acc-1", T)], BEARER), Answered)
    log = requests.get(emulator.url + "/_emulator/log", timeout=5).json()["requests"]
    assert [entry["status"] for entry in log] == [204, 429, 503, 503, 204]
    assert set(log[0]) >= {"time", "path", "status", "accounts", "accountIds"}
    bad = requests.post(emulator.url + "/_emulator/config", json={"nonsense": 1}, timeout=5)
    assert bad.status_code == 400


def test_emulator_runs_as_a_module(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "gdpr_sandbox.atlassian_emulator", "--port", "0", "--token", "tok-1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = json.loads(proc.stdout.readline())["url"]
        assert ReportClient(url).report([("acc-1", T)], BEARER) == Answered(204)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_module_constants_match_the_spec():
    assert contract.MAX_ACCOUNTS_PER_REQUEST == 90
    assert contract.REPORT_PATH_3LO == "/app/report-accounts/"
