"""The oldest copy held per store (`gdpr_core.lifecycle.holdings`, shown by `gdprctl status`) on moto,
with the sample app's stores and the service tables built from the templates.

Every expected value here is a literal the test wrote itself (times, counts), never something the code
under test computed. S3 object versions get known LastModified times by pinning moto's clock while
they are written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import boto3
import moto.s3.models
import pytest

from gdpr_core import clock
from gdpr_core.erasure import pdmap
from gdpr_core.erasure.engine import ErasureEngine
from gdpr_core.lifecycle.holdings import oldest_held, retention_position
from gdpr_core.pseudonym import Pseudonymizer
from gdpr_core.registry import Registry
from gdprctl import main as cli
from tests.support import moto_world, stacks

REGION = "us-east-1"
PZ = Pseudonymizer("holdings-test-pseudonym-key-0123456789")
NOW = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
SITE = "globex.atlassian.net"
ACCOUNTS = [f"5be24ba3f91c10603326{n:04d}" for n in range(12)]
EMAILS = [f"person.{n}@example.org" for n in range(len(ACCOUNTS))]
NAMES = [f"Person Number {n}" for n in range(len(ACCOUNTS))]

# profile-cache (maxAgeDays 30 of fetchedAt): two copies past 30 days, three newer, two unreadable.
# The oldest is written with an offset so that text order and time order disagree: 12:30+02:00 is
# 10:30Z, older than "2026-10-17T11:00:00Z", which sorts first as text.
PROFILE_TIMES = [
    {"S": "2026-10-17T12:30:00+02:00"},  # 45 days before NOW: past
    {"S": "2026-10-17T11:00:00Z"},  # past
    {"S": "2026-11-28T10:30:00.000Z"},
    {"S": "2026-11-21T10:30:00.000Z"},
    {"S": "2026-11-02T10:30:00.000Z"},  # 29 days: not past
    {"S": "yesterday"},  # unreadable
    {"N": "1764000000"},  # unreadable: not RFC 3339 text
]
PROFILE_OLDEST, PROFILE_AGE, PROFILE_PAST, PROFILE_UNREADABLE = "2026-10-17T10:30:00.000Z", 45.0, 2, 2

# avatars (versioned): three versions under avatars/, a delete marker and an object outside the prefix,
# both older than every version (so counting either would change the oldest).
AVATAR_VERSIONS = [
    (ACCOUNTS[0], datetime(2026, 11, 5, 8, 0, 0)),
    (ACCOUNTS[0], datetime(2026, 11, 20, 8, 0, 0)),  # a newer version of the same object
    (ACCOUNTS[1], datetime(2026, 11, 12, 9, 15, 30)),
]
AVATAR_OLDEST = "2026-11-05T08:00:00.000Z"
HIDDEN_AT = datetime(2026, 11, 25, 0, 0, 0)  # a version a delete marker hides: still held (not current)
MARKER_AT, OUTSIDE_AT = datetime(2026, 9, 1, 0, 0, 0), datetime(2026, 8, 1, 0, 0, 0)

# registry: three active accounts; one being erased and one tombstoned, both older than every active one.
REGISTRY_TIMES = {
    ACCOUNTS[2]: "2026-11-10T00:00:00.000Z",
    ACCOUNTS[3]: "2026-10-30T06:00:00.000Z",
    ACCOUNTS[4]: "2026-11-25T00:00:00.000Z",
}
REGISTRY_OLDEST = "2026-10-30T06:00:00.000Z"
ERASING, TOMBSTONED = ACCOUNTS[5], ACCOUNTS[6]


class CallLog:
    """Every AWS call a client makes (operation name, parameters), through botocore's event hook."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, model, params, **kwargs):
        self.calls.append((model.name, dict(params)))

    def of(self, operation: str, table: str | None = None) -> list[dict]:
        return [p for n, p in self.calls if n == operation and (table is None or p.get("TableName") == table)]

    def watch(self, client: Any) -> Any:
        client.meta.events.register(f"provide-client-params.{client.meta.service_model.service_name}.*", self)
        return client


class World(SimpleNamespace):
    pass


@pytest.fixture
def world(monkeypatch):
    moto_world.fake_aws_env(monkeypatch, REGION)
    with moto_world.mocked_aws():
        log = CallLog()
        ddb, s3, sqs = (log.watch(boto3.client(s, region_name=REGION)) for s in ("dynamodb", "s3", "sqs"))
        stacks.create_sample_app(ddb, s3)
        tables = stacks.create_service_tables(ddb)
        queues = stacks.create_queues(sqs)
        names = {**tables, **queues}
        env = {
            "ErasureFunction": stacks.function_environment("ErasureFunction", names),
            "ReporterFunction": stacks.function_environment("ReporterFunction", names),
        }
        yield World(
            ddb=ddb,
            s3=s3,
            sqs=sqs,
            log=log,
            env=env["ErasureFunction"],
            envs=env,
            queues=queues,
            monkeypatch=monkeypatch,
        )


