"""Lifecycle on moto: site uninstall (through the erasure function's actions queue, chunked and
resumable) and the retention sweep (its schedule event), with tables, buckets and queues built from the
templates and the function's environment as CloudFormation resolves it."""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gdpr_core import clock
from gdpr_core.erasure.service import export_subject
from gdpr_core.lifecycle import uninstall as lifecycle_uninstall
from gdpr_core.pseudonym import Pseudonymizer
from gdpr_core.registry import DUE_INDEX, Registry
from gdpr_sandbox.sample_app import seed
from tests.support import aws_events, moto_world, stacks

REGION = "us-east-1"
REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "functions" / "erasure" / "app.py"
PD_MAP = REPO / "layers" / "core" / "python" / "gdpr_core" / "personal_data_map.json"
VISIBILITY_TIMEOUT = int(stacks.load_template()["Resources"]["ActionsQueue"]["Properties"]["VisibilityTimeout"])
SQS_SAMPLE = json.loads(aws_events.path("sqs-receive-message.json").read_text())
PSEUDONYM_KEY = "lifecycle-test-pseudonym-key-0123456789"
PZ = Pseudonymizer(PSEUDONYM_KEY)
NOW = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
GONE, SHARED, OTHER = "5be24ad8b1653240376955d2", "5be24ba3f91c106033269289", "5be25c4e2b1c3d4e5f607182"
SITE, OTHER_SITE = "globex.atlassian.net", "initech.atlassian.net"


def line(account_id: str, site: str, n: int, comments: int = 2, updated: str = "2026-11-20T00:00:00.000Z") -> dict:
    return {"accountId": account_id, "site": site, "updatedAt": updated,
            "profile": {"displayName": f"Person {account_id[-6:]}", "email": f"p{account_id[-6:]}@example.org",
                        "avatarUrl": f"https://avatars.example.net/{n}.png"},
            "comments": [{"commentId": f"c-{account_id}-{site}-{i}", "body": "ok", "createdAt": updated}
                         for i in range(comments)]}


class LambdaContext(moto_world.LambdaContext):
    function_name = "gdpr-erasure"
    region = REGION
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    remaining_ms = 120_000


class HardKill(BaseException):
    """A Lambda killed mid-run (timeout, out of memory): no except-Exception block gets to run."""


@dataclass
class World:
    ddb: Any
    s3: Any
    sqs: Any
    env: dict[str, str]
    app: Any
    logs: io.StringIO
    queue: str
    clock: clock.ManualClock
    dlq: str = ""

    def invoke(self, messages: list[dict], context: LambdaContext | None = None) -> dict:
        records = []
        for m in messages:
            record = copy.deepcopy(SQS_SAMPLE["Records"][0])
            record.update(body=m["Body"], messageId=m["MessageId"], receiptHandle=m["ReceiptHandle"])
            records.append(record)
        return self.app.lambda_handler({"Records": records}, context or LambdaContext())

    def drain(self, max_rounds: int = 2000, context: LambdaContext | None = None,
              batch: int = 10) -> dict[str, int]:
        """Emulates the event-source mapping: failed items become visible again (a redelivery); a
        HardKill fails the whole batch, as a Lambda that died does."""
        seen = {"messages": 0, "failed": 0, "killed": 0}
        for _ in range(max_rounds):
            got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=batch).get("Messages", [])
            if not got:
                return seen
            try:
                failed = {f["itemIdentifier"] for f in self.invoke(got, context)["batchItemFailures"]}
            except HardKill:
                seen["killed"] += 1
                failed = {m["MessageId"] for m in got}
                # SQS redelivers a dead Lambda's messages after the visibility timeout, by which time the
                # chunk lease the dead run held has run out.
                self.clock.advance(seconds=VISIBILITY_TIMEOUT)
            for m in got:
                seen["messages"] += 1
                if m["MessageId"] in failed:
                    seen["failed"] += 1
                    self.sqs.change_message_visibility(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"],
                                                       VisibilityTimeout=0)
                else:
                    self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])
        raise AssertionError("the queue did not drain")

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.queue, MessageBody=body)

    def tick(self) -> dict:
        return self.app.lambda_handler({"source": "gdpr.scheduler", "action": "lifecycle"}, LambdaContext())

    def scan(self, table_env: str) -> list[dict]:
        return [i for p in self.ddb.get_paginator("scan").paginate(TableName=self.env[table_env]) for i in p["Items"]]

    def profile(self, account_id: str) -> dict | None:
        return self.ddb.get_item(TableName=self.env["PROFILE_CACHE_TABLE"],
                                 Key={"accountId": {"S": account_id}}).get("Item")

    def registry(self, account_id: str) -> dict | None:
        return Registry(self.env["REGISTRY_TABLE"], PZ, client=self.ddb).get(account_id)

    def avatars(self) -> set[str]:
        page = self.s3.list_object_versions(Bucket=self.env["AVATAR_BUCKET"])
        return {v["Key"] for v in page.get("Versions", [])} | {v["Key"] for v in page.get("DeleteMarkers", [])}

    def audit(self) -> list[dict]:
        return self.scan("AUDIT_TABLE")

    def export(self, account_id: str) -> dict:
        return export_subject(self.env, account_id, clients=lambda s: boto3.client(s, region_name=REGION),
                              pseudonymizer=PZ)


def _world(monkeypatch, grace: str = "0", chunk: str = "200"):
    moto_world.fake_aws_env(monkeypatch, REGION)
    with moto_world.mocked_aws():
        ddb, s3, sqs = (boto3.client(s, region_name=REGION) for s in ("dynamodb", "s3", "sqs"))
        stacks.create_sample_app(ddb, s3)
        tables = stacks.create_service_tables(ddb)
        queues = stacks.create_queues(sqs)
        secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="pseudonym-key", SecretString=PSEUDONYM_KEY)["ARN"]
        env = stacks.function_environment("ErasureFunction", {**tables, **queues, "UninstallGraceHours": grace,
                                                              "UninstallChunkSize": chunk})
        env.update(PSEUDONYM_KEY_SECRET_ARN=secret, POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_LOG_LEVEL="DEBUG",
                   AWS_LAMBDA_FUNCTION_NAME="gdpr-erasure")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with moto_world.manual_clock(NOW) as manual:
            app = moto_world.load_handler(HANDLER)
            with moto_world.redirect_logs(app.logger, io.StringIO()) as logs:
                yield World(ddb, s3, sqs, env, app, logs, queues["ActionsQueue"], manual,
                            queues["ActionsDeadLetterQueue"])


