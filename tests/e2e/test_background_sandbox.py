"""`make up` / gdprctl / `make down`, as an operator uses them: the stores, the emulator's request log
and the CLI's answers must agree, and `down` must leave no process behind."""

import json
import os
import sys
import time

import boto3
import requests

from .conftest import gdprctl, run


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_cli_down(sandbox, demo_dataset, tmp_path_factory):
    state, endpoints = sandbox
    for key in ("aws_endpoint_url", "webhook_base_url", "webhook_signing_secret", "emulator_url", "stack_outputs"):
        assert endpoints[key]
    assert endpoints["webhook_signing_secret"].startswith("whsec_")

    # A small slice of the demo: 120 account-site lines, with one closed account among them.
    closed = demo_dataset["answers"]["closed"][0]
    lines = [line for line in demo_dataset["lines"] if line["accountId"] == closed]
    lines += [line for line in demo_dataset["lines"] if line["accountId"] not in demo_dataset["answers"]["closed"]
              and line["accountId"] not in demo_dataset["answers"]["updated"]][:120 - len(lines)]
    seed_file = tmp_path_factory.mktemp("seed") / "slice.jsonl"
    seed_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    requests.post(endpoints["emulator_url"] + "/_emulator/config", json={"closed": [closed], "updated": []},
                  timeout=10).raise_for_status()

    seeded = json.loads(gdprctl(state, "sandbox", "seed", str(seed_file), "--json").stdout)
    held = {line["accountId"] for line in lines}
    assert seeded["accounts"] == len(held)

    before = json.loads(gdprctl(state, "subject", "export", closed, "--json").stdout)
    assert any(before.values()), "the closed account's data should be exportable before erasure"

    report = json.loads(gdprctl(state, "report", "--json").stdout)
    assert report["closed"] == 1
    gdprctl(state, "drain", "--json")

    log = requests.get(endpoints["emulator_url"] + "/_emulator/log", timeout=10).json()["requests"]
    reported = [a for r in log if r["status"] in (200, 204) for a in r["accountIds"]]
    assert sorted(reported) == sorted(held)
    assert max(len(r["accountIds"]) for r in log) <= 90

    after = json.loads(gdprctl(state, "subject", "export", closed, "--json").stdout)
    assert not any(after.values()), after

    status = json.loads(gdprctl(state, "status", "--json").stdout)
    assert status["registry"]["erased_tombstones"] == 1
    assert status["queues"] == {"actions": 0, "dead_letter": 0}

    # The stores themselves, read directly, agree with the CLI.
    s3 = boto3.client("s3", endpoint_url=endpoints["aws_endpoint_url"], region_name=endpoints["region"],
                      aws_access_key_id="x", aws_secret_access_key="x")
    versions = s3.list_object_versions(Bucket="sample-app-avatars", Prefix=f"avatars/{closed}/")
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")

    pid = endpoints["pid"]
    run([sys.executable, "-m", "gdpr_sandbox", "down"], env={"GDPR_SANDBOX_DIR": str(state)}, timeout=60)
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid)
    assert not (state / "endpoints.json").exists()
