"""The consent webhook handler end to end on moto: HTTP API 2.0 events in, ConsentTable state out."""

from __future__ import annotations

import base64
import copy
import io
import itertools
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import boto3
import botocore.client
import moto  # noqa: F401 - moto must patch botocore before any boto3 client is created
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests.support, whichever way pytest was started
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "gdpr-consent")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "GdprComplianceTest")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "DEBUG")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")

from gdpr_core.consent import signature  # noqa: E402
from gdpr_core.consent.model import parse_event  # noqa: E402
from gdpr_core.consent.store import ConsentStore  # noqa: E402
from gdpr_core.pseudonym import Pseudonymizer  # noqa: E402
from tests.support import aws_events, moto_world  # noqa: E402
from tests.support.stacks import create_consent_table  # noqa: E402

handler = moto_world.load_handler(ROOT / "functions/consent_webhook/app.py", "consent_webhook_app")

# Rejections emit their own single metric, so the shared Metrics object is legitimately empty then.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics:UserWarning")

AWS_SAMPLE = aws_events.path("http-api-proxy.json")
NOW = datetime(2026, 11, 30, 10, 20, 0, tzinfo=UTC)
CURRENT = "whsec_" + base64.b64encode(b"current-signing-key-0123456789ab").decode()
PREVIOUS = "whsec_" + base64.b64encode(b"previous-signing-key-0123456789a").decode()
PSEUDONYM_KEY = "pseudonym-key-for-tests-0123456789"
EMAIL = "Ada.Lovelace@Example.com"
OTHER_EMAIL = "grace.hopper@example.org"
ACCOUNT = "5be24ad8b1653240376955d2"
CONTEXT = SimpleNamespace(
    function_name="consent-webhook",
    memory_limit_in_mb=512,
    invoked_function_arn="arn:aws:lambda:eu-west-1:123456789012:function:consent-webhook",
    aws_request_id="req-1",
)
PSEUDONYMS = Pseudonymizer(PSEUDONYM_KEY)


@pytest.fixture
def env(monkeypatch):
    moto_world.fake_aws_env(monkeypatch, "eu-west-1")
    with moto_world.mocked_aws():
        ddb = boto3.client("dynamodb", region_name="eu-west-1")
        create_consent_table(ddb, "consent")
        sm = boto3.client("secretsmanager", region_name="eu-west-1")
        signing = sm.create_secret(
            Name="signing", SecretString=json.dumps({"current": CURRENT, "previous": PREVIOUS})
        )
        pseudonym = sm.create_secret(Name="pseudonym", SecretString=PSEUDONYM_KEY)
        monkeypatch.setenv("CONSENT_TABLE", "consent")
        monkeypatch.setenv("CONSENTHUB_SIGNING_SECRET_ARN", signing["ARN"])
        monkeypatch.setenv("PSEUDONYM_KEY_SECRET_ARN", pseudonym["ARN"])
        with moto_world.manual_clock(NOW):
            handler.secret_refresh.reset()
            yield SimpleNamespace(ddb=ddb, sm=sm, signing_arn=signing["ARN"],
                                  store=ConsentStore("consent", PSEUDONYMS, client=ddb))


@pytest.fixture
def logs():
    """Everything the handler's Powertools logger writes (its stream was bound at import time)."""
    with moto_world.redirect_logs(handler.logger, io.StringIO()) as buffer:
        yield buffer


# ---------------------------------------------------------------------------- event builders
def updated(
    email=EMAIL,
    occurred="2026-11-30T10:15:02.120Z",
    key="generalMarketingOptIn",
    granted=True,
    locale="DE",
    account=ACCOUNT,
    text="Yes, send me product news",
) -> dict:
    consent = {"key": key, "granted": granted, "displayedText": text}
    data = {
        "email": email,
        "locale": locale,
        "consents": [consent],
        "formUrl": "https://example.com/preferences",
    }
    if account:
        data["accountId"] = account
    return {"type": "consent.updated", "occurredAt": occurred, "data": data}


def erased(email=EMAIL, occurred="2026-11-30T10:16:00Z") -> dict:
    return {"type": "consent.erased", "occurredAt": occurred, "data": {"email": email}}