@pytest.fixture
def world(monkeypatch):
    yield from _world(monkeypatch)


@pytest.fixture
def grace_world(monkeypatch):
    yield from _world(monkeypatch, grace="24")


@pytest.fixture
def chunked_world(monkeypatch):
    yield from _world(monkeypatch, chunk="20")


def _seed(w: World, lines: list[dict]) -> None:
    seed(boto3, w.env, lines, PZ)


def _uninstall(w: World, site: str = SITE, at: datetime = NOW) -> str:
    body = lifecycle_uninstall.request_message(site, at)
    w.send(body)
    return json.loads(body)["requestedAt"]


def _assert_no_pd(text: str, accounts: list[str], lines: list[dict], site: str = SITE) -> None:
    for account_id in accounts:
        assert account_id not in text
    for ln in lines:
        assert ln["profile"]["email"] not in text and ln["profile"]["displayName"] not in text
    assert site not in text


def _due_accounts(w: World) -> set[str]:
    items = w.ddb.query(TableName=w.env["REGISTRY_TABLE"], IndexName=DUE_INDEX,
                        KeyConditionExpression="reportKey = :k", ExpressionAttributeValues={":k": {"S": "new"}})
    return {i["accountId"]["S"] for i in items["Items"]}


# ------------------------------------------------------------------ uninstall
def test_uninstall_erases_the_site_and_keeps_accounts_of_other_sites(world):
    lines = [line(GONE, SITE, 0), line(SHARED, SITE, 1), line(SHARED, OTHER_SITE, 2, comments=3),
             line(OTHER, OTHER_SITE, 3)]
    _seed(world, lines)
    before_export = world.export(SHARED)
    assert len(before_export["comments"]) == 5 and len(before_export["avatars"]) == 2
    requested = _uninstall(world)
    world.drain()

    # Only on the uninstalled site: nothing left anywhere, not reported any more, no tombstone.
    export = world.export(GONE)
    assert all(rows == [] for rows in export.values()), export
    assert world.registry(GONE) is None
    assert not [i for i in world.scan("REGISTRY_TABLE") if i["accountId"]["S"].startswith("tombstone#")]
    # Shared: the other site's data stays, the uninstalled site's is gone, still reported.
    profile = world.profile(SHARED)
    assert profile["sites"]["SS"] == [OTHER_SITE] and profile["email"]["S"] == lines[1]["profile"]["email"]
    comments = {i["commentId"]["S"]: i for i in world.scan("COMMENTS_TABLE")}
    for c in lines[1]["comments"]:
        assert "authorAccountId" not in comments[c["commentId"]] and comments[c["commentId"]]["authorName"]["S"] == \
            "Former user"
    for c in lines[2]["comments"]:
        assert comments[c["commentId"]]["authorAccountId"]["S"] == SHARED
    assert world.avatars() == {f"avatars/{SHARED}/{OTHER_SITE}.png", f"avatars/{OTHER}/{OTHER_SITE}.png"}
    assert world.registry(SHARED)["sites"] == [OTHER_SITE]
    assert world.registry(OTHER)["sites"] == [OTHER_SITE]
    assert _due_accounts(world) == {SHARED, OTHER}  # reported (once per cycle) as before; GONE never again

    (record,) = world.audit()
    assert record["recordId"]["S"] == f"uninstall#{PZ.site(SITE)}#{requested}"
    stores = engine_plain(record["stores"])
    assert stores["registry"] == {"found": 2, "deleted": 1, "scrubbed": 1, "remaining": 0}
    assert stores["profile-cache"] == {"found": 2, "deleted": 1, "scrubbed": 1, "remaining": 0}
    assert stores["comments"] == {"found": 4, "deleted": 0, "scrubbed": 4, "remaining": 0}
    assert stores["avatars"] == {"found": 2, "deleted": 2, "remaining": 0, "scrubbed": 0}
    assert record["verified"] == {"BOOL": True}
    _assert_no_pd(json.dumps(record), [GONE, SHARED, OTHER], lines)
    _assert_no_pd(world.logs.getvalue(), [GONE, SHARED, OTHER], lines)

    # Redelivered request and chunk: nothing runs twice, still one audit record.
    world.send(lifecycle_uninstall.LifecycleMessage("uninstall", SITE, requested, 0).body())
    world.send(lifecycle_uninstall.request_message(SITE, NOW))
    world.drain()
    assert len(world.audit()) == 1


def engine_plain(value: dict) -> dict:
    from gdpr_core.erasure.engine import from_attr

    return from_attr(value)


def test_an_uninstall_of_a_site_that_held_nothing_is_audited_with_every_store_at_0_found(world):
    _seed(world, [line(OTHER, OTHER_SITE, 0)])
    _uninstall(world)
    world.drain()
    (record,) = world.audit()
    stores = engine_plain(record["stores"])
    store_names = [s["name"] for s in json.loads(PD_MAP.read_text())["stores"] if s["uninstall"]["action"] != "none"]
    assert sorted(stores) == sorted(store_names) and "consent" not in stores
    assert all(row == {"found": 0, "deleted": 0, "scrubbed": 0, "remaining": 0} for row in stores.values())
    assert engine_plain(record["source"])["accounts"] == 0 and record["verified"] == {"BOOL": True}
    assert world.registry(OTHER)["sites"] == [OTHER_SITE] and world.profile(OTHER) is not None


def test_malformed_uninstall_fails_only_its_item_without_echoing_the_site(world):
    world.send(json.dumps({"schema": 1, "action": "uninstall", "site": "bad site/..", "requestedAt": "x"}))
    got = world.sqs.receive_message(QueueUrl=world.queue, MaxNumberOfMessages=1)["Messages"]
    answer = world.invoke(got)
    assert len(answer["batchItemFailures"]) == 1
    assert "bad site" not in world.logs.getvalue()
    assert '"reason":"site must be a site id' in world.logs.getvalue().replace(": ", ":")


