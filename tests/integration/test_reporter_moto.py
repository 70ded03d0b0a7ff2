"""The reporter handler end to end on moto (tables and queues from infra/template.yaml) against the
Atlassian emulator on 127.0.0.1."""

from __future__ import annotations

import inspect
import json
import math
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import moto  # noqa: F401 - moto must patch botocore before any boto3 client is created
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.support` when pytest is run without the repo on sys.path
    sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from gdpr_core import clock  # noqa: E402
from gdpr_core.clock import ManualClock, SystemClock  # noqa: E402
from gdpr_core.ids import TEST_ACCOUNT_ACTIVE, TEST_ACCOUNT_CLOSED  # noqa: E402
from gdpr_core.pseudonym import Pseudonymizer  # noqa: E402
from gdpr_core.registry import AccountErased, Registry  # noqa: E402
from gdpr_core.reporting.planner import NSHARDS, report_key_for  # noqa: E402
from gdpr_core.reporting.run import DynamoStateStore  # noqa: E402
from gdpr_sandbox.atlassian_emulator import AtlassianEmulator  # noqa: E402
from tests.support import aws_events, moto_world  # noqa: E402
from tests.support.stacks import create_queues, create_tables, load_template  # noqa: E402

REGION = "eu-west-1"
PSEUDONYM_KEY = "integration-test-pseudonym-key-0123456789"
TOKEN = "emulator-test-token"
T0 = datetime(2026, 4, 6, 10, 0, tzinfo=UTC)


def _scheduled_event() -> dict:
    """AWS's own sample (sam local generate-event), unchanged."""
    return aws_events.load("scheduled-event.json")


SCHEDULED_EVENT = _scheduled_event()


class FakeContext(moto_world.LambdaContext):
    function_name = "ReporterFunction"
    region = REGION
    remaining_ms = 900_000
    log_group_name = "/aws/lambda/ReporterFunction"
    log_stream_name = "test"


@pytest.fixture
def aws_env(monkeypatch):
    moto_world.fake_aws_env(monkeypatch, REGION)
    for key, value in {
        "POWERTOOLS_SERVICE_NAME": "gdpr-reporter",
        "POWERTOOLS_METRICS_NAMESPACE": "GdprComplianceTest",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOGGER_LOG_EVENT": "false",
    }.items():
        monkeypatch.setenv(key, value)
    with moto_world.mocked_aws():
        yield


@pytest.fixture
def emulator():
    with AtlassianEmulator(tokens=[TOKEN]) as running:
        yield running


@pytest.fixture
def stack(aws_env, emulator, monkeypatch):
    """The reporter's resources from the template, its secrets, and its environment."""
    template = load_template()
    tables = create_tables(boto3.client("dynamodb"), template=template)
    queues = create_queues(boto3.client("sqs"), template=template)
    sm = boto3.client("secretsmanager")
    key_arn = sm.create_secret(Name="pseudonym-key", SecretString=PSEUDONYM_KEY)["ARN"]
    credentials = {
        "credentials": [
            {"id": "revoked", "type": "oauth3lo", "token": "revoked-token"},
            {"id": "default", "type": "oauth3lo", "token": TOKEN},
        ],
        "sites": {},
    }
    creds_arn = sm.create_secret(Name="atlassian-credentials", SecretString=json.dumps(credentials))["ARN"]
    env = {
        "REGISTRY_TABLE": tables["AccountsTable"],
        "STATE_TABLE": tables["StateTable"],
        "CONSENT_TABLE": tables["ConsentTable"],
        "AUDIT_TABLE": tables["AuditTable"],
        "IDEMPOTENCY_TABLE": tables["IdempotencyTable"],
        "PSEUDONYM_KEY_SECRET_ARN": key_arn,
        "ATLASSIAN_CREDENTIALS_SECRET_ARN": creds_arn,
        "ATLASSIAN_API_URL": emulator.url,
        "ACTIONS_QUEUE_URL": queues["ActionsQueue"],
        "DEFAULT_CYCLE_DAYS": "7",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    registry = Registry(
        tables["AccountsTable"], Pseudonymizer(PSEUDONYM_KEY), client=boto3.client("dynamodb")
    )
    return {"tables": tables, "queues": queues, "registry": registry, "emulator": emulator}


@pytest.fixture
def handler(aws_env):
    return moto_world.load_handler(ROOT / "functions" / "reporter" / "app.py", "reporter_app").lambda_handler


def tick(handler, now: datetime | None = None) -> dict:
    event = {"source": "gdpr.scheduler", "action": "tick"}
    if now is not None:
        event["now"] = clock.format_rfc3339(now)
    return handler(event, FakeContext())


def drain(queue_url: str) -> list[dict]:
    sqs = boto3.client("sqs")
    bodies = []
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def reported(emulator, status_ok=(200, 204)) -> list[str]:
    return [a for entry in emulator.requests if entry["status"] in status_ok for a in entry["accountIds"]]


# ------------------------------------------------------------------ registry on the template's table
def test_registry_keeps_one_item_per_account_with_the_oldest_retrieval(stack):
    registry = stack["registry"]
    registry.record("acc-1", "site-a", T0)
    registry.record("acc-1", "site-b", T0 - timedelta(days=2))
    registry.record("acc-1", "site-c", T0 + timedelta(days=1))
    item = registry.get("acc-1")
    assert item["sites"] == ["site-a", "site-b", "site-c"]
    assert item["updatedAt"] == clock.format_rfc3339(T0 - timedelta(days=2))
    assert item["status"] == "active" and item["reportKey"] == "new" and "registeredAt" in item
    page = registry.query_due("new", None, 10)
    assert [a.account_id for a in page.accounts] == ["acc-1"]
    assert registry.mark_reported_first("acc-1", report_key_for("acc-1"), 3)
    assert not registry.mark_reported_first("acc-1", report_key_for("acc-1"), 4)
    assert registry.query_due("new", None, 10).accounts == []
    moved = registry.query_due(report_key_for("acc-1"), None, 10).accounts
    assert [(a.account_id, a.first_cycle) for a in moved] == [("acc-1", 3)]


def test_registry_refuses_erasing_and_tombstoned_accounts_without_naming_them(stack):
    registry = stack["registry"]
    registry.record("acc-2", "site-a", T0)
    assert registry.mark_erasing("acc-2")
    assert not registry.mark_erasing("acc-2")  # idempotent
    with pytest.raises(AccountErased) as raised:
        registry.record("acc-2", "site-b", T0)
    assert "acc-2" not in str(raised.value)
    item = registry.get("acc-2")
    assert item["status"] == "erasing" and "reportKey" not in item and item["sites"] == ["site-a"]
    boto3.client("dynamodb").put_item(
        TableName=stack["tables"]["AccountsTable"],
        Item={"accountId": {"S": registry.tombstone_key("acc-3")}, "status": {"S": "erased"}},
    )
    with pytest.raises(AccountErased):
        registry.record("acc-3", "site-a", T0)
    assert registry.get("acc-3") is None
    with pytest.raises(ValueError):
        registry.record("unknown", "site-a", T0)


def test_registry_pages_through_the_index(stack):
    registry = stack["registry"]
    for i in range(25):
        registry.record(f"page-{i:03d}", "site-a", T0)
    seen, after = [], None
    while True:
        page = registry.query_due("new", after, 10)
        seen += [a.account_id for a in page.accounts]
        if page.last_account_id is None:
            break
        after = page.last_account_id
    assert seen == [f"page-{i:03d}" for i in range(25)]


# ------------------------------------------------------------------ the handler
def test_handler_reports_the_registry_and_queues_erasures(stack, handler):
    registry, emulator = stack["registry"], stack["emulator"]
    emulator.configure({"closed": ["closed-one"], "updated": ["stale-one"]})
    accounts = [f"5be24ad8{i:016x}" for i in range(297)] + [TEST_ACCOUNT_ACTIVE, TEST_ACCOUNT_CLOSED]
    accounts += ["closed-one", "stale-one"]
    for a in accounts:
        registry.record(a, "site-a", T0 - timedelta(days=1))
    for site in ("site-b", "site-c"):  # one account through three sites is still one account
        registry.record(accounts[0], site, T0 - timedelta(days=3))

    summary = tick(handler, T0)
    assert summary["accountsReported"] == 301 and summary["newReported"] == 301
    assert summary["closed"] == 2 and summary["updated"] == 1 and summary["enqueued"] == 3
    assert summary["credentialFallbacks"] == 1 and summary["complete"] is True
    bodies = [e for e in emulator.requests if e["status"] in (200, 204)]
    assert len(bodies) == math.ceil(301 / 90) == summary["requests"] - 1  # one 401 on the revoked token
    assert all(1 <= e["accounts"] <= 90 for e in emulator.requests)
    counts = Counter(reported(emulator))
    assert set(counts) == set(accounts) and set(counts.values()) == {1}

    for a in (TEST_ACCOUNT_CLOSED, "closed-one"):
        item = registry.get(a)
        assert item["status"] == "erasing" and "reportKey" not in item
    assert registry.get(accounts[0])["reportKey"] == report_key_for(accounts[0])
    messages = drain(stack["queues"]["ActionsQueue"])
    by_action = {(m["action"], m["reason"], m["accountId"]) for m in messages}
    assert by_action == {
        ("erase", "closed", TEST_ACCOUNT_CLOSED),
        ("erase", "closed", "closed-one"),
        ("refresh", "updated", "stale-one"),
    }
    assert all(m["schema"] == 1 and m["cycle"] == 1 and m["reportedAt"] for m in messages)

    # The classic scheduled-event shape works too; nothing is due again this cycle.
    emulator.configure({"clearLog": True})
    clock.install(ManualClock(T0 + timedelta(hours=1)))
    try:
        again = handler(SCHEDULED_EVENT, FakeContext())
    finally:
        clock.install(SystemClock())
    assert again["requests"] == 0 and again["accountsReported"] == 0

    # Two cycles later: every active account once in cycle 2, the closed ones never again.
    tick(handler, T0 + timedelta(days=7, minutes=1))
    summary = tick(handler, T0 + timedelta(days=14, minutes=1))
    state = DynamoStateStore(stack["tables"]["StateTable"], client=boto3.client("dynamodb")).load()
    assert state.cycle == 3 and state.cycle_start == T0 + timedelta(days=14)
    counts = Counter(reported(emulator))
    assert set(counts) == set(accounts) - {TEST_ACCOUNT_CLOSED, "closed-one"}
    assert set(counts.values()) == {1}
    assert all(1 <= e["accounts"] <= 90 for e in emulator.requests)
    cycle2_requests = [e for e in emulator.requests if e["status"] in (200, 204)]
    assert len(cycle2_requests) == math.ceil(299 / 90)
    assert summary["cycle"] == 3


def test_handler_follows_cycle_period_and_records_it(stack, handler):
    stack["registry"].record("acc-9", "site-a", T0)
    stack["emulator"].configure({"cyclePeriod": "P14D"})
    tick(handler, T0)
    state = DynamoStateStore(stack["tables"]["StateTable"], client=boto3.client("dynamodb")).load()
    assert state.cycle_length == timedelta(days=7)
    assert state.pending_cycle_length == timedelta(days=14)


def test_handler_rejects_unexpected_events(stack, handler):
    for event in ({}, {"source": "gdpr.scheduler", "action": "erase"}, {"Records": []}, []):
        with pytest.raises(ValueError, match="unsupported event"):
            handler(event, FakeContext())
    with pytest.raises(ValueError):
        handler({"source": "gdpr.scheduler", "action": "tick", "now": "yesterday"}, FakeContext())


def test_tables_come_from_the_template(stack):
    described = boto3.client("dynamodb").describe_table(TableName=stack["tables"]["AccountsTable"])["Table"]
    index = described["GlobalSecondaryIndexes"][0]
    assert index["IndexName"] == "due-index"
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["reportKey", "accountId"]
    assert NSHARDS == 256


# ------------------------------------------------------------------ 400, credentials, odd answers, time
def _state(stack):
    return DynamoStateStore(stack["tables"]["StateTable"], client=boto3.client("dynamodb")).load()


def _emf(captured: str) -> dict:
    """The metric values of the EMF lines Powertools printed (the last tick's last)."""
    values = {}
    for line in captured.splitlines():
        if '"_aws"' in line:
            record = json.loads(line)
            for metric in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                value = record[metric["Name"]]
                values[metric["Name"]] = value[-1] if isinstance(value, list) else value
    return values


def test_handler_bisects_a_400_and_quarantines_only_the_refused_account(stack, handler, capsys):
    from gdpr_core.reporting.status import reporter_status

    registry, emulator = stack["registry"], stack["emulator"]
    accounts = [f"5be24ad8{i:016x}" for i in range(200)]
    for a in accounts:
        registry.record(a, "site-a", T0 - timedelta(days=1))
    bad = accounts[77]
    emulator.configure({"refused": [bad]})
    summary = tick(handler, T0)
    assert summary["quarantined"] == 1 and summary["badRequests"] >= 1 and summary["stoppedBy"] is None
    counts = Counter(reported(emulator))
    assert set(counts) == set(accounts) - {bad} and set(counts.values()) == {1}
    assert all(e["accounts"] <= 90 for e in emulator.requests)
    item = registry.get(bad)
    assert (item["status"], item["reportKey"], item["quarantineReason"]) == ("active", "quarantine", "InvalidAccountId")
    assert registry.count_quarantined() == 1
    state_item = boto3.client("dynamodb").get_item(
        TableName=stack["tables"]["StateTable"], Key={"pk": {"S": "reporter"}}
    )["Item"]
    view = reporter_status(state_item, registry.count_quarantined(), now=T0)
    assert view["quarantined"] == 1 and view["cycle"] == 1 and bad not in json.dumps(view)
    metrics = _emf(capsys.readouterr().out)
    assert metrics["AccountsQuarantined"] == 1 and metrics["AccountsReported"] == 199
    # Quarantined accounts are never sent again, in this cycle or the next.
    emulator.configure({"clearLog": True})
    tick(handler, T0 + timedelta(days=7, hours=1))
    assert bad not in reported(emulator, status_ok=(200, 204, 400))


def test_handler_with_every_credential_refused_fails_after_saving_the_accounts_at_risk(
    stack, handler, capsys, monkeypatch
):
    from gdpr_core.reporting.run import NoUsableCredential

    registry, emulator = stack["registry"], stack["emulator"]
    accounts = [f"5be24ad8{i:016x}" for i in range(120)]
    for a in accounts:
        registry.record(a, "site-a", T0 - timedelta(days=1))
    emulator.configure({"tokens": ["some-other-token"]})
    with pytest.raises(NoUsableCredential, match="90 accounts at risk") as raised:
        tick(handler, T0)
    out = capsys.readouterr().out
    assert not any(a in str(raised.value) or a in out for a in accounts)
    metrics = _emf(out)
    assert metrics["AccountsAtRisk"] == 90 and metrics["AccountsReported"] == 0
    assert "OldestOverdueSeconds" in metrics
    state = _state(stack)
    assert (state.at_risk, state.last_error) == (90, "no_credential")
    assert {e["status"] for e in emulator.requests} == {401}  # both credentials tried, nothing else
    assert registry.query_due("new", None, 500).accounts  # still due
    emulator.configure({"tokens": [TOKEN], "clearLog": True})
    summary = tick(handler, T0 + timedelta(minutes=15))
    assert summary["atRisk"] == 0 and summary["accountsReported"] == 120
    assert Counter(reported(emulator)) == Counter(accounts)
    assert _emf(capsys.readouterr().out)["AccountsAtRisk"] == 0


def test_handler_ignores_answers_about_accounts_it_did_not_ask_about(stack, handler):
    registry, emulator = stack["registry"], stack["emulator"]
    registry.record("asked-1", "site-a", T0)
    registry.record("held-but-not-asked", "site-a", T0)
    registry.mark_reported_first("held-but-not-asked", report_key_for("held-but-not-asked"), 1)
    emulator.configure({"oddAnswers": ["held-but-not-asked", "stranger-9"]})
    summary = tick(handler, T0)
    assert summary["accountsReported"] == 1 and summary["closed"] == 0 and summary["ignoredAnswers"] == 2
    assert registry.get("held-but-not-asked")["status"] == "active"
    assert drain(stack["queues"]["ActionsQueue"]) == []


class ShortContext(FakeContext):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def test_handler_keeps_a_safety_margin_before_the_lambda_timeout(stack, handler):
    from gdpr_core.reporting.run import RunPolicy

    margin = inspect.unwrap(handler).__globals__["SAFETY_MARGIN_SECONDS"] + RunPolicy().min_seconds_per_request
    assert margin == 50.0
    stack["registry"].record("acc-1", "site-a", T0)
    event = {"source": "gdpr.scheduler", "action": "tick", "now": clock.format_rfc3339(T0)}
    summary = handler(event, ShortContext(margin - 1))
    assert summary["stoppedBy"] == "time_budget" and summary["requests"] == 0
    assert stack["emulator"].requests == []
    assert _state(stack).last_error == "time_budget"
    summary = handler(event, ShortContext(margin + 1))
    assert summary["stoppedBy"] is None and summary["accountsReported"] == 1


# ------------------------------------------------------------------ crashes with the real adapters
class Crash(BaseException):
    """The Lambda dying: no `except Exception` in the run sees it, so nothing more is written."""


class CrashAfter:
    """Proxies an adapter; the k-th effectful call (shared counter) raises Crash after it took effect."""

    def __init__(self, target, counter, names):
        self._target, self._counter, self._names = target, counter, names

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if name not in self._names:
            return attr

        def call(*args, **kwargs):
            result = attr(*args, **kwargs)
            self._counter["n"] += 1
            self._counter["log"].append(name)
            if self._counter["n"] == self._counter["k"]:
                raise Crash(name)
            return result

        return call


def _direct_run(stack, now, counter=None):
    from gdpr_core.reporting.contract import ReportClient
    from gdpr_core.reporting.run import ReportingRun, SqsActionSender

    ddb = boto3.client("dynamodb")
    parts = {
        "registry": stack["registry"],
        "state_store": DynamoStateStore(stack["tables"]["StateTable"], client=ddb),
        "sender": SqsActionSender(stack["queues"]["ActionsQueue"], client=boto3.client("sqs")),
        "client": ReportClient(stack["emulator"].url),
    }
    if counter is not None:
        effectful = {"save", "send", "report", "mark_erasing", "mark_reported_first", "quarantine"}
        parts = {k: CrashAfter(v, counter, effectful) for k, v in parts.items()}
    return ReportingRun(
        **parts,
        credentials=[{"id": "default", "type": "oauth3lo", "token": TOKEN}],
        now=lambda: now,
        sleep=lambda s: None,
        remaining_seconds=lambda: 600.0,
    ).run()


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_a_crash_after_the_kth_call_loses_nothing_on_moto(stack, k):
    registry, emulator = stack["registry"], stack["emulator"]
    accounts = [f"5be24ad8{i:016x}" for i in range(150)]
    for a in accounts:
        registry.record(a, "site-a", T0 - timedelta(days=1))
    closed = {accounts[5], accounts[100]}
    emulator.configure({"closed": sorted(closed), "updated": [accounts[6]]})
    counter = {"n": 0, "k": k, "log": []}
    with pytest.raises(Crash):
        _direct_run(stack, T0, counter)
    may_repeat = set(emulator.requests[-1]["accountIds"]) if counter["log"][-1] == "report" else set()
    summary = _direct_run(stack, T0 + timedelta(minutes=15))
    assert summary["stoppedBy"] is None and summary["complete"] is True
    counts = Counter(reported(emulator))
    assert set(counts) == set(accounts)
    assert {a for a, n in counts.items() if n > 1} <= may_repeat
    for a in closed:
        item = registry.get(a)
        assert item["status"] == "erasing" and "reportKey" not in item
    messages = drain(stack["queues"]["ActionsQueue"])
    assert {m["accountId"] for m in messages if m["action"] == "erase"} == closed
    assert {m["accountId"] for m in messages if m["action"] == "refresh"} == {accounts[6]}
    for a in set(accounts) - closed:
        assert registry.get(a)["reportKey"] == report_key_for(a)
    assert _state(stack).pending is None


# ------------------------------------------------------------------ measured: writes per account
def test_steady_state_costs_one_state_write_per_request(stack):
    """A whole steady-state cycle on moto, counting DynamoDB writes at the client (botocore hook)."""
    from gdpr_core.reporting.contract import ReportClient
    from gdpr_core.reporting.run import ReportingRun, SqsActionSender

    writes = Counter()

    def count(event_name, **_):
        writes[event_name.rsplit(".", 1)[-1]] += 1

    ddb = boto3.client("dynamodb")
    for operation in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"):
        ddb.meta.events.register(f"before-call.dynamodb.{operation}", count)
    n = 2000
    accounts = [f"5be24ad8{i:016x}" for i in range(n)]
    table = stack["tables"]["AccountsTable"]
    for start in range(0, n, 25):  # already reported once: steady state, keys in their shards
        ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": {
            "accountId": {"S": a}, "sites": {"SS": ["site-a"]}, "status": {"S": "active"},
            "updatedAt": {"S": "2026-01-01T00:00:00.000Z"}, "reportKey": {"S": report_key_for(a)},
        }}} for a in accounts[start:start + 25]]})
    registry = Registry(table, Pseudonymizer(PSEUDONYM_KEY), client=ddb)
    state_store = DynamoStateStore(stack["tables"]["StateTable"], client=ddb)
    sender = SqsActionSender(stack["queues"]["ActionsQueue"], client=boto3.client("sqs"))
    client = ReportClient(stack["emulator"].url)
    credentials = [{"id": "default", "type": "oauth3lo", "token": TOKEN}]

    def run_ticks(start, end, step=timedelta(hours=1)):
        now = start
        while now < end:
            ReportingRun(registry=registry, state_store=state_store, sender=sender, client=client,
                         credentials=credentials, now=lambda now=now: now, sleep=lambda s: None,
                         remaining_seconds=lambda: 600.0).run()
            now += step

    from gdpr_core.reporting.planner import CycleState

    done = CycleState.initial(T0, timedelta(days=7))  # cycle 1 finished: the next tick rolls over
    done.shard = NSHARDS
    state_store.save(done)
    writes.clear()
    run_ticks(T0 + timedelta(days=7), T0 + timedelta(days=14), step=timedelta(hours=2))  # cycle 2
    last = T0 + timedelta(days=14) - timedelta(seconds=1)  # its last shard is due, the next cycle not yet
    run_ticks(last, last + timedelta(seconds=1))
    answered = [e for e in stack["emulator"].requests if e["status"] in (200, 204)]
    reported_accounts = sum(e["accounts"] for e in answered)
    total = sum(writes.values())
    print(f"\nsteady state: {n} accounts, {len(answered)} requests/cycle, {total} DynamoDB writes "
          f"({dict(writes)}), {total / reported_accounts:.4f} writes per reported account")
    assert reported_accounts == n and len(answered) == math.ceil(n / 90)
    # One checkpoint per request, plus the cycle's rollover and its end: (ceil(n/90) + 2) / n, which
    # tends to 1/90 = 0.0111 per account. No registry write at all: the schedule is derived.
    assert writes == Counter({"PutItem": len(answered) + 2})