def http_event(path: str, body: bytes, headers: dict[str, str], base64_body: bool = True) -> dict:
    """A payload-format-2.0 event shaped like AWS's sample, for our route."""
    event = copy.deepcopy(json.loads(AWS_SAMPLE.read_text()))
    event.update(
        routeKey=f"POST {path}", rawPath=path, rawQueryString="", headers=headers, isBase64Encoded=base64_body
    )
    event.pop("queryStringParameters", None)
    event["requestContext"]["routeKey"] = f"POST {path}"
    event["requestContext"]["http"].update(method="POST", path=path)
    event["body"] = base64.b64encode(body).decode() if base64_body else body.decode()
    return event


def signed_headers(webhook_id: str, body: bytes, secret: str = CURRENT, timestamp: int | None = None) -> dict:
    ts = int(NOW.timestamp()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature.sign(secret, webhook_id, ts, body),
    }


def deliver(doc: dict | bytes, webhook_id: str, **kwargs) -> tuple[int, dict]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    headers = signed_headers(
        webhook_id, body, **{k: v for k, v in kwargs.items() if k in ("secret", "timestamp")}
    )
    headers.update(kwargs.get("headers", {}))
    return call(http_event("/consenthub/events", body, headers, kwargs.get("base64_body", True)))


def call(event: dict) -> tuple[int, dict]:
    answer = handler.lambda_handler(event, CONTEXT)
    return answer["statusCode"], json.loads(answer["body"] or "null")


def lookup(email: str = EMAIL) -> dict:
    status, body = call(http_event("/consent/lookup", json.dumps({"email": email}).encode(), {}))
    assert status == 200
    return body["consents"]


def all_items(ddb) -> list[dict]:
    return ddb.scan(TableName="consent")["Items"]


def history(ddb, email: str = EMAIL) -> dict[str, dict]:
    pk = "subject#" + PSEUDONYMS.email(email)
    items = ddb.query(
        TableName="consent",
        KeyConditionExpression="pk = :pk AND begins_with(sk, :d)",
        ExpressionAttributeValues={":pk": {"S": pk}, ":d": {"S": "delivery#"}},
    )["Items"]
    return {item["sk"]["S"].removeprefix("delivery#"): item for item in items}


# ---------------------------------------------------------------------------- AWS's own sample event
def test_aws_sample_event_with_a_good_signature_reaches_validation(env):
    sample = json.loads(AWS_SAMPLE.read_text())
    assert sample["isBase64Encoded"] is True
    raw_body = base64.b64decode(sample["body"])  # what the sender signed: AWS's body, unchanged

    event = copy.deepcopy(sample)
    # The sample's path is a placeholder; our API only routes POST /consenthub/events to this function.
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/consenthub/events"
    event["headers"] = {**sample["headers"], **signed_headers("msg_sample", raw_body)}
    assert event["body"] == sample["body"]
    assert call(event) == (400, {"error": "schema:type"})

    unsigned = copy.deepcopy(event)
    unsigned["headers"] = {**sample["headers"], "content-type": "application/json"}
    assert call(unsigned) == (401, {"error": "missing_headers"})
    assert all_items(env.ddb) == []


# ---------------------------------------------------------------------------- happy path and ordering
def test_valid_update_is_applied_and_looked_up_without_storing_raw_data(env):
    assert deliver(updated(), "msg_1") == (200, {"outcome": "applied"})
    assert lookup(" ada.lovelace@EXAMPLE.com ") == {
        "generalMarketingOptIn": {
            "granted": True,
            "occurredAt": "2026-11-30T10:15:02.120Z",
            "locale": "DE",
            "requiresOptIn": True,
        }
    }
    assert history(env.ddb)["msg_1"]["outcome"] == {"S": "applied"}
    dump = json.dumps(all_items(env.ddb)).lower()
    assert EMAIL.lower() not in dump and ACCOUNT not in dump
    key = {"pk": {"S": "subject#" + PSEUDONYMS.email(EMAIL)}, "sk": {"S": "latest"}}
    latest = env.ddb.get_item(TableName="consent", Key=key)["Item"]
    assert latest["accountRef"] == {"S": PSEUDONYMS.account(ACCOUNT)}