def test_a_request_dated_in_the_future_is_refused_and_does_not_block_a_reinstall(world):
    _seed(world, [line(GONE, SITE, 0)])
    for action in ("uninstall", "reinstall"):
        world.send(json.dumps({"schema": 1, "action": action, "site": SITE,
                               "requestedAt": clock.format_rfc3339(NOW + timedelta(hours=1))}))
        got = world.sqs.receive_message(QueueUrl=world.queue, MaxNumberOfMessages=1)["Messages"]
        assert len(world.invoke(got)["batchItemFailures"]) == 1  # redelivered, then the DLQ and its alarm
        world.sqs.delete_message(QueueUrl=world.queue, ReceiptHandle=got[0]["ReceiptHandle"])
    assert lifecycle_uninstall.list_states(world.ddb, world.env["STATE_TABLE"]) == []
    assert "more than 15 minutes in the future" in world.logs.getvalue()
    # Within the allowed skew it counts: due at its own time, then the site is erased.
    _uninstall(world, at=NOW + timedelta(minutes=10))
    world.drain()
    assert world.profile(GONE) is not None
    world.clock.advance(minutes=10)
    assert world.tick()["uninstallsStarted"] == 1
    world.drain()
    assert world.profile(GONE) is None and len(world.audit()) == 1


def test_the_operator_cancels_a_pending_uninstall_dated_a_little_ahead(world):
    from gdpr_core.lifecycle.service import build_uninstall

    _seed(world, [line(GONE, SITE, 0)])
    _uninstall(world, at=NOW + timedelta(minutes=10))  # the sender's clock runs ahead (allowed skew)
    world.drain()
    service = build_uninstall(world.env, clients=lambda s: boto3.client(s, region_name=REGION), pseudonymizer=PZ)
    # A re-install message dated now is older than the request, within the skew: refused loudly ...
    with pytest.raises(lifecycle_uninstall.UninstallRefused, match="their order is uncertain"):
        service.reinstall(SITE, clock.format_rfc3339(NOW))
    # ... but the operator, acting after seeing it pending, cancels it.
    assert service.cancel(SITE)["outcome"] == "cancelled"
    world.clock.advance(minutes=20)
    assert world.tick()["uninstallsStarted"] == 0
    world.drain()
    assert world.profile(GONE) is not None and world.audit() == []


def test_a_registration_with_a_site_that_is_not_a_site_id_is_refused_without_echoing_it(world):
    registry = Registry(world.env["REGISTRY_TABLE"], PZ, client=world.ddb)
    with pytest.raises(ValueError, match="site must be a site id") as refused:
        registry.record(GONE, "bad site jane@example.org", NOW)
    assert "jane" not in str(refused.value)
    assert world.scan("REGISTRY_TABLE") == []  # nothing written


def _events(w: World) -> Any:
    """moto's EventBridge with the template's rules, their targets the world's queues."""
    events = boto3.client("events", region_name=REGION)
    if not events.list_rules()["Rules"]:
        assert stacks.create_event_rules(events, w.sqs, {"ActionsQueue": w.queue,
                                                          "ActionsDeadLetterQueue": w.dlq}) == ["AppLifecycleRule"]
    return events


def _publish(w: World, action: str, site: str = SITE, at: datetime | None = None) -> None:
    """The app publishes its lifecycle event; the template's rule puts it on the actions queue."""
    answer = _events(w).put_events(Entries=[lifecycle_uninstall.app_event(site, action, at or w.clock.now())])
    assert answer["FailedEntryCount"] == 0


def test_an_uninstall_the_app_publishes_on_eventbridge_erases_the_site(world):
    lines = [line(GONE, SITE, 0), line(SHARED, SITE, 1), line(SHARED, OTHER_SITE, 2)]
    _seed(world, lines)
    _publish(world, "uninstall")
    # An event for another app's source or another detail-type never reaches the queue.
    boto3.client("events", region_name=REGION).put_events(Entries=[
        {**lifecycle_uninstall.app_event(OTHER_SITE), "Source": "some-other-app"},
        {**lifecycle_uninstall.app_event(OTHER_SITE), "DetailType": "App Upgraded"}])
    assert world.drain() == {"messages": 2, "failed": 0, "killed": 0}  # the event, then chunk 0
    assert world.export(GONE) == {k: [] for k in world.export(GONE)}
    assert world.registry(SHARED)["sites"] == [OTHER_SITE] and world.profile(SHARED) is not None
    (record,) = world.audit()
    assert record["action"] == {"S": "uninstall"} and record["verified"] == {"BOOL": True}
    _assert_no_pd(json.dumps(record) + world.logs.getvalue(), [GONE, SHARED], lines)
    # EventBridge delivers at least once: the same event again changes nothing.
    _publish(world, "uninstall", at=NOW)
    world.drain()
    assert len(world.audit()) == 1 and world.registry(SHARED)["sites"] == [OTHER_SITE]


def test_a_malformed_event_the_app_publishes_ends_in_the_dlq_without_echoing_the_site(world):
    bad = {**lifecycle_uninstall.app_event(SITE), "Detail": json.dumps({"site": "bad site/..", "by": "x"})}
    _events(world).put_events(Entries=[bad])
    assert world.drain() == {"messages": 5, "failed": 5, "killed": 0}  # maxReceiveCount, then the DLQ
    (dead,) = world.sqs.receive_message(QueueUrl=world.dlq, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(dead["Body"])["detail"] == {"site": "bad site/..", "by": "x"}  # kept whole, for replay
    assert "1 unknown field in the EventBridge detail" in world.logs.getvalue()
    assert "bad site" not in world.logs.getvalue()
    assert lifecycle_uninstall.list_states(world.ddb, world.env["STATE_TABLE"]) == []


def test_reinstall_within_the_grace_period_erases_nothing(grace_world):
    w = grace_world
    lines = [line(GONE, SITE, 0), line(SHARED, SITE, 1), line(SHARED, OTHER_SITE, 2)]
    _seed(w, lines)
    _uninstall(w)
    w.drain()
    (state,) = lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])
    assert state["state"] == "pending" and state["dueAt"] == clock.format_rfc3339(NOW + timedelta(hours=24))
    w.clock.advance(hours=1)
    w.tick()  # not due yet
    assert w.profile(GONE) is not None
    w.send(json.dumps({"schema": 1, "action": "reinstall", "site": SITE,
                       "requestedAt": clock.format_rfc3339(w.clock.now())}))
    w.drain()
    w.clock.advance(hours=30)
    summary = w.tick()
    w.drain()
    assert summary["uninstallsStarted"] == 0
    assert w.profile(GONE) is not None and w.registry(GONE)["sites"] == [SITE]
    assert len(w.avatars()) == 3 and w.audit() == []
    (state,) = lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])
    assert state["state"] == "installed" and "site" not in state
    # An uninstall message older than the re-install (late delivery) is ignored.
    _uninstall(w, at=NOW + timedelta(minutes=5))
    w.drain()
    assert lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])[0]["state"] == "installed"


