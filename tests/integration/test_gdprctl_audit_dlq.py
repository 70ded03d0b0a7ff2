"""`gdprctl audit export` and `gdprctl dlq replay` on moto, with the audit table and the queues built
from infra/template.yaml: what the auditor gets, which calls it costs, and that replay loses nothing."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from gdpr_core.erasure import audit
from gdpr_core.erasure.engine import StoreResult
from gdpr_core.pseudonym import Pseudonymizer
from gdprctl import main as cli
from tests.support import moto_world, stacks

REGION = "us-east-1"
ACCOUNTS = [f"5be24ba3f91c1060332{n:05d}" for n in range(130)]
NAMES = ("Ada Lovelace", "ada.lovelace@example.com")
PZ = Pseudonymizer("cli-test-pseudonym-key")


class Counter:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, model, params, **kwargs):
        self.calls.append((model.name, params))

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)


class MotoTarget:
    """What gdprctl's resolve() gives: the functions' environment, clients and the stack outputs."""

    def __init__(self, tables: dict[str, str], queues: dict[str, str]):
        self.tables, self.queues = tables, queues
        self.counter = Counter()
        self._clients: dict[str, Any] = {}

    def env(self) -> dict[str, dict[str, str]]:
        return {"ErasureFunction": {"AUDIT_TABLE": self.tables["AuditTable"]}}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = boto3.client(service, region_name=REGION)
            self._clients[service].meta.events.register(f"provide-client-params.{service}.*", self.counter)
        return self._clients[service]

    def output(self, name: str) -> str:
        return {"ActionsQueueUrl": self.queues["ActionsQueue"],
                "ActionsDeadLetterQueueUrl": self.queues["ActionsDeadLetterQueue"]}[name]


@pytest.fixture
def target(monkeypatch):
    moto_world.fake_aws_env(monkeypatch, REGION)
    with moto_world.mocked_aws():
        tables = stacks.create_service_tables(boto3.client("dynamodb", region_name=REGION))
        queues = stacks.create_queues(boto3.client("sqs", region_name=REGION))
        t = MotoTarget(tables, queues)
        monkeypatch.setattr(cli, "resolve", lambda stack, region=None: t)
        yield t


def write_records(target: MotoTarget, today: datetime) -> list[dict[str, Any]]:
    """130 erase records, ten days back to today, some hours apart; returns them oldest first."""
    writer = audit.AuditWriter(target.tables["AuditTable"], target.client("dynamodb"))
    records = []
    for n, account in enumerate(ACCOUNTS):
        finished = today - timedelta(days=9 - n % 10, hours=n % 7, milliseconds=n)
        record = audit.build_record(action="erase", subject=PZ.account(account), cycle=3,
                                    reported_at="2026-11-01T00:00:00.000Z",
                                    results=[StoreResult("profile-cache", 1, 1), StoreResult("avatars", 2, 2)],
                                    started_at=finished - timedelta(seconds=1), finished_at=finished)
        assert writer.write(record)
        records.append(record)
    target.counter.calls.clear()
    return sorted(records, key=lambda r: r["recordedAt"])


def run(*argv: str) -> int:
    return cli.main(list(argv))


def assert_no_pd(text: str) -> None:
    for needle in (*ACCOUNTS, *NAMES):
        assert needle not in text, "personal data in the export"


# ------------------------------------------------------------------ audit export
def test_audit_export_since_queries_one_partition_per_day_as_jsonl(target, capsys):
    today = datetime.now(UTC)
    records = write_records(target, today)
    since = (today - timedelta(days=3)).replace(hour=12, minute=0, second=0, microsecond=0)
    assert run("audit", "export", "--since", since.isoformat().replace("+00:00", "Z")) == 0
    out = capsys.readouterr().out
    lines = [json.loads(x) for x in out.splitlines()]
    expected = [r for r in records if r["recordedAt"] >= since.strftime("%Y-%m-%dT%H:%M:%S.000Z")]
    assert expected and len(expected) < len(records)
    assert [x["recordId"] for x in lines] == [r["recordId"] for r in expected]
    assert lines[0] == json.loads(json.dumps(expected[0]))  # the whole record, nothing added
    days = (today.date() - since.date()).days + 1
    queries = [p for n, p in target.counter.calls if n == "Query"]
    assert target.counter.count("Scan") == 0
    assert len(queries) == days  # one page per day partition here
    assert {p["IndexName"] for p in queries} == {"day-index"}
    assert sorted(p["ExpressionAttributeValues"][":d"]["S"] for p in queries) == [
        (since.date() + timedelta(days=d)).isoformat() for d in range(days)]
    assert_no_pd(out)


def test_audit_export_csv_with_out_file(target, tmp_path, capsys):
    records = write_records(target, datetime.now(UTC))
    path = tmp_path / "audit.csv"
    since = (datetime.now(UTC) - timedelta(days=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert run("audit", "export", "--format", "csv", "--since", since, "--out", str(path)) == 0
    assert capsys.readouterr().out == ""
    text = path.read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["recordId"] for r in rows] == [r["recordId"] for r in records]
    assert rows[0]["subject"] == records[0]["subject"] and rows[0]["verified"] == "true"  # as in the JSON lines export
    assert json.loads(rows[0]["stores"])["avatars"] == {"deleted": 2, "found": 2, "remaining": 0, "scrubbed": 0}
    assert json.loads(rows[0]["source"]) == json.loads(json.dumps(records[0]["source"], default=str))
    assert json.loads(rows[0]["source"])["cycle"] == 3  # what the record was written with
    assert target.counter.count("Scan") == 0 and target.counter.count("Query") == 13
    assert_no_pd(text)


def test_audit_export_without_since_or_over_years_reads_the_table_once(target, capsys):
    today = datetime.now(UTC)
    records = write_records(target, today)
    assert run("audit", "export") == 0
    out = capsys.readouterr().out
    assert [json.loads(x)["recordId"] for x in out.splitlines()] == [r["recordId"] for r in records]
    assert target.counter.count("Query") == 0 and target.counter.count("Scan") == 1
    assert_no_pd(out)

    # Since 2000: thousands of mostly empty day partitions; one filtered read of the table instead.
    target.counter.calls.clear()
    since = (today - timedelta(days=2)).strftime("%Y-%m-%dT00:00:00Z")
    assert run("audit", "export", "--since", "2000-01-01T00:00:00Z") == 0
    assert len(capsys.readouterr().out.splitlines()) == len(records)
    assert target.counter.count("Query") == 0 and target.counter.count("Scan") == 1
    far = (today - timedelta(days=cli.AUDIT_QUERY_MAX_DAYS + 1)).strftime("%Y-%m-%dT00:00:00Z")
    target.counter.calls.clear()
    assert run("audit", "export", "--since", far) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(records)
    assert target.counter.count("Scan") == 1
    assert run("audit", "export", "--since", since) == 0
    assert [json.loads(x)["recordId"] for x in capsys.readouterr().out.splitlines()] == [
        r["recordId"] for r in records if r["recordedAt"] >= since.replace("Z", ".000Z")]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_audit_export_shows_progress_on_a_terminal_only(target, capsys, monkeypatch):
    write_records(target, datetime.now(UTC))
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    since = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert run("audit", "export", "--since", since) == 0
    assert "\rexporting: 50" in terminal.getvalue() and "\rexporting: 100" in terminal.getvalue()
    out = capsys.readouterr().out
    assert "exporting" not in out and len(out.splitlines()) == len(ACCOUNTS)

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no progress at all
    assert run("audit", "export") == 0
    assert sys.stderr.getvalue() == ""


def test_audit_export_rejects_a_bad_since_precisely(target, capsys):
    assert run("audit", "export", "--since", "last tuesday") == 1
    assert capsys.readouterr().err.strip() == "gdprctl: not an RFC 3339 timestamp"
    assert target.counter.calls == []


# ------------------------------------------------------------------ dlq replay
def depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attrs.values())


def dead_letters(target: MotoTarget, n: int) -> list[str]:
    sqs = target.client("sqs")
    bodies = [json.dumps({"schema": 1, "action": "erase", "accountId": a, "cycle": 3}) for a in ACCOUNTS[:n]]
    for i, body in enumerate(bodies):
        extra = {"MessageAttributes": {"origin": {"DataType": "String", "StringValue": "reporter"}}} if i % 2 else {}
        sqs.send_message(QueueUrl=target.output("ActionsDeadLetterQueueUrl"), MessageBody=body, **extra)
    target.counter.calls.clear()
    return bodies


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                    WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return got
        got.extend(batch)


def test_dlq_replay_moves_every_dead_letter_back_unchanged(target, capsys):
    bodies = dead_letters(target, 23)
    assert run("dlq", "replay", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"replayed": 23}
    sqs = target.client("sqs")
    assert depth(sqs, target.output("ActionsDeadLetterQueueUrl")) == 0
    moved = receive_all(sqs, target.output("ActionsQueueUrl"))
    assert sorted(m["Body"] for m in moved) == sorted(bodies)
    with_attributes = [m for m in moved if m.get("MessageAttributes")]
    assert len(with_attributes) == 11
    assert all(m["MessageAttributes"]["origin"]["StringValue"] == "reporter" for m in with_attributes)

    assert run("dlq", "replay") == 0  # nothing left: says so, moves nothing
    assert capsys.readouterr().out.strip() == "replayed 0 messages from the dead-letter queue"


def test_dlq_replay_failing_midway_loses_nothing(target, monkeypatch, capsys):
    dead_letters(target, 12)
    sqs = target.client("sqs")
    real_send, sent = sqs.send_message, []

    def send(**params):
        if len(sent) == 4:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "try later"}}, "SendMessage")
        sent.append(params)
        return real_send(**params)

    monkeypatch.setattr(sqs, "send_message", send)
    assert run("dlq", "replay") == 1
    assert capsys.readouterr().err.strip() == "gdprctl: AWS ServiceUnavailable: try later"
    # Four moved; the rest are still in the DLQ (those received but not sent are only hidden until
    # their visibility timeout), so a second replay finishes the job.
    assert depth(sqs, target.output("ActionsQueueUrl")) == 4
    assert depth(sqs, target.output("ActionsDeadLetterQueueUrl")) == 8


# ------------------------------------------------------------------ dlq list / drop
def test_dlq_list_describes_every_dead_letter_without_account_ids_and_drop_deletes_only_the_chosen(target, capsys):
    from gdpr_core.lifecycle.uninstall import LifecycleMessage

    dead_letters(target, 12)
    sqs, dlq = target.client("sqs"), target.output("ActionsDeadLetterQueueUrl")
    reinstall = LifecycleMessage("reinstall", "acme.atlassian.net", "2026-12-01T10:00:00.000Z").body()
    sqs.send_message(QueueUrl=dlq, MessageBody=reinstall)
    sqs.send_message(QueueUrl=dlq, MessageBody="not json " + ACCOUNTS[20])

    assert run("dlq", "list", "--json") == 0
    out = capsys.readouterr().out
    rows = json.loads(out)["deadLetters"]
    assert_no_pd(out)
    assert len(rows) == 14 and depth(sqs, dlq) == 14
    assert sorted(r["kind"] for r in rows) == ["erase"] * 12 + ["malformed", "reinstall"]
    (lifecycle,) = [r for r in rows if r["kind"] == "reinstall"]
    assert (lifecycle["site"], lifecycle["requestedAt"]) == ("acme.atlassian.net", "2026-12-01T10:00:00.000Z")
    # Listing put every message back: all visible at once for replay or another list.
    visible = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
    assert visible["Attributes"]["ApproximateNumberOfMessages"] == "14"

    assert run("dlq", "drop", lifecycle["messageId"]) == 0
    assert capsys.readouterr().out.strip() == f"dropped dead letter {lifecycle['messageId']}"
    assert run("dlq", "drop", lifecycle["messageId"]) == 1  # gone: said so, nothing else deleted
    assert "no dead letter has that messageId" in capsys.readouterr().err
    assert run("dlq", "list", "--json") == 0
    left = json.loads(capsys.readouterr().out)["deadLetters"]
    assert sorted(r["kind"] for r in left) == ["erase"] * 12 + ["malformed"]