def test_a_single_key_update_costs_at_most_three_writes(env, monkeypatch):
    deliver(updated(email=OTHER_EMAIL), "msg_warm")  # caches both secrets
    calls = count_calls(monkeypatch)
    assert deliver(updated(), "msg_1")[1] == {"outcome": "applied"}
    writes = [c for c in calls if c in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem")]
    assert len(writes) <= 3, calls


def test_duplicate_changes_nothing(env):
    deliver(updated(granted=True), "msg_1")
    before = all_items(env.ddb)
    assert deliver(updated(granted=True), "msg_1") == (200, {"outcome": "duplicate"})
    assert all_items(env.ddb) == before


def test_older_update_after_newer_is_stale(env):
    assert (
        deliver(updated(occurred="2026-11-30T10:15:00Z", granted=True), "msg_new")[1]["outcome"] == "applied"
    )
    assert (
        deliver(updated(occurred="2026-11-30T10:14:00Z", granted=False), "msg_old")[1]["outcome"] == "stale"
    )
    assert lookup()["generalMarketingOptIn"]["granted"] is True
    assert history(env.ddb)["msg_old"]["outcome"] == {"S": "stale"}  # still recorded


def test_tie_on_occurred_at_goes_to_the_greater_webhook_id(env):
    same = "2026-11-30T10:15:00Z"
    assert deliver(updated(occurred=same, granted=True), "msg_b")[1]["outcome"] == "applied"
    assert deliver(updated(occurred=same, granted=False), "msg_a")[1]["outcome"] == "stale"
    assert lookup()["generalMarketingOptIn"]["granted"] is True
    assert deliver(updated(occurred=same, granted=False), "msg_c")[1]["outcome"] == "applied"
    assert lookup()["generalMarketingOptIn"]["granted"] is False


def test_erasure_then_older_update_is_stale_and_brings_nothing_back(env):
    deliver(updated(occurred="2026-11-30T10:10:00Z"), "msg_1")
    deliver(updated(occurred="2026-11-30T10:20:00Z", key="productNews"), "msg_2")  # newer than the erasure
    assert deliver(erased(occurred="2026-11-30T10:15:00Z"), "msg_erase") == (200, {"outcome": "applied"})
    assert set(lookup()) == {"productNews"}  # keys newer than the erasure stay
    assert deliver(updated(occurred="2026-11-30T10:12:00Z"), "msg_late")[1]["outcome"] == "stale"
    assert set(lookup()) == {"productNews"}
    items = history(env.ddb)
    for old in ("msg_1", "msg_late"):
        assert not {"locale", "formUrl", "displayedText"} & set(items[old]), old
    assert "displayedText" in items["msg_2"]
    # A choice made after the erasure is a new choice and counts.
    assert deliver(updated(occurred="2026-11-30T10:16:00Z"), "msg_3")[1]["outcome"] == "applied"
    assert set(lookup()) == {"productNews", "generalMarketingOptIn"}


def test_erase_account_leaves_only_a_suppression_marker(env):
    deliver(updated(), "msg_1")
    deliver(updated(email=OTHER_EMAIL, account=None), "msg_2")
    assert env.store.erase_account(PSEUDONYMS.account(ACCOUNT), NOW) == 1
    assert lookup() == {}
    assert history(env.ddb) == {}
    latest = env.store._get("subject#" + PSEUDONYMS.email(EMAIL), "latest")
    assert latest["suppressed"] is True and "accountRef" not in latest
    assert deliver(updated(occurred="2026-11-30T10:19:00Z"), "msg_old")[1]["outcome"] == "stale"
    assert lookup() == {} and set(lookup(OTHER_EMAIL)) == {"generalMarketingOptIn"}
    assert env.store.erase_account(PSEUDONYMS.account(ACCOUNT), NOW) == 0


def test_redelivery_after_a_crash_converges(env, monkeypatch):
    original = ConsentStore._finish_history
    monkeypatch.setattr(
        ConsentStore, "_finish_history", lambda *a, **k: (_ for _ in ()).throw(OSError("crash"))
    )
    assert deliver(updated(), "msg_1") == (500, {"error": "unavailable"})
    assert history(env.ddb)["msg_1"]["outcome"] == {"S": "pending"}
    monkeypatch.setattr(ConsentStore, "_finish_history", original)
    assert deliver(updated(), "msg_1") == (200, {"outcome": "applied"})
    assert history(env.ddb)["msg_1"]["outcome"] == {"S": "applied"}
    assert deliver(updated(), "msg_1")[1] == {"outcome": "duplicate"}


# ---------------------------------------------------------------------------- rejections
def test_previous_secret_is_accepted_during_rotation(env):
    assert deliver(updated(), "msg_1", secret=PREVIOUS) == (200, {"outcome": "applied"})


@pytest.mark.parametrize("skew", [301, -301])
def test_timestamp_skew_over_five_minutes_is_401(env, skew):
    ts = int(NOW.timestamp()) + skew
    assert deliver(updated(), "msg_1", timestamp=ts) == (401, {"error": "timestamp_out_of_tolerance"})
    assert all_items(env.ddb) == []


def test_forged_signatures_are_401_store_nothing_and_cost_at_most_one_secret_read(env, monkeypatch):
    deliver(updated(email=OTHER_EMAIL), "msg_warm")  # the signing secret is now cached
    calls = count_calls(monkeypatch)
    forged = "whsec_" + base64.b64encode(b"attacker-key-0123456789abcdefghi").decode()
    assert deliver(updated(), "msg_1", secret=forged) == (401, {"error": "bad_signature"})
    assert calls == ["GetSecretValue"]  # the one re-read that notices a rotation
    for i in range(5):
        assert deliver(updated(), f"msg_f{i}", secret=forged) == (401, {"error": "bad_signature"})
    assert calls == ["GetSecretValue"]  # a flood of forgeries costs nothing more
    # Headers that cannot be right are refused without even that read.
    handler.secret_refresh.reset()
    assert deliver(updated(), "msg_2", timestamp=int(NOW.timestamp()) - 3600)[0] == 401
    assert calls == ["GetSecretValue"]
    assert history(env.ddb) == {}


def test_a_rotated_signing_secret_is_honoured_despite_the_cache(env, monkeypatch):
    ticks = iter(range(0, 10_000, 10))  # each refresh check sees 10 s more on the monotonic clock
    monkeypatch.setattr(handler.secret_refresh, "monotonic", lambda: next(ticks))
    assert deliver(updated(email=OTHER_EMAIL), "msg_warm")[0] == 200  # caches CURRENT/PREVIOUS
    rotated = "whsec_" + base64.b64encode(b"rotated-signing-key-0123456789ab").decode()
    env.sm.put_secret_value(
        SecretId=env.signing_arn, SecretString=json.dumps({"current": rotated, "previous": CURRENT})
    )
    assert deliver(updated(), "msg_new", secret=rotated) == (200, {"outcome": "applied"})
    later = "2026-11-30T10:16:00Z"
    assert deliver(updated(email=OTHER_EMAIL, occurred=later), "msg_old", secret=CURRENT)[1]["outcome"] == "applied"
    # PREVIOUS left the secret with the rotation: refused once the refreshed secrets are in use.
    assert deliver(updated(), "msg_gone", secret=PREVIOUS) == (401, {"error": "bad_signature"})
    assert "msg_gone" not in history(env.ddb)
    # A forgery just used up the re-read; a rotation right after it is picked up once the interval passed.
    monkeypatch.setattr(handler.secret_refresh, "monotonic", lambda: 10_000)
    handler.secret_refresh.reset()
    assert deliver(updated(), "msg_t1", secret=forged_secret()) == (401, {"error": "bad_signature"})
    third = "whsec_" + base64.b64encode(b"third-signing-key-0123456789abcd").decode()
    env.sm.put_secret_value(SecretId=env.signing_arn, SecretString=json.dumps({"current": third, "previous": rotated}))
    assert deliver(updated(), "msg_t2", secret=third) == (401, {"error": "bad_signature"})
    monkeypatch.setattr(handler.secret_refresh, "monotonic", lambda: 10_000 + handler.SECRET_REFRESH_INTERVAL_SECONDS)
    assert deliver(updated(), "msg_t2", secret=third) == (200, {"outcome": "applied"})


def forged_secret() -> str:
    return "whsec_" + base64.b64encode(b"attacker-key-0123456789abcdefghi").decode()


def test_oversize_body_is_413_before_anything_else(env, monkeypatch):
    calls = count_calls(monkeypatch)
    big = json.dumps(updated()).encode() + b" " * (64 * 1024)
    assert (
        deliver(big, "msg_1", headers={"content-type": "text/plain", "webhook-signature": "v1,x"})[0] == 413
    )
    assert calls == []
    exact = json.dumps(updated()).encode()
    exact += b" " * (64 * 1024 - len(exact))
    assert deliver(exact, "msg_2", base64_body=False) == (200, {"outcome": "applied"})


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("application/x-www-form-urlencoded", 415), (None, 415),
     ("application/json; charset=utf-8", 200), ("Application/JSON", 200)],
)  # fmt: skip
def test_content_type_must_be_json(env, content_type, status):
    body = json.dumps(updated()).encode()
    headers = signed_headers("msg_1", body)
    headers.pop("content-type")
    if content_type:
        headers["Content-Type"] = content_type
    assert call(http_event("/consenthub/events", body, headers))[0] == status


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid_json"),
        (json.dumps({**updated(), "type": "consent.nope"}).encode(), "unknown_type"),
        (json.dumps(erased() | {"data": {}}).encode(), "schema:data.email"),
    ],
)
def test_malformed_bodies_are_400_with_a_reason(env, body, reason):
    assert deliver(body, "msg_1") == (400, {"error": reason})
    assert all_items(env.ddb) == []