def test_a_request_dated_long_ago_still_waits_the_whole_grace_period(grace_world):
    """A late delivery or a sender's stale time must not skip the grace period (the re-install could then
    no longer cancel it); a sender's unset time (year 1) is refused outright."""
    w = grace_world
    _seed(w, [line(GONE, SITE, 0)])
    _uninstall(w, at=NOW - timedelta(days=3))
    w.drain()
    (state,) = lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])
    assert state["state"] == "pending" and state["dueAt"] == clock.format_rfc3339(NOW + timedelta(hours=24))
    w.clock.advance(hours=2)
    assert w.tick()["uninstallsStarted"] == 0 and w.profile(GONE) is not None
    w.send(json.dumps({"schema": 1, "action": "reinstall", "site": SITE,
                       "requestedAt": clock.format_rfc3339(w.clock.now())}))
    w.drain()
    assert lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])[0]["state"] == "installed"

    for unset in ("0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z"):
        body = json.dumps({"schema": 1, "action": "uninstall", "site": OTHER_SITE, "requestedAt": unset})
        assert len(_deliver_one(w, body)) == 1
    assert w.logs.getvalue().count("requestedAt is more than 15 days in the past") == 2
    assert len(lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])) == 1  # nothing recorded for them
    assert w.profile(GONE) is not None and w.audit() == []


def _cli_on(w: World, monkeypatch) -> None:
    """gdprctl's stack lookup pointed at this moto world."""
    from gdprctl import main as cli

    class Target:
        def env(self):
            return {"ErasureFunction": w.env}

        def client(self, service):
            return boto3.client(service, region_name=REGION)

        def output(self, name):
            return {"ActionsQueueUrl": w.queue}[name]

    monkeypatch.setattr(cli, "resolve", lambda stack, region=None: Target())


def test_the_operator_is_told_a_graced_uninstall_waits_for_its_due_time(grace_world, monkeypatch, capsys):
    from gdprctl import main as cli

    w = grace_world
    _seed(w, [line(GONE, SITE, 0)])
    _cli_on(w, monkeypatch)
    # Dated two days ago: still due a whole grace period after it arrives, and the operator is told so.
    assert cli.main(["sites", "uninstall", SITE, "--at", clock.format_rfc3339(NOW - timedelta(days=2))]) == 0
    out = capsys.readouterr().out
    assert w.drain()["failed"] == 0 and w.profile(GONE) is not None  # recorded, nothing erased yet
    (state,) = lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])
    assert state["state"] == "pending" and state["dueAt"] == clock.format_rfc3339(NOW + timedelta(hours=24))
    assert f"stays pending until about {state['dueAt']}" in out and "unless the site is re-installed first" in out
    assert "erases the site's data when it reads it" not in out


def test_the_operators_uninstall_is_dated_after_a_reinstall_recorded_ahead_of_its_clock(world, monkeypatch,
                                                                                         capsys):
    """A re-install dated a little ahead (allowed skew) must not leave the operator unable to uninstall:
    `gdprctl sites uninstall` dates its request just after it, and the function applies it."""
    from gdprctl import main as cli

    w = world
    _seed(w, [line(GONE, SITE, 0)])
    ahead = NOW + timedelta(minutes=14)
    assert _deliver_one(w, json.dumps({"schema": 1, "action": "reinstall", "site": SITE,
                                       "requestedAt": clock.format_rfc3339(ahead)})) == []

    _cli_on(w, monkeypatch)
    assert cli.main(["sites", "uninstall", SITE, "--json"]) == 0
    queued = json.loads(capsys.readouterr().out)["queued"]
    assert queued["requestedAt"] == clock.format_rfc3339(ahead + timedelta(milliseconds=1))
    w.sqs.purge_queue(QueueUrl=w.queue)  # the same again, as text: it says why the date is ahead
    assert cli.main(["sites", "uninstall", SITE]) == 0
    out = capsys.readouterr().out
    assert "just after the re-install recorded ahead of this clock" in out
    assert f"stays pending until about {queued['requestedAt']}" in out and "re-installed first" not in out
    assert w.drain()["failed"] == 0
    # Dated ahead, it is due at its date (grace 0), like any request from a clock a little ahead.
    assert lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])[0]["state"] == "pending"
    w.clock.advance(minutes=15)
    assert w.tick()["uninstallsStarted"] == 1
    assert w.drain()["failed"] == 0
    assert w.profile(GONE) is None and w.registry(GONE) is None
    (record,) = w.audit()
    assert engine_plain(record["source"])["requestedAt"] == queued["requestedAt"]
    # Once that uninstall is done, a new one is dated now and says nothing about a re-install.
    assert cli.main(["sites", "uninstall", SITE]) == 0
    out = capsys.readouterr().out
    assert "re-install" not in out and "erases the site's data when it reads it" in out
    # Back-dated with --at below 15 days: refused before anything is queued.
    assert cli.main(["sites", "uninstall", OTHER_SITE, "--at", "0001-01-01T00:00:00Z"]) == 1
    assert "more than 15 days in the past" in capsys.readouterr().err


def test_an_install_event_within_the_grace_period_cancels_the_published_uninstall(grace_world):
    w = grace_world
    _seed(w, [line(GONE, SITE, 0)])
    _publish(w, "uninstall")
    w.drain()
    assert lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])[0]["state"] == "pending"
    w.clock.advance(hours=2)
    _publish(w, "reinstall")
    w.drain()
    w.clock.advance(hours=30)
    assert w.tick()["uninstallsStarted"] == 0
    w.drain()
    assert w.profile(GONE) is not None and w.registry(GONE)["sites"] == [SITE] and w.audit() == []
    assert lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])[0]["state"] == "installed"


def _deliver_one(w: World, body: str) -> list:
    w.send(body)
    got = w.sqs.receive_message(QueueUrl=w.queue, MaxNumberOfMessages=1)["Messages"]
    failures = w.invoke(got)["batchItemFailures"]
    w.sqs.delete_message(QueueUrl=w.queue, ReceiptHandle=got[0]["ReceiptHandle"])
    return failures