def seed(w: World) -> None:
    e = w.env
    for n, stamp in enumerate(PROFILE_TIMES):
        w.ddb.put_item(
            TableName=e["PROFILE_CACHE_TABLE"],
            Item={
                "accountId": {"S": ACCOUNTS[n]},
                "displayName": {"S": NAMES[n]},
                "email": {"S": EMAILS[n]},
                "sites": {"SS": [SITE]},
                "fetchedAt": stamp,
            },
        )
    # Comments carry no retrieval time (createdAt is when the comment was written): untimed, never read.
    w.ddb.put_item(
        TableName=e["COMMENTS_TABLE"],
        Item={
            "commentId": {"S": "c-1"},
            "authorAccountId": {"S": ACCOUNTS[0]},
            "authorName": {"S": NAMES[0]},
            "body": {"S": "ok"},
            "site": {"S": SITE},
            "createdAt": {"S": "2020-01-01T00:00:00.000Z"},
        },
    )

    bucket = e["AVATAR_BUCKET"]
    with pytest.MonkeyPatch.context() as m:  # moto stamps LastModified from its own utcnow()

        def put_at(when: datetime, key: str) -> None:
            m.setattr(moto.s3.models, "utcnow", lambda: when)
            w.s3.put_object(Bucket=bucket, Key=key, Body=b"png")

        for account, when in AVATAR_VERSIONS:
            put_at(when, f"avatars/{account}/{SITE}.png")
        put_at(HIDDEN_AT, f"avatars/{ACCOUNTS[7]}/{SITE}.png")
        m.setattr(moto.s3.models, "utcnow", lambda: MARKER_AT)
        w.s3.delete_object(Bucket=bucket, Key=f"avatars/{ACCOUNTS[7]}/{SITE}.png")  # a marker over that version
        put_at(OUTSIDE_AT, "exports/report.csv")

    registry = Registry(e["REGISTRY_TABLE"], PZ, client=w.ddb)
    for account, stamp in REGISTRY_TIMES.items():
        registry.record(account, SITE, clock.parse_rfc3339(stamp))
    registry.record(ERASING, SITE, datetime(2026, 9, 1, tzinfo=UTC))
    assert registry.mark_erasing(ERASING)
    registry.record(TOMBSTONED, SITE, datetime(2026, 8, 1, tzinfo=UTC))
    pd_map = pdmap.load()
    engine = ErasureEngine(pd_map, pd_map.resolve(e), dynamodb=w.ddb, s3=w.s3, hooks={})
    engine.tombstone(TOMBSTONED, PZ.account(TOMBSTONED), NOW)  # the erasure's own tombstone write
    w.log.calls.clear()


def rows_by_store(rows: list[dict]) -> dict[str, dict]:
    return {r["store"]: r for r in rows}


def held(w: World, **kwargs: Any) -> list[dict]:
    pd_map = pdmap.load()
    return oldest_held(pd_map, pd_map.resolve(w.env), dynamodb=w.ddb, s3=w.s3, now=NOW, **kwargs)


def assert_no_pd(text: str) -> None:
    for needle in (*ACCOUNTS, *EMAILS, *NAMES, SITE, PZ.account(TOMBSTONED)):
        assert needle not in text, f"personal data in the output: {needle}"


# ------------------------------------------------------------------ the rows
def test_oldest_held_per_store(world):
    seed(world)
    rows = held(world)
    assert [r["store"] for r in rows] == ["profile-cache", "comments", "avatars", "consent", "registry"]
    by = rows_by_store(rows)

    profile = by["profile-cache"]
    assert profile["basis"] == "fetchedAt" and profile["maxAgeDays"] == 30
    assert profile["oldestHeld"] == PROFILE_OLDEST
    assert profile["ageDays"] == PROFILE_AGE
    assert profile["copies"] == len(PROFILE_TIMES)
    assert profile["pastMaxAge"] == PROFILE_PAST
    assert profile["unreadable"] == PROFILE_UNREADABLE

    avatars = by["avatars"]
    assert avatars["basis"] == "LastModified" and avatars["maxAgeDays"] is None
    assert avatars["oldestHeld"] == AVATAR_OLDEST
    assert avatars["copies"] == len(AVATAR_VERSIONS) + 1  # + the version under the delete marker, still held
    assert avatars["pastMaxAge"] is None

    registry = by["registry"]
    assert registry["basis"] == "updatedAt" and registry["maxAgeDays"] is None
    assert registry["oldestHeld"] == REGISTRY_OLDEST  # not the erasing account's, not the tombstone's
    assert registry["copies"] == len(REGISTRY_TIMES)
    assert registry["unreadable"] == 0  # a tombstone (no updatedAt) would count here
    assert registry["ageDays"] == 32.2  # 2026-10-30T06:00Z to 2026-12-01T10:30Z: 32 days 4.5 hours

    for name, kind in (("comments", "dynamodb"), ("consent", "hook")):
        assert by[name]["kind"] == kind and by[name]["basis"] == "untimed"
        assert by[name]["oldestHeld"] is None and by[name]["copies"] is None and by[name]["ageDays"] is None
    assert_no_pd(json.dumps(rows))