def test_headers_are_case_insensitive(env):
    body = json.dumps(updated()).encode()
    headers = {k.upper(): v for k, v in signed_headers("msg_1", body).items()}
    assert call(http_event("/consenthub/events", body, headers)) == (200, {"outcome": "applied"})


def test_storage_failure_is_500_so_the_sender_retries(env, monkeypatch):
    monkeypatch.setenv("CONSENT_TABLE", "no-such-table")
    assert deliver(updated(), "msg_1") == (500, {"error": "unavailable"})


def test_lookup_rejects_a_missing_email(env):
    assert call(http_event("/consent/lookup", b'{"mail": "x"}', {})) == (400, {"error": "schema:email"})


# ---------------------------------------------------------------------------- no personal data in logs
def test_logs_and_metrics_hold_no_personal_data(env, logs, capsys, caplog):
    caplog.set_level(logging.INFO)  # botocore's own DEBUG wire logs are not ours and are off in Lambda
    deliver(updated(), "msg_1")
    deliver(updated(), "msg_1")
    deliver(updated(occurred="2026-01-01T00:00:00Z"), "msg_0")
    deliver(erased(), "msg_2")
    deliver(updated(), "msg_3", secret="whsec_" + base64.b64encode(b"forged-key-0123456789abcdef").decode())
    deliver(json.dumps(updated(email="not-an-email " + EMAIL)).encode(), "msg_4")
    deliver(updated(account="unknown"), "msg_5")
    lookup()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONSENT_TABLE", "no-such-table")
        deliver(updated(), "msg_6")
    captured = logs.getvalue() + capsys.readouterr().out + caplog.text
    assert "request rejected" in captured and '"rejected"' in captured  # the capture works
    for secret_value in (EMAIL, EMAIL.lower(), OTHER_EMAIL, ACCOUNT, PSEUDONYM_KEY):
        assert secret_value.lower() not in captured.lower()