def test_an_uninstall_and_a_reinstall_within_the_clock_skew_of_each_other_fail_loudly(grace_world):
    """Which came last cannot be known within the allowed skew: neither erasing a re-installed site nor
    keeping an uninstalled one's data happens silently; the message fails (DLQ, alarm) with a reason."""
    w = grace_world
    _seed(w, [line(GONE, SITE, 0)])
    reinstall = lambda at: json.dumps({"schema": 1, "action": "reinstall", "site": SITE,  # noqa: E731
                                       "requestedAt": clock.format_rfc3339(at)})
    # The uninstall's sender runs 3 minutes ahead; the re-install, sent after it, is dated earlier.
    assert _deliver_one(w, lifecycle_uninstall.request_message(SITE, NOW + timedelta(minutes=3))) == []
    assert len(_deliver_one(w, reinstall(NOW))) == 1
    assert "a pending uninstall of this site is dated no more than 15 minutes after" in w.logs.getvalue()
    assert lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])[0]["state"] == "pending"
    # Well outside the skew, an older re-install is a late delivery: ignored, as before.
    assert _deliver_one(w, reinstall(NOW - timedelta(hours=2))) == []
    # The mirror case: a re-install is recorded, then an uninstall dated a little before it arrives.
    assert _deliver_one(w, reinstall(NOW + timedelta(minutes=4))) == []
    assert lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])[0]["state"] == "installed"
    assert len(_deliver_one(w, lifecycle_uninstall.request_message(SITE, NOW + timedelta(minutes=1)))) == 1
    assert "a re-install of this site is recorded no more than 15 minutes after" in w.logs.getvalue()
    # A redelivery of the uninstall the re-install cancelled is a duplicate, not an alarm.
    assert _deliver_one(w, lifecycle_uninstall.request_message(SITE, NOW + timedelta(minutes=3))) == []
    w.clock.advance(hours=30)
    assert w.tick()["uninstallsStarted"] == 0
    assert w.profile(GONE) is not None and w.audit() == []
    assert SITE not in w.logs.getvalue()


def test_uninstall_after_the_grace_period_runs_from_the_tick_and_then_refuses_reinstall(grace_world):
    w = grace_world
    _seed(w, [line(GONE, SITE, 0)])
    _uninstall(w)
    w.drain()
    assert w.profile(GONE) is not None
    w.clock.advance(hours=25)
    assert w.tick()["uninstallsStarted"] == 1
    w.drain()
    assert w.profile(GONE) is None and w.registry(GONE) is None and len(w.audit()) == 1
    # Reinstall after a finished uninstall is recorded (so older uninstall messages are ignored).
    w.send(json.dumps({"schema": 1, "action": "reinstall", "site": SITE,
                       "requestedAt": clock.format_rfc3339(w.clock.now())}))
    w.drain()
    assert lifecycle_uninstall.list_states(w.ddb, w.env["STATE_TABLE"])[0]["state"] == "installed"


def test_large_site_is_chunked_and_resumes_after_a_crash(chunked_world, monkeypatch):
    w = chunked_world
    on_site = [f"5be2{n:020x}" for n in range(150)]
    elsewhere = [f"6ce2{n:020x}" for n in range(50)]
    lines = [line(a, SITE, n, comments=3) for n, a in enumerate(on_site)]
    lines += [line(a, OTHER_SITE, n, comments=1) for n, a in enumerate(elsewhere)]
    lines += [line(a, OTHER_SITE, n, comments=1) for n, a in enumerate(on_site[:50])]  # shared with another site
    _seed(w, lines)
    items = len(w.scan("PROFILE_CACHE_TABLE")) + len(w.scan("COMMENTS_TABLE")) + len(w.avatars()) + \
        len(w.scan("REGISTRY_TABLE"))
    assert items >= 1200  # moto answers each call in ~10 ms: enough to span many chunks, quick to run

    from gdpr_core.lifecycle.uninstall import SiteEraser

    original, calls = SiteEraser.remove_site, {"n": 0, "crashed": 0}

    def crashing(self, account_id, site):
        calls["n"] += 1
        if calls["n"] == 70 and not calls["crashed"]:  # in the middle of a chunk, after some accounts
            calls["crashed"] += 1
            raise RuntimeError("simulated crash")
        return original(self, account_id, site)

    monkeypatch.setattr(SiteEraser, "remove_site", crashing)
    requested = _uninstall(w)
    seen = w.drain()
    assert calls["crashed"] == 1 and seen["failed"] == 1
    # Chunks of 20 registry items each: 200 accounts -> 10 chunk messages, + the request, + the
    # redelivery, which resumes after the last finished account (so one more page boundary at most).
    assert 1 + 10 + 1 <= seen["messages"] <= 1 + 11 + 1

    assert {i["accountId"]["S"] for i in w.scan("REGISTRY_TABLE")} == set(elsewhere) | set(on_site[:50])
    assert all(w.profile(a) is None for a in on_site[50:])
    assert all(w.profile(a)["sites"]["SS"] == [OTHER_SITE] for a in on_site[:50])
    assert not [k for k in w.avatars() if k.endswith(f"/{SITE}.png")]
    assert len([k for k in w.avatars() if k.endswith(f"/{OTHER_SITE}.png")]) == 100
    linked = [i for i in w.scan("COMMENTS_TABLE") if "authorAccountId" in i]
    assert all(i["site"]["S"] == OTHER_SITE for i in linked) and len(linked) == 100
    (record,) = w.audit()
    assert record["recordId"]["S"] == f"uninstall#{PZ.site(SITE)}#{requested}"
    source = engine_plain(record["source"])
    # The accounts finished in the crashed chunk before the crash were saved with the error, so every
    # account counts once: 150 on the site, 100 of them on no other site.
    assert source["accounts"] == 150 and source["accountsDropped"] == 100
    assert source["chunks"] == seen["messages"] - 2  # every chunk message but the failed delivery
    stores = engine_plain(record["stores"])
    assert stores["registry"] == {"found": 150, "deleted": 100, "scrubbed": 50, "remaining": 0}
    # The crashed account's data went before the crash, so its redo finds nothing: at most one short.
    assert 149 <= stores["avatars"]["found"] <= 150 and stores["avatars"]["deleted"] == stores["avatars"]["found"]
    assert 447 <= stores["comments"]["scrubbed"] <= 450
    assert engine_plain(record["verified"]) is True
    assert stores["avatars"]["remaining"] == 0
    _assert_no_pd(w.logs.getvalue(), on_site[:3], lines[:3])


