"""`make demo`: the whole job on the embedded sandbox, verified by reading every store.

start → seed the sample app → deliver the sample consent webhooks → report (ticks until nothing is
due) → drain the actions queue → verify against the stores and the emulator's own request log →
print a summary and write .sandbox/demo-summary.json → stop. Exit status 1 if verification fails.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import secrets
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from . import paths
from .sample_app import read_lines, seed
from .services import Sandbox
from .verify import verify_closed_erased, verify_consent, verify_report_log

MAX_TICKS = 50


def deliver_consent(webhook_url: str, signing_secret: str, deliveries: list[dict[str, Any]]) -> Counter:
    from gdpr_core.consent.signature import sign

    forged_key = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    statuses: Counter = Counter()
    with requests.Session() as http:
        for d in deliveries:
            body = json.dumps(d["body"]).encode()
            ts = str(int(time.time()))
            key = signing_secret if d["signature"] == "valid" else forged_key
            headers = {"content-type": "application/json", "webhook-id": d["webhookId"], "webhook-timestamp": ts,
                       "webhook-signature": sign(key, d["webhookId"], ts, body)}
            answer = http.post(webhook_url, data=body, headers=headers, timeout=30)
            outcome = answer.json().get("outcome") if answer.status_code < 300 else None
            statuses[outcome or str(answer.status_code)] += 1
    return statuses


def run(state: Path, dataset: Path) -> dict[str, Any]:
    started = time.monotonic()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        phases[name] = round(time.monotonic() - started - sum(phases.values()), 1)

    sandbox = Sandbox.start(state)
    lap("start")
    try:
        emulator = sandbox.endpoints["emulator_url"]
        answers = json.loads((dataset / "emulator.json").read_text())
        requests.post(f"{emulator}/_emulator/config", json={"closed": answers["closed"],
                                                            "updated": answers["updated"]}, timeout=10)
        lines = read_lines(dataset / "accounts.jsonl")
        erasure_env = sandbox.env()["ErasureFunction"]
        from gdpr_core.secrets import load_pseudonymizer

        seeded = seed(sandbox.session, erasure_env, lines, load_pseudonymizer(erasure_env["PSEUDONYM_KEY_SECRET_ARN"]))
        lap("seed")

        deliveries = [json.loads(x) for x in (dataset / "consent-deliveries.jsonl").read_text().splitlines() if x]
        consent = deliver_consent(sandbox.endpoints["stack_outputs"]["ConsentWebhookUrl"],
                                  sandbox.endpoints["webhook_signing_secret"], deliveries)
        lap("consent")

        ticks = []
        for _ in range(MAX_TICKS):
            ticks.append(sandbox.report())
            if ticks[-1].get("complete"):
                break
        lap("report")
        drained = sandbox.drain()
        lap("drain")

        log = requests.get(f"{emulator}/_emulator/log", timeout=10).json()["requests"]
        report_check = verify_report_log(log, seeded.accounts, set(answers["closed"]))
        closed_held = set(answers["closed"]) & seeded.accounts
        erasure_check = verify_closed_erased(sandbox, closed_held)
        consent_check = verify_consent(sandbox, deliveries, closed_held)
        lap("verify")
        summary = {
            "accounts_registered": len(seeded.accounts),
            "account_site_lines": seeded.lines,
            "sites": len(seeded.sites),
            "report_ticks": len(ticks),
            "report_requests": report_check["requests"],
            "max_accounts_per_request": report_check["max_accounts_per_request"],
            "accounts_reported": report_check["accounts_reported"],
            "accounts_reported_twice": report_check["accounts_reported_twice"],
            "closed": sum(t.get("closed", 0) for t in ticks),
            "updated": sum(t.get("updated", 0) for t in ticks),
            "actions_processed": sum(drained.values()),
            "erased_accounts": erasure_check["erased_accounts"],
            "pd_items_left_for_closed": erasure_check["pd_items_left"],
            "audit_records": erasure_check["audit_records"],
            "audit_records_with_personal_data": erasure_check["audit_records_with_personal_data"],
            "dead_letters": erasure_check["dead_letters"],
            "consent_deliveries": len(deliveries),
            "consent_applied": consent["applied"],
            "consent_duplicate": consent["duplicate"],
            "consent_stale": consent["stale"],
            "consent_rejected": sum(v for k, v in consent.items() if k.isdigit()),
            "consent_state_matches_newest_event": consent_check["matches"],
            "seconds": round(time.monotonic() - started, 1),
            "phase_seconds": phases,
        }
        problems = report_check["problems"] + erasure_check["problems"] + consent_check["problems"]
        if summary["erased_accounts"] != len(closed_held):
            problems.append(f"{len(closed_held)} held accounts were answered closed, "
                            f"{summary['erased_accounts']} erased")
        summary["verified"] = not problems
        summary["problems"] = problems
        return summary
    finally:
        sandbox.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gdpr_sandbox.demo", description=__doc__)
    parser.add_argument("--dataset", type=Path, default=paths.DEMO_DIR)
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.ERROR)
    state = args.state_dir or paths.state_dir()
    summary = run(state, args.dataset)
    (state / "demo-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("GDPR compliance demo on the embedded sandbox")
    print(f"  registered  {summary['accounts_registered']} accounts on {summary['sites']} sites "
          f"({summary['account_site_lines']} account-site retrievals)")
    print(f"  reported    {summary['accounts_reported']} accounts in {summary['report_requests']} requests "
          f"(max {summary['max_accounts_per_request']} per request, {summary['accounts_reported_twice']} twice)")
    print(f"  answered    {summary['closed']} closed, {summary['updated']} updated")
    print(f"  erased      {summary['erased_accounts']} accounts, {summary['pd_items_left_for_closed']} personal-data "
          f"items left, {summary['audit_records']} audit records, {summary['dead_letters']} dead letters")
    print(f"  consent     {summary['consent_deliveries']} deliveries: {summary['consent_applied']} applied, "
          f"{summary['consent_duplicate']} duplicate, {summary['consent_stale']} stale, "
          f"{summary['consent_rejected']} rejected; state matches newest event: "
          f"{summary['consent_state_matches_newest_event']}")
    print(f"  summary     {state / 'demo-summary.json'} ({summary['seconds']} s)")
    if summary["problems"]:
        print("VERIFICATION FAILED:", file=sys.stderr)
        for p in summary["problems"]:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("verified: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