# ---------------------------------------------------------------------------- convergence property
_subjects = itertools.count()
_times = st.sampled_from([f"2026-11-30T10:0{i}:00Z" for i in range(4)])
_deliveries = st.lists(
    st.tuples(
        st.sampled_from(["updated", "updated", "erased"]), _times, st.sampled_from(["a", "b"]), st.booleans()
    ),
    min_size=1,
    max_size=6,
)


def _state(store: ConsentStore, email: str) -> dict:
    latest = store._get(store.subject_key(email), "latest")
    return {k: v for k, v in latest.items() if k not in ("rev", "pk")}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_deliveries, st.data())
def test_any_order_with_duplicates_ends_in_the_in_order_state(env, deliveries, data):
    ids = data.draw(st.permutations([f"msg_{i}" for i in range(len(deliveries))]))
    n = next(_subjects)
    reference, shuffled = f"ref{n}@example.com", f"shuf{n}@example.com"

    def event(i: int, email: str):
        kind, occurred, key, granted = deliveries[i]
        doc = erased(email, occurred) if kind == "erased" else updated(email, occurred, key, granted)
        return parse_event(json.dumps(doc).encode(), ids[i])

    in_order = sorted(range(len(deliveries)), key=lambda i: event(i, reference).version)
    for i in in_order:
        env.store.apply(event(i, reference))
    extras = data.draw(st.lists(st.sampled_from(range(len(deliveries))), max_size=4))
    for i in data.draw(st.permutations(list(range(len(deliveries))) + extras)):
        assert env.store.apply(event(i, shuffled)) in ("applied", "duplicate", "stale")
    assert _state(env.store, shuffled) == _state(env.store, reference)
    assert lookup(shuffled) == lookup(reference)