def test_untimed_stores_are_not_read_and_timed_ones_read_only_their_time(world):
    seed(world)
    held(world)
    e = world.env
    assert world.log.of("Scan", e["COMMENTS_TABLE"]) == [] and world.log.of("Query", e["COMMENTS_TABLE"]) == []
    assert [n for n, p in world.log.calls if p.get("TableName") == e["CONSENT_TABLE"]] == []
    for table, attribute in ((e["PROFILE_CACHE_TABLE"], "fetchedAt"), (e["REGISTRY_TABLE"], "updatedAt")):
        scans = world.log.of("Scan", table)
        assert len(scans) == 1
        projected = [
            scans[0]["ExpressionAttributeNames"].get(part.strip(), part.strip())
            for part in scans[0]["ProjectionExpression"].split(",")
        ]
        assert projected == [attribute]
    assert [p["Prefix"] for p in world.log.of("ListObjectVersions")] == ["avatars/"]


def test_pages_are_followed(world):
    seed(world)
    rows = rows_by_store(held(world, page_size=2))
    assert rows["profile-cache"]["copies"] == len(PROFILE_TIMES)
    assert rows["profile-cache"]["oldestHeld"] == PROFILE_OLDEST
    assert rows["avatars"]["copies"] == len(AVATAR_VERSIONS) + 1
    assert rows["registry"]["copies"] == len(REGISTRY_TIMES)
    assert len(world.log.of("Scan", world.env["PROFILE_CACHE_TABLE"])) >= 4  # 7 items, 2 a page
    assert len(world.log.of("ListObjectVersions")) >= 2


def test_an_unversioned_store_is_listed_with_list_objects(world):
    seed(world)
    doc = json.loads(pdmap.DEFAULT_MAP_PATH.read_text())
    for store in doc["stores"]:
        if store["name"] == "avatars":
            store["versions"] = False
    pd_map = pdmap.parse(doc)
    rows = rows_by_store(oldest_held(pd_map, pd_map.resolve(world.env), dynamodb=world.ddb, s3=world.s3, now=NOW))
    # Current objects only: the newer version of ACCOUNTS[0]'s avatar and ACCOUNTS[1]'s (the marker hides the third).
    assert rows["avatars"]["copies"] == 2
    assert rows["avatars"]["oldestHeld"] == "2026-11-12T09:15:30.000Z"
    assert world.log.of("ListObjectVersions") == [] and len(world.log.of("ListObjectsV2")) == 1


def test_empty_stores_report_zero_copies(world):
    rows = rows_by_store(held(world))
    for name in ("profile-cache", "avatars", "registry"):
        assert rows[name]["copies"] == 0 and rows[name]["oldestHeld"] is None and rows[name]["ageDays"] is None
    assert rows["profile-cache"]["pastMaxAge"] == 0


def test_a_store_that_cannot_be_read_is_reported_not_fatal(world):
    seed(world)
    pd_map = pdmap.load()
    resources = {**pd_map.resolve(world.env), "avatars": "no-such-bucket"}
    rows = rows_by_store(oldest_held(pd_map, resources, dynamodb=world.ddb, s3=world.s3, now=NOW))
    assert rows["avatars"]["error"] == "NoSuchBucket" and rows["avatars"]["copies"] is None
    assert rows["profile-cache"]["oldestHeld"] == PROFILE_OLDEST and "error" not in rows["profile-cache"]


def test_retention_position_shows_no_account_id(world):
    table = world.env["STATE_TABLE"]
    assert retention_position(world.ddb, table) is None
    world.ddb.put_item(
        TableName=table,
        Item={  # the sweep's item, as RetentionSweep._save writes it
            "pk": {"S": "retention"},
            "keyIndex": {"N": "13"},
            "after": {"S": ACCOUNTS[0]},
            "savedAt": {"S": "2026-11-30T09:00:00.000Z"},
            "lastPassCompletedAt": {"S": "2026-11-29T08:00:00.000Z"},
        },
    )
    position = retention_position(world.ddb, table)
    assert position == {
        "keyIndex": 13,
        "keys": 258,
        "key": "s#012",
        "midKey": True,
        "savedAt": "2026-11-30T09:00:00.000Z",
        "lastPassCompletedAt": "2026-11-29T08:00:00.000Z",
    }
    assert_no_pd(json.dumps(position))