# The large site: 1,250 accounts on it (250 of them also on another site), each with a registry
# entry, a profile, 6 comments and 32 avatar versions (the bucket is versioned: every refresh of a
# picture keeps the older one) = 1,250 x 40 = 50,000 items; 100 more accounts live on another site only.
ONLY_HERE, SHARED_HERE, ELSEWHERE, COMMENTS, AVATAR_VERSIONS = 1000, 250, 100, 6, 32


def _add_avatar_versions(w: World, account_ids: list[str], site: str, versions: int) -> None:
    """Older versions of each avatar, written straight into moto's bucket: 40,000 PutObject calls
    through boto3 would take minutes and test nothing the ones written by the sample app do not."""
    from moto.s3.models import s3_backends

    backend = s3_backends[moto_world.ACCOUNT_ID]["aws"]
    for account_id in account_ids:
        for v in range(versions):
            backend.put_object(w.env["AVATAR_BUCKET"], f"avatars/{account_id}/{site}.png", b"v%d" % v)


def _held(w: World, account_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per site, what the stores hold, read from the stores themselves (the bucket key by key: moto
    copies the whole bucket for every page of an unfiltered listing)."""
    held: dict[str, dict[str, int]] = {}

    def add(site: str, store: str) -> None:
        row = held.setdefault(site, dict.fromkeys(("registry", "profiles", "comments", "avatars"), 0))
        row[store] += 1

    for item in w.scan("REGISTRY_TABLE"):
        for site in item.get("sites", {}).get("SS", []):
            add(site, "registry")
    for item in w.scan("PROFILE_CACHE_TABLE"):
        for site in item["sites"]["SS"]:
            add(site, "profiles")
    for item in w.scan("COMMENTS_TABLE"):
        if "authorAccountId" in item:  # a scrubbed comment holds no personal data
            add(item["site"]["S"], "comments")
    for account_id in account_ids:
        page = w.s3.list_object_versions(Bucket=w.env["AVATAR_BUCKET"], Prefix=f"avatars/{account_id}/")
        assert not page.get("IsTruncated")
        for version in page.get("Versions", []) + page.get("DeleteMarkers", []):
            add(version["Key"].rsplit("/", 1)[1].removesuffix(".png"), "avatars")
    return held


def test_a_site_with_50000_items_is_erased_in_chunks_and_resumes_after_a_failure_and_a_kill(world, monkeypatch):
    """Production chunk size (200 registry items per message); one store failure and one hard kill in
    the middle of chunks."""
    w = world
    only_here = [f"5be2{n:020x}" for n in range(ONLY_HERE)]
    shared = [f"5be3{n:020x}" for n in range(SHARED_HERE)]
    elsewhere = [f"6ce2{n:020x}" for n in range(ELSEWHERE)]
    on_site, everyone = only_here + shared, only_here + shared + elsewhere
    lines = [line(a, SITE, n, comments=COMMENTS) for n, a in enumerate(on_site)]
    lines += [line(a, OTHER_SITE, n, comments=1) for n, a in enumerate(shared + elsewhere)]
    _seed(w, lines)
    _add_avatar_versions(w, on_site, SITE, AVATAR_VERSIONS - 1)
    before = _held(w, everyone)
    n = len(on_site)
    assert before[SITE] == {"registry": n, "profiles": n, "comments": n * COMMENTS, "avatars": n * AVATAR_VERSIONS}
    assert sum(before[SITE].values()) == 50_000

    from gdpr_core.lifecycle.uninstall import SiteEraser

    original, calls = SiteEraser.remove_site, {"n": 0}
    fail_at, kill_at = n // 4 + 9, n * 5 // 8 + 5  # inside chunks, not on a checkpoint

    def failing(self, account_id, site):
        calls["n"] += 1
        if calls["n"] == fail_at:  # a store failure: the run saves its progress and hands the error to SQS
            raise RuntimeError("simulated store failure")
        if calls["n"] == kill_at:  # the Lambda is killed: the chunk resumes from its last checkpoint
            raise HardKill()
        return original(self, account_id, site)

    monkeypatch.setattr(SiteEraser, "remove_site", failing)
    requested = _uninstall(w)
    seen = w.drain(batch=1)

    assert seen["failed"] == 2 and seen["killed"] == 1
    completed = seen["messages"] - 1 - seen["failed"]  # chunk deliveries that finished their page
    pages = -(-len(everyone) // lifecycle_uninstall.DEFAULT_CHUNK)
    # A resumed delivery reads a full page from where the failed one stopped: each failure moves the
    # later page boundaries, by less than a page.
    assert pages - 2 <= completed <= pages + 2
    # Resumed, not restarted: every account once, plus the two failed calls, plus at most the accounts
    # the killed run finished after its last checkpoint.
    assert n + 2 <= calls["n"] <= n + 2 + lifecycle_uninstall.CHECKPOINT_EVERY

    after = _held(w, everyone)
    assert SITE not in after  # nothing left in any store
    assert after == {OTHER_SITE: before[OTHER_SITE]}  # the other site's data is untouched
    assert {i["accountId"]["S"] for i in w.scan("REGISTRY_TABLE")} == set(shared + elsewhere)
    assert all(w.registry(a)["sites"] == [OTHER_SITE] for a in shared[::25])
    assert _due_accounts(w) == set(shared + elsewhere)  # still reported, each once

    (record,) = w.audit()
    assert record["recordId"]["S"] == f"uninstall#{PZ.site(SITE)}#{requested}"
    source, stores = engine_plain(record["source"]), engine_plain(record["stores"])
    lost = lifecycle_uninstall.CHECKPOINT_EVERY  # a kill may lose the counts of this many accounts
    assert n - lost <= source["accounts"] <= n and ONLY_HERE - lost <= source["accountsDropped"] <= ONLY_HERE
    assert source["chunks"] == completed
    assert stores["registry"]["found"] == source["accounts"] and stores["registry"]["remaining"] == 0
    # The failed account's stores were erased before the failure, so its redo finds them empty: + 1.
    assert (n - lost - 1) * AVATAR_VERSIONS <= stores["avatars"]["deleted"] == stores["avatars"]["found"] \
        <= n * AVATAR_VERSIONS
    assert (n - lost - 1) * COMMENTS <= stores["comments"]["scrubbed"] <= n * COMMENTS
    assert all(row["remaining"] == 0 for row in stores.values()) and engine_plain(record["verified"]) is True
    _assert_no_pd(w.logs.getvalue() + json.dumps(record), on_site[::50], lines[::50])


def test_a_hard_kill_loses_the_counts_of_fewer_accounts_than_a_checkpoint_interval(chunked_world, monkeypatch):
    w = chunked_world
    on_site = [f"5be2{n:020x}" for n in range(40)]
    _seed(w, [line(a, SITE, n, comments=0) for n, a in enumerate(on_site)])
    monkeypatch.setattr(lifecycle_uninstall, "CHECKPOINT_EVERY", 5)
    from gdpr_core.lifecycle.uninstall import SiteEraser

    original, calls = SiteEraser.remove_site, {"n": 0}

    def killed(self, account_id, site):
        calls["n"] += 1
        if calls["n"] == 13:  # the 13th account of the first chunk: 12 finished, saved at 5 and 10
            raise HardKill()
        return original(self, account_id, site)

    monkeypatch.setattr(SiteEraser, "remove_site", killed)
    _uninstall(w)
    seen = w.drain(batch=1)
    assert seen["killed"] == 1
    assert w.scan("REGISTRY_TABLE") == [] and all(w.profile(a) is None for a in on_site)
    source = engine_plain(w.audit()[0]["source"])
    # Accounts 11 and 12 finished after the last checkpoint and before the kill: the redo no longer
    # matches them (their site is gone), so the record misses exactly those two.
    assert source["accounts"] == 40 - 2 and source["accountsDropped"] == 40 - 2


def test_a_duplicate_delivery_of_a_running_chunk_leaves_it_alone_and_every_account_is_counted_once(
        chunked_world, monkeypatch):
    """SQS delivers at least once and the tick re-sends: a second copy of a chunk arriving while the
    first runs must not erase in parallel (its counts would be lost when it loses the checkpoint)."""
    from gdpr_core.lifecycle.service import handle_message

    w = chunked_world
    accounts = [f"5be2{n:020x}" for n in range(45)]
    _seed(w, [line(a, SITE, n, comments=1) for n, a in enumerate(accounts)])
    _uninstall(w)
    (request,) = w.sqs.receive_message(QueueUrl=w.queue, MaxNumberOfMessages=1)["Messages"]
    assert w.invoke([request])["batchItemFailures"] == []
    w.sqs.delete_message(QueueUrl=w.queue, ReceiptHandle=request["ReceiptHandle"])
    (chunk,) = w.sqs.receive_message(QueueUrl=w.queue, MaxNumberOfMessages=1)["Messages"]
    assert json.loads(chunk["Body"])["seq"] == 0
    duplicate: list[dict] = []
    original = lifecycle_uninstall.SiteEraser.erase_site

    def erase_while_a_copy_arrives(self, account_id, site, now):
        if not duplicate:
            duplicate.append(handle_message(chunk["Body"], w.env, pseudonymizer=PZ,
                                            clients=lambda s: boto3.client(s, region_name=REGION)))
        return original(self, account_id, site, now)

    monkeypatch.setattr(lifecycle_uninstall.SiteEraser, "erase_site", erase_while_a_copy_arrives)
    assert w.invoke([chunk])["batchItemFailures"] == []
    w.sqs.delete_message(QueueUrl=w.queue, ReceiptHandle=chunk["ReceiptHandle"])
    assert duplicate[0]["outcome"] == "busy"
    w.drain()
    (record,) = w.audit()
    source, stores = engine_plain(record["source"]), engine_plain(record["stores"])
    assert source["accounts"] == len(accounts) == source["accountsDropped"]
    assert stores["registry"]["found"] == stores["profile-cache"]["found"] == stores["avatars"]["found"] == 45
    assert all(w.registry(a) is None for a in accounts)


def test_a_chunk_short_of_time_hands_the_rest_of_its_page_to_the_next_message(chunked_world):
    w = chunked_world
    on_site = [f"5be2{n:020x}" for n in range(30)]
    _seed(w, [line(a, SITE, n, comments=1) for n, a in enumerate(on_site)])
    short = LambdaContext()
    short.remaining_ms = lifecycle_uninstall.TIME_RESERVE_MS - 1  # below the reserve after every account
    _uninstall(w)
    seen = w.drain(context=short, batch=1)
    # One account per chunk message (each stops after its first account), the request, and nothing lost.
    assert seen["failed"] == 0 and seen["messages"] == 1 + 30
    assert w.scan("REGISTRY_TABLE") == [] and all(w.profile(a) is None for a in on_site)
    (record,) = w.audit()
    source = engine_plain(record["source"])
    assert source["accounts"] == 30 and source["accountsDropped"] == 30 and source["chunks"] == 30
    assert engine_plain(record["stores"])["comments"]["scrubbed"] == 30


FAILURES = st.lists(st.tuples(st.sampled_from(["erase_site", "remove_site", "_delete_if_siteless"]),
                               st.integers(1, 14), st.sampled_from(["error", "kill"])),
                     max_size=3, unique_by=lambda f: f[:2])


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(failures=FAILURES)
@example(failures=[("_delete_if_siteless", 1, "error")])  # regression: emptied profile/registry items were
@example(failures=[("_delete_if_siteless", 2, "kill")])   # found by no later run and kept forever
@example(failures=[("remove_site", 3, "kill"), ("erase_site", 7, "error")])
@example(failures=[("remove_site", 13, "error"), ("_delete_if_siteless", 2, "error")])  # a retried account fails
def test_any_mix_of_failures_and_kills_erases_the_site_and_counts_within_the_checkpoint_bound(failures):
    """Errors and hard kills at any account, in either step: the site's data is gone, accounts on other
    sites keep theirs, and the audit counts miss at most the accounts finished since the last save of
    each killed run (none for errors)."""
    from gdpr_core.lifecycle.uninstall import SiteEraser

    on_site = [f"5be2{n:020x}" for n in range(12)]
    shared = on_site[:4]
    with pytest.MonkeyPatch.context() as mp:
        worlds = _world(mp, chunk="5")
        w = next(worlds)
        try:
            _seed(w, [line(a, SITE, n, comments=1) for n, a in enumerate(on_site)]
                  + [line(a, OTHER_SITE, n, comments=1) for n, a in enumerate(shared)])
            mp.setattr(lifecycle_uninstall, "CHECKPOINT_EVERY", 2)
            calls = {"erase_site": 0, "remove_site": 0, "_delete_if_siteless": 0}
            plan = {(step, n): kind for step, n, kind in failures}
            triggered: list[tuple[str, str]] = []

            def failing(step):
                original = getattr(SiteEraser, step)

                def run(self, *args):
                    calls[step] += 1
                    kind = plan.pop((step, calls[step]), None)
                    if kind:
                        triggered.append((step, kind))
                    if kind and step == "_delete_if_siteless":  # the set is emptied, the delete never happens
                        raise HardKill() if kind == "kill" else RuntimeError("simulated throttling")
                    result = original(self, *args)  # the work is done, then the Lambda fails
                    if kind == "kill":
                        raise HardKill()
                    if kind == "error":
                        raise RuntimeError("simulated store failure")
                    return result
                return run

            for step in calls:
                mp.setattr(SiteEraser, step, failing(step))
            _uninstall(w)
            seen = w.drain(batch=1)

            assert {i["accountId"]["S"] for i in w.scan("REGISTRY_TABLE")} == set(shared)
            assert all(w.profile(a) is None for a in on_site[4:])  # no emptied item left behind
            assert all(w.profile(a)["sites"]["SS"] == [OTHER_SITE] for a in shared)
            assert w.avatars() == {f"avatars/{a}/{OTHER_SITE}.png" for a in shared}
            (record,) = w.audit()
            source = engine_plain(record["source"])
            assert engine_plain(record["verified"]) is True
            # A kill loses the accounts finished since the last save (< CHECKPOINT_EVERY = 2); a remove_site
            # that failed after its work was done leaves nothing for the redo to count. Nothing else is lost.
            lost_bound = sum((kind == "kill") * (2 - 1) + (step == "remove_site") for step, kind in triggered)
            assert 12 - lost_bound <= source["accounts"] <= 12, (failures, source, seen)
            assert source["accounts"] - source["accountsDropped"] <= 4
        finally:
            worlds.close()


def test_a_stalled_run_is_resumed_by_the_tick(chunked_world):
    w = chunked_world
    _seed(w, [line(f"5be2{n:020x}", SITE, n, comments=0) for n in range(30)])
    _uninstall(w)
    # Request + first chunk processed, then the next chunk message is lost.
    for _ in range(2):
        got = w.sqs.receive_message(QueueUrl=w.queue, MaxNumberOfMessages=1)["Messages"]
        w.invoke(got)
        w.sqs.delete_message(QueueUrl=w.queue, ReceiptHandle=got[0]["ReceiptHandle"])
    lost = w.sqs.receive_message(QueueUrl=w.queue, MaxNumberOfMessages=10)["Messages"]
    assert len(lost) == 1
    w.sqs.delete_message(QueueUrl=w.queue, ReceiptHandle=lost[0]["ReceiptHandle"])
    assert w.tick()["uninstallsResumed"] == 0  # not stale yet
    w.clock.advance(hours=1)
    assert w.tick()["uninstallsResumed"] == 1
    w.drain()
    assert w.scan("REGISTRY_TABLE") == [] and len(w.audit()) == 1


# ------------------------------------------------------------------ retention
def _profile(w: World, account_id: str, fetched: datetime, sites: list[str]) -> None:
    w.ddb.put_item(TableName=w.env["PROFILE_CACHE_TABLE"], Item={
        "accountId": {"S": account_id}, "displayName": {"S": "Someone"}, "email": {"S": f"{account_id}@example.org"},
        "avatarUrl": {"S": "https://avatars.example.net/x.png"}, "sites": {"SS": sites},
        "fetchedAt": {"S": clock.format_rfc3339(fetched)}})


def test_retention_sweep_purges_old_copies_and_keeps_the_registry_in_step(world, monkeypatch):
    w = world
    registry = Registry(w.env["REGISTRY_TABLE"], PZ, client=w.ddb)
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=5)
    only_old, with_comment, refreshed, fresh = (f"7de2{n:020x}" for n in range(4))
    for account_id in (only_old, with_comment, refreshed):
        registry.record(account_id, SITE, old)
    registry.record(fresh, SITE, recent)
    _profile(w, only_old, old, [SITE])
    _profile(w, with_comment, old, [SITE])
    _profile(w, refreshed, recent, [SITE])  # the app re-fetched it; the registry still says 40 days
    _profile(w, fresh, recent, [SITE])
    w.ddb.put_item(TableName=w.env["COMMENTS_TABLE"], Item={
        "commentId": {"S": "c-1"}, "authorAccountId": {"S": with_comment}, "authorName": {"S": "Someone"},
        "site": {"S": SITE}, "body": {"S": "hi"}, "createdAt": {"S": "2026-10-01T00:00:00.000Z"}})
    monkeypatch.setenv("RETENTION_PAGES_PER_TICK", "100")  # 258 index keys: a pass takes three ticks

    summaries = [w.tick()["retention"] for _ in range(3)]
    assert [s["passCompleted"] for s in summaries] == [False, False, True]
    assert sum(s["candidates"] for s in summaries) == 3 and sum(s["purged"] for s in summaries) == 2
    assert w.profile(only_old) is None and w.registry(only_old) is None  # nothing left: dropped
    assert w.profile(with_comment) is None
    assert w.registry(with_comment)["updatedAt"] == clock.format_rfc3339(old)  # comment held: kept as is
    assert w.profile(refreshed) is not None
    assert w.registry(refreshed)["updatedAt"] == clock.format_rfc3339(recent)  # oldest copy still held
    assert w.profile(fresh) is not None and w.registry(fresh)["updatedAt"] == clock.format_rfc3339(recent)
    assert sum(s["accountsDropped"] for s in summaries) == 1 and sum(s["accountsMoved"] for s in summaries) == 1
    # Time passes: the next pass purges what has aged meanwhile.
    w.clock.advance(days=30)
    summaries = [w.tick()["retention"] for _ in range(3)]
    assert sum(s["purged"] for s in summaries) == 2
    assert w.registry(refreshed) is None and w.registry(fresh) is None
    assert w.registry(with_comment) is not None  # its comment still names it
    _assert_no_pd(w.logs.getvalue(), [only_old, with_comment, refreshed, fresh], [])
