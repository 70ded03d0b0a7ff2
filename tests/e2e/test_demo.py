"""`make demo` end to end: the demo's own summary must agree with what the test derives from the
dataset, and nothing personal may reach the logs."""

import json
import math
import sys

from .conftest import personal_strings, run


def test_demo_runs_verified_and_agrees_with_the_dataset(tmp_path, demo_dataset):
    proc = run([sys.executable, "-m", "gdpr_sandbox.demo", "--state-dir", str(tmp_path)], timeout=900)
    summary = json.loads((tmp_path / "demo-summary.json").read_text())

    held = {line["accountId"] for line in demo_dataset["lines"]}
    closed_held = set(demo_dataset["answers"]["closed"]) & held
    updated_held = set(demo_dataset["answers"]["updated"]) & held
    assert summary["verified"] is True, summary["problems"]
    assert summary["accounts_registered"] == len(held) >= 2000
    assert summary["sites"] >= 3
    assert summary["accounts_reported"] == len(held)
    assert summary["accounts_reported_twice"] == 0
    assert summary["max_accounts_per_request"] <= 90
    # New accounts are reported together, so the tick needs exactly the minimum number of requests.
    assert summary["report_requests"] == math.ceil(len(held) / 90)
    assert summary["closed"] == len(closed_held) > 0
    assert summary["updated"] == len(updated_held) > 0
    assert summary["erased_accounts"] == len(closed_held)
    assert summary["pd_items_left_for_closed"] == 0
    assert summary["audit_records"] == len(closed_held)
    assert summary["audit_records_with_personal_data"] == 0
    assert summary["dead_letters"] == 0
    forged = sum(1 for d in demo_dataset["deliveries"] if d["signature"] != "valid")
    unique_valid = len({d["webhookId"] for d in demo_dataset["deliveries"] if d["signature"] == "valid"})
    assert summary["consent_deliveries"] == len(demo_dataset["deliveries"])
    assert summary["consent_rejected"] == forged == 2
    assert summary["consent_applied"] + summary["consent_stale"] == unique_valid
    assert summary["consent_duplicate"] == len(demo_dataset["deliveries"]) - forged - unique_valid
    assert summary["consent_state_matches_newest_event"] is True

    # Nothing personal in any function log, nor in what the demo printed.
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert len(logs) > 1000, "the functions should have logged something"
    printed = proc.stdout + proc.stderr
    leaks = [s for s in personal_strings(demo_dataset["lines"], demo_dataset["deliveries"])
             if s in logs or s in printed]
    assert leaks == []
