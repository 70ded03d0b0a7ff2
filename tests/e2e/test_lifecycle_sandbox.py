"""Issue 8's done-when on the sandbox, as an operator runs it: after `gdprctl sites uninstall SITE` and a
drain, an account that lived only on SITE has nothing left and is no longer reported, while an account
shared with another site keeps that site's data and is still reported once per cycle."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import timedelta

import boto3
import requests

from gdpr_core.clock import format_rfc3339, now, parse_rfc3339
from gdpr_core.lifecycle.uninstall import app_event

from .conftest import gdprctl, personal_strings, run


def test_uninstall_erases_the_site_and_keeps_shared_accounts_reported(tmp_path, demo_dataset):
    answers = demo_dataset["answers"]
    skip = set(answers["closed"]) | set(answers["updated"])
    by_account: dict[str, list[dict]] = defaultdict(list)
    for line in demo_dataset["lines"]:
        if line["accountId"] not in skip:
            by_account[line["accountId"]].append(line)
    site = next(iter(by_account.values()))[0]["site"]
    only = next(a for a, ls in by_account.items() if {ln["site"] for ln in ls} == {site})
    shared = next(a for a, ls in by_account.items() if site in {ln["site"] for ln in ls} and len(ls) > 1)
    elsewhere = next(a for a, ls in by_account.items() if site not in {ln["site"] for ln in ls})
    lines = by_account[only] + by_account[shared] + by_account[elsewhere]
    seed_file = tmp_path / "seed.jsonl"
    seed_file.write_text("".join(json.dumps(ln) + "\n" for ln in lines))

    state = tmp_path / "state"
    env = {"GDPR_SANDBOX_DIR": str(state)}
    run([sys.executable, "-m", "gdpr_sandbox", "up"], env=env, timeout=180)
    try:
        endpoints = json.loads((state / "endpoints.json").read_text())
        emulator = endpoints["emulator_url"]
        requests.post(f"{emulator}/_emulator/config", json={"closed": [], "updated": []}, timeout=10)
        seeded = gdprctl(state, "sandbox", "seed", str(seed_file)).stdout
        assert seeded.startswith("seeded 3 accounts") and "refused" not in seeded  # no "0 lines refused"
        start = parse_rfc3339(format_rfc3339(now()))
        gdprctl(state, "report", "--now", format_rfc3339(start))  # new accounts are reported at once

        queued = json.loads(gdprctl(state, "sites", "uninstall", site, "--json").stdout)
        assert queued["queued"]["action"] == "uninstall"
        gdprctl(state, "drain")
        status = json.loads(gdprctl(state, "status", "--json").stdout)
        assert status["lifecycle"]["uninstalls"] == [] and status["queues"]["dead_letter"] == 0
        assert status["lifecycle"]["retentionSweep"] is None  # the hourly schedule has not run yet

        gone = json.loads(gdprctl(state, "subject", "export", only, "--json").stdout)
        assert not any(gone.values()), gone
        kept = json.loads(gdprctl(state, "subject", "export", shared, "--json").stdout)
        other_sites = sorted({ln["site"] for ln in by_account[shared]} - {site})
        assert kept["registry"][0]["sites"] == other_sites
        assert kept["profile-cache"][0]["sites"] == other_sites
        assert {r["key"] for r in kept["avatars"]} == {f"avatars/{shared}/{s}.png" for s in other_sites}
        assert all(r.get("authorAccountId") == shared for r in kept["comments"])
        assert len(kept["comments"]) == sum(len(ln.get("comments", [])) for ln in by_account[shared]
                                            if ln["site"] != site)

        audit = [json.loads(x) for x in gdprctl(state, "audit", "export").stdout.splitlines()]
        (record,) = [r for r in audit if r["action"] == "uninstall"]
        # A back-dated request older than the finished uninstall would be ignored: refused, nothing queued.
        early = format_rfc3339(parse_rfc3339(record["source"]["requestedAt"]) - timedelta(minutes=1))
        late = gdprctl(state, "sites", "uninstall", site, "--at", early, check=False)
        assert late.returncode == 1 and "a newer event" in late.stderr and "Traceback" not in late.stderr
        assert record["stores"]["registry"]["deleted"] == 1 and record["verified"] is True
        text = json.dumps(record)
        assert not any(s in text for s in personal_strings(lines)) and site not in text

        # The next (7-day) cycle, walked to its end: the shared account once, the uninstalled one never.
        since = requests.get(f"{emulator}/_emulator/log", timeout=10).json()["total"]
        when = start + timedelta(days=14, minutes=-1)
        for _ in range(6):
            tick = json.loads(gdprctl(state, "report", "--now", format_rfc3339(when), "--json").stdout)
            if tick.get("complete"):
                break
        log = requests.get(f"{emulator}/_emulator/log", params={"since": since}, timeout=10).json()["requests"]
        reported = [a for r in log if r["status"] in (200, 204) for a in r["accountIds"]]
        assert reported.count(shared) == 1 and reported.count(elsewhere) == 1 and only not in reported

        # The lifecycle schedule, run now by the operator: a whole retention pass (258 index keys fit in
        # one tick), after which no copy older than its store's maxAgeDays is left anywhere.
        tick = json.loads(gdprctl(state, "lifecycle", "tick", "--json").stdout)
        assert tick["uninstallsStarted"] == 0 and tick["retention"]["passCompleted"] is True
        lifecycle = json.loads(gdprctl(state, "status", "--json").stdout)["lifecycle"]
        assert lifecycle["retentionSweep"]["keys"] == 258 and lifecycle["retentionSweep"]["lastPassCompletedAt"]
        timed = [r for r in lifecycle["oldestHeld"] if r["maxAgeDays"] is not None]
        assert timed and all(r["pastMaxAge"] == 0 for r in timed), timed

        # The app may publish its uninstall on EventBridge instead: the deployed rule puts it on the
        # actions queue. A site of the account that lived elsewhere goes; its other sites stay.
        elsewhere_sites = sorted({ln["site"] for ln in by_account[elsewhere]})
        events = boto3.client("events", endpoint_url=endpoints["aws_endpoint_url"], region_name=endpoints["region"],
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        published = events.put_events(Entries=[app_event(elsewhere_sites[0])])
        assert published["FailedEntryCount"] == 0
        gdprctl(state, "drain")
        after = json.loads(gdprctl(state, "subject", "export", elsewhere, "--json").stdout)
        assert sorted(r["sites"] for r in after["registry"]) == ([elsewhere_sites[1:]] if elsewhere_sites[1:] else [])
        audit = [json.loads(x) for x in gdprctl(state, "audit", "export").stdout.splitlines()]
        assert len([r for r in audit if r["action"] == "uninstall"]) == 2
        assert json.loads(gdprctl(state, "status", "--json").stdout)["queues"]["dead_letter"] == 0

        files = [p for p in (state / "logs").rglob("*") if p.is_file()]
        logs = "".join(p.read_text(errors="replace") for p in files)
        assert files and "lifecycle message done" in logs
        assert only not in logs and shared not in logs and elsewhere not in logs
    finally:
        run([sys.executable, "-m", "gdpr_sandbox", "down"], env=env, timeout=60)


def test_a_reinstall_within_the_grace_period_cancels_the_uninstall_on_the_sandbox(tmp_path, demo_dataset):
    """UninstallGraceHours through GDPR_SANDBOX_PARAMETERS, as an operator tries the grace period."""
    line = next(ln for ln in demo_dataset["lines"] if ln["accountId"] not in demo_dataset["answers"]["closed"])
    seed_file = tmp_path / "seed.jsonl"
    seed_file.write_text(json.dumps(line) + "\n")
    state = tmp_path / "state"
    bad = run([sys.executable, "-m", "gdpr_sandbox", "up"], check=False,
              env={"GDPR_SANDBOX_DIR": str(state), "GDPR_SANDBOX_PARAMETERS": "UninstallGraceHour=24"})
    assert bad.returncode == 2 and "UninstallGraceHour is not a parameter" in bad.stderr
    env = {"GDPR_SANDBOX_DIR": str(state), "GDPR_SANDBOX_PARAMETERS": "UninstallGraceHours=24"}
    run([sys.executable, "-m", "gdpr_sandbox", "up"], env=env, timeout=180)
    try:
        gdprctl(state, "sandbox", "seed", str(seed_file))
        queued = json.loads(gdprctl(state, "sites", "uninstall", line["site"], "--json").stdout)
        assert queued["graceHours"] == 24
        gdprctl(state, "drain")
        (pending,) = json.loads(gdprctl(state, "status", "--json", "--no-stores").stdout)["lifecycle"]["uninstalls"]
        assert pending["state"] == "pending" and pending["site"] == line["site"]
        # 24 hours from when the function received it (a few seconds after the CLI dated it)
        waited = parse_rfc3339(pending["dueAt"]) - parse_rfc3339(pending["requestedAt"])
        assert timedelta(hours=24) <= waited < timedelta(hours=24, minutes=5)
        cancelled = gdprctl(state, "sites", "reinstall", line["site"])
        assert "pending uninstall cancelled" in cancelled.stdout
        assert json.loads(gdprctl(state, "status", "--json", "--no-stores").stdout)["lifecycle"]["uninstalls"] == []
        kept = json.loads(gdprctl(state, "subject", "export", line["accountId"], "--json").stdout)
        assert kept["registry"][0]["sites"] == [line["site"]] and kept["profile-cache"]
        assert "uninstall" not in gdprctl(state, "audit", "export").stdout
    finally:
        run([sys.executable, "-m", "gdpr_sandbox", "down"], env=env, timeout=60)
