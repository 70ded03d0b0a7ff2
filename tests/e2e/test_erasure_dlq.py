"""An erasure that cannot complete ends in the DLQ with its alarm, and `gdprctl dlq replay` completes it
once the cause is fixed — on the sandbox as an operator sees it (`make up`, gdprctl, `make down`).

The failure is a real one: the avatar bucket has S3 Object Lock, and one of the closed account's
avatars is under a legal hold, so S3 refuses to delete that version (as AWS does) until the hold is
lifted. Nothing in the product knows about the test."""

from __future__ import annotations

import json
from typing import Any

import boto3
import requests

from gdpr_core.pseudonym import Pseudonymizer
from gdpr_sandbox.verify import pd_left_for

from .conftest import gdprctl, personal_strings

DLQ_ALARM = "ActionsDeadLetterAlarm"


class Direct:
    """The sandbox's AWS endpoint, read directly (not through gdprctl or the functions)."""

    def __init__(self, endpoints: dict[str, Any]):
        self._endpoints = endpoints

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self._endpoints["aws_endpoint_url"],
                            region_name=self._endpoints["region"], aws_access_key_id="x", aws_secret_access_key="x")


def status(state) -> dict[str, Any]:
    return json.loads(gdprctl(state, "status", "--json").stdout)


def erase_records(state) -> list[dict[str, Any]]:
    lines = gdprctl(state, "audit", "export", "--format", "jsonl").stdout.splitlines()
    return [r for r in map(json.loads, lines) if r["action"] == "erase"]


def test_injected_failure_dead_letters_alarms_and_replay_completes(sandbox, demo_dataset, tmp_path_factory):
    state, endpoints = sandbox
    direct = Direct(endpoints)
    deployment = json.loads((state / "deployment.json").read_text())
    env = deployment["functions"]["ErasureFunction"]["environment"]
    bucket = env["AVATAR_BUCKET"]
    s3 = direct.client("s3")
    # Object Lock on the (still empty) avatar bucket, as an app under a litigation hold would have it.
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})

    broken, fine = demo_dataset["answers"]["closed"][:2]
    lines = [line for line in demo_dataset["lines"] if line["accountId"] in (broken, fine)]
    answered = set(demo_dataset["answers"]["closed"]) | set(demo_dataset["answers"]["updated"])
    lines += [line for line in demo_dataset["lines"] if line["accountId"] not in answered][:40]
    seed_file = tmp_path_factory.mktemp("seed") / "slice.jsonl"
    seed_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    requests.post(endpoints["emulator_url"] + "/_emulator/config", json={"closed": [broken, fine], "updated": []},
                  timeout=10).raise_for_status()
    gdprctl(state, "sandbox", "seed", str(seed_file), "--json")

    held = s3.list_object_versions(Bucket=bucket, Prefix=f"avatars/{broken}/")["Versions"][0]
    s3.put_object_legal_hold(Bucket=bucket, Key=held["Key"], VersionId=held["VersionId"],
                             LegalHold={"Status": "ON"})

    key = direct.client("secretsmanager").get_secret_value(SecretId=env["PSEUDONYM_KEY_SECRET_ARN"])["SecretString"]
    subject = Pseudonymizer(key).account

    # ---- report and drain: the broken account's erasure fails five times, then dead-letters.
    assert json.loads(gdprctl(state, "report", "--json").stdout)["closed"] == 2
    gdprctl(state, "drain", "--json")
    before = status(state)
    assert before["queues"] == {"actions": 0, "dead_letter": 1}
    assert before["alarms"][DLQ_ALARM] == "ALARM"
    assert [r["subject"] for r in erase_records(state)] == [subject(fine)]  # no "erased" claim for it
    failures = [json.loads(x) for x in (state / "logs" / "ErasureFunction.log").read_text().splitlines()
                if x.startswith("{") and '"action failed"' in x]
    assert len(failures) == 5  # one per receive: maxReceiveCount 5, then the redrive policy moved it
    assert all("store 'avatars': S3 refused 1 deletes (AccessDenied)" in f["reason"] for f in failures)
    left = pd_left_for(direct, env, broken)
    assert left["registry"] == 1 and left["avatars"] >= 1  # not tombstoned; the held avatar is still there
    assert sum(pd_left_for(direct, env, fine).values()) == 0

    # ---- fix the cause (lift the hold), replay, drain: erased everywhere, audited once.
    s3.put_object_legal_hold(Bucket=bucket, Key=held["Key"], VersionId=held["VersionId"],
                             LegalHold={"Status": "OFF"})
    assert json.loads(gdprctl(state, "dlq", "replay", "--json").stdout) == {"replayed": 1}
    gdprctl(state, "drain", "--json")

    assert pd_left_for(direct, env, broken) == {"profile": 0, "comments": 0, "registry": 0, "avatars": 0}
    export = json.loads(gdprctl(state, "subject", "export", broken, "--json").stdout)
    assert not any(export.values()), export
    records = erase_records(state)
    assert sorted(r["subject"] for r in records) == sorted([subject(broken), subject(fine)])
    assert all(r["verified"] for r in records)
    after = status(state)
    assert after["queues"] == {"actions": 0, "dead_letter": 0}
    assert after["alarms"][DLQ_ALARM] == "OK"
    assert after["registry"]["erased_tombstones"] == 2

    # ---- nothing personal in what the functions wrote, nor in the audit trail.
    needles = personal_strings(lines)
    written = "".join(p.read_text(errors="replace") for p in (state / "logs").glob("*.log"))
    written += json.dumps(records)
    leaked = sorted(n for n in needles if n in written)
    assert not leaked, f"{len(leaked)} personal strings in logs or audit records"