# ---------------------------------------------------------------------------- helpers
def count_calls(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = botocore.client.BaseClient._make_api_call

    def counting(self, operation_name, api_params):
        calls.append(operation_name)
        return original(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    return calls


# ---------------------------------------------------------------------------- fuzzing: never 5xx, never stored
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
_header_names = st.sampled_from(
    ["content-type", "webhook-id", "webhook-timestamp", "webhook-signature", "x-other", "Content-Type"]
)
_header_values = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["application/json", "v1,", "v1,AAAA v2,BBBB", str(int(NOW.timestamp())), "msg_1", ""]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.dictionaries(_header_names, _header_values, max_size=6),
    body=st.one_of(st.binary(max_size=300), st.builds(lambda v: json.dumps(v).encode(), _json_values)),
    as_base64=st.booleans(),
)
def test_fuzzed_unsigned_requests_are_refused_without_storing(env, headers, body, as_base64):
    event = http_event("/consenthub/events", body, headers, base64_body=True)
    if not as_base64:  # API Gateway may pass text bodies as they are; random text then is no base64
        event["isBase64Encoded"] = False
        event["body"] = body.decode("latin-1")
    status, answer = call(event)
    assert status in (400, 401, 413, 415), (status, answer)
    assert isinstance(answer.get("error"), str)
    assert all_items(env.ddb) == []


def _mutated(draw_doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(draw_doc)
    node = doc
    for part in path[:-1]:
        node = node[part]
    if value is _DROP:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return doc


_DROP = object()
_PATHS = [("type",), ("occurredAt",), ("data",), ("data", "email"), ("data", "locale"), ("data", "consents"),
          ("data", "accountId"), ("data", "formUrl"), ("data", "consents", 0, "key"),
          ("data", "consents", 0, "granted"), ("data", "consents", 0, "displayedText")]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(_PATHS),
    value=st.one_of(st.just(_DROP), _json_values),
    kind=st.sampled_from(["updated", "erased"]),
    webhook_id=st.text(min_size=1, max_size=40).filter(lambda s: "\n" not in s),
)
def test_fuzzed_signed_bodies_never_5xx_and_store_only_what_is_valid(env, path, value, kind, webhook_id):
    base = updated() if kind == "updated" else erased()
    try:
        doc = _mutated(base, path, value)
    except (KeyError, IndexError, TypeError):
        doc = base
    body = json.dumps(doc).encode()
    before = all_items(env.ddb)
    status, answer = call(http_event("/consenthub/events", body, signed_headers(webhook_id, body)))
    assert status in (200, 400), (status, answer)
    if status == 400:
        assert answer["error"] in ("invalid_json", "unknown_type") or answer["error"].startswith("schema:")
        assert all_items(env.ddb) == before