# ------------------------------------------------------------------ gdprctl status
class MotoTarget:
    """What gdprctl's resolve() gives: the functions' environment, clients, outputs, the sandbox's alarms."""

    def __init__(self, w: World):
        self.w = w
        self.deployment = SimpleNamespace(alarms=[])

    def env(self) -> dict[str, dict[str, str]]:
        return self.w.envs

    def client(self, service: str) -> Any:
        return {"dynamodb": self.w.ddb, "s3": self.w.s3, "sqs": self.w.sqs}[service]

    def output(self, name: str) -> str:
        return {
            "ActionsQueueUrl": self.w.queues["ActionsQueue"],
            "ActionsDeadLetterQueueUrl": self.w.queues["ActionsDeadLetterQueue"],
        }[name]


@pytest.fixture
def cli_world(world):
    seed(world)
    world.monkeypatch.setattr(cli, "resolve", lambda stack, region=None: MotoTarget(world))
    clock.install(clock.ManualClock(NOW))
    try:
        yield world
    finally:
        clock.install(clock.SystemClock())


def test_status_json_shows_the_oldest_held_copy_per_store(cli_world, capsys):
    w = cli_world
    w.ddb.put_item(
        TableName=w.env["STATE_TABLE"],
        Item={
            "pk": {"S": "retention"},
            "keyIndex": {"N": "1"},
            "after": {"S": ACCOUNTS[2]},
            "savedAt": {"S": "2026-11-30T09:00:00.000Z"},
        },
    )
    assert cli.main(["status", "--json"]) == 0
    out = capsys.readouterr().out
    lifecycle = json.loads(out)["lifecycle"]
    rows = rows_by_store(lifecycle["oldestHeld"])
    assert set(rows) == {"profile-cache", "comments", "avatars", "consent", "registry"}
    assert rows["profile-cache"]["oldestHeld"] == PROFILE_OLDEST and rows["profile-cache"]["pastMaxAge"] == PROFILE_PAST
    assert rows["avatars"]["oldestHeld"] == AVATAR_OLDEST and rows["registry"]["oldestHeld"] == REGISTRY_OLDEST
    assert rows["comments"]["basis"] == rows["consent"]["basis"] == "untimed"
    assert lifecycle["oldestHeldAsOf"] == "2026-12-01T10:30:00.000Z"
    assert lifecycle["retentionSweep"]["key"] == "s#000" and lifecycle["retentionSweep"]["midKey"] is True
    assert lifecycle["uninstalls"] == []
    assert len(w.log.of("Scan", w.env["PROFILE_CACHE_TABLE"])) == 1
    assert len(w.log.of("ListObjectVersions")) == 1
    assert_no_pd(out)


def test_status_no_stores_skips_the_reads(cli_world, capsys):
    w = cli_world
    assert cli.main(["status", "--json", "--no-stores"]) == 0
    out = capsys.readouterr().out
    lifecycle = json.loads(out)["lifecycle"]
    assert "oldestHeld" not in lifecycle and "uninstalls" in lifecycle and "retentionSweep" in lifecycle
    assert w.log.of("Scan", w.env["PROFILE_CACHE_TABLE"]) == []
    assert w.log.of("ListObjectVersions") == [] and w.log.of("ListObjectsV2") == []
    # The registry is still scanned once, for status's own counts by status (projection "#s" = status) only.
    registry_scans = w.log.of("Scan", w.env["REGISTRY_TABLE"])
    assert [p["ExpressionAttributeNames"] for p in registry_scans] == [{"#s": "status"}]


def test_status_text_prints_each_store(cli_world, capsys):
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out

    lines = out.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("held "))
    assert lines[start] == "held       as of 2026-12-01T10:30:00.000Z"  # NOW: ages are relative to it
    block = lines[start + 1 : start + 6]  # one line per store of the map

    def line_of(store: str) -> str:
        found = [line for line in block if store in line.split()]
        assert len(found) == 1, (store, out)
        return found[0]

    profile = line_of("profile-cache")
    assert PROFILE_OLDEST in profile and "45.0 days" in profile
    assert f"{PROFILE_PAST} past 30 days" in profile and f"{PROFILE_UNREADABLE} without a readable time" in profile
    assert "no retrieval time kept" in line_of("comments") and "no retrieval time kept" in line_of("consent")
    assert AVATAR_OLDEST in line_of("avatars") and REGISTRY_OLDEST in line_of("registry")
    assert "retention  sweep has not run yet" in lines
    assert_no_pd(out)
    assert cli.main(["status", "--no-stores"]) == 0
    assert "held       not read (--no-stores)" in capsys.readouterr().out.splitlines()
