#!/usr/bin/env python3
"""Generates the demo dataset in events/demo/ (deterministic: same seed, same files).

accounts.jsonl            one line per (account, site): the sample app's personal data for it
emulator.json             which accounts the Atlassian emulator answers `closed` / `updated`
consent-deliveries.jsonl  ConsentHub webhook deliveries: redeliveries, out-of-order, forged
All names and emails are synthetic (example.* domains).
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ACTIVE_TEST_ID = "5be24ad8b1653240376955d2"
CLOSED_TEST_ID = "5be24ba3f91c106033269289"
SITES = ["acme.atlassian.net", "globex.atlassian.net", "initech.atlassian.net", "umbrella.atlassian.net"]
FIRST = ["Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger",
         "Radia", "Tim", "Hedy", "John", "Katherine", "Donald", "Sophie", "Niklaus", "Anita", "Guido"]
LAST = ["Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen",
        "Dijkstra", "Perlman", "Berners", "Lamarr", "Backus", "Johnson", "Knuth", "Wilson", "Wirth", "Borg"]
BASE_TIME = datetime(2026, 11, 1, tzinfo=UTC)


def _ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def account_ids(rng: random.Random, n: int) -> list[str]:
    ids = [ACTIVE_TEST_ID, CLOSED_TEST_ID]
    while len(ids) < n:
        if rng.random() < 0.6:
            ids.append("".join(rng.choice("0123456789abcdef") for _ in range(24)))
        else:
            ids.append(f"557058:{uuid.UUID(int=rng.getrandbits(128), version=4)}")
    return ids


def accounts(rng: random.Random, ids: list[str]) -> list[dict]:
    lines = []
    comment_seq = 0
    for i, account_id in enumerate(ids):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        name = f"{first} {last}"
        email = f"{first.lower()}.{last.lower()}.{i}@example.{rng.choice(['com', 'org', 'net'])}"
        n_sites = 1 if rng.random() < 0.8 else rng.choice([2, 2, 3, 4])
        for site in rng.sample(SITES, n_sites):
            fetched = BASE_TIME + timedelta(minutes=rng.randrange(0, 60 * 24 * 25))
            comments = []
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                comment_seq += 1
                comments.append({"commentId": f"c-{comment_seq:06d}",
                                 "body": f"Looks good to me ({comment_seq})",
                                 "createdAt": _ts(fetched + timedelta(minutes=rng.randrange(1, 600)))})
            lines.append({"accountId": account_id, "site": site, "updatedAt": _ts(fetched),
                          "profile": {"displayName": name, "email": email,
                                      "avatarUrl": f"https://avatars.example.net/{i}.png"},
                          "comments": comments})
    return lines


def emulator_answers(rng: random.Random, ids: list[str]) -> dict:
    others = [a for a in ids if a not in (ACTIVE_TEST_ID, CLOSED_TEST_ID)]
    picked = rng.sample(others, 65)
    return {"closed": sorted([CLOSED_TEST_ID, *picked[:40]]), "updated": sorted(picked[40:])}


def consent_deliveries(rng: random.Random, lines: list[dict]) -> list[dict]:
    people = []
    for line in lines:
        if line["profile"]["email"] not in [p["email"] for p in people]:
            people.append({"email": line["profile"]["email"], "accountId": line["accountId"]})
        if len(people) == 8:
            break
    events = []
    seq = 0
    for person in people:
        for step in range(rng.choice([2, 3])):
            seq += 1
            occurred = BASE_TIME + timedelta(days=20, hours=step * 3, minutes=rng.randrange(0, 60))
            if step == 2 and rng.random() < 0.5:
                body = {"type": "consent.erased", "occurredAt": _ts(occurred), "data": {"email": person["email"]}}
            else:
                body = {"type": "consent.updated", "occurredAt": _ts(occurred), "data": {
                    "email": person["email"], "accountId": person["accountId"],
                    "locale": rng.choice(["DE", "FR", "US", "UNKNOWN", "GB"]),
                    "consents": [{"key": "generalMarketingOptIn", "granted": step % 2 == 0,
                                  "displayedText": "Yes, send me news and offers by email."}],
                    "formUrl": "https://example.com/preferences"}}
            events.append({"webhookId": f"msg_{seq:04d}{rng.getrandbits(40):010x}", "signature": "valid",
                           "body": body})
    deliveries = list(events)
    rng.shuffle(deliveries)  # out of order
    for e in rng.sample(events, 6):  # redeliveries of the same webhook-id
        deliveries.insert(rng.randrange(len(deliveries) + 1), e)
    for e in rng.sample(events, 2):  # forged: right body, wrong key
        deliveries.append({**e, "webhookId": e["webhookId"] + "f", "signature": "forged"})
    return deliveries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "events" / "demo")
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20261203)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ids = account_ids(rng, args.accounts)
    lines = accounts(rng, ids)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "accounts.jsonl", "w") as fh:
        fh.writelines(json.dumps(line, sort_keys=True) + "\n" for line in lines)
    (args.out / "emulator.json").write_text(json.dumps(emulator_answers(rng, ids), indent=1) + "\n")
    with open(args.out / "consent-deliveries.jsonl", "w") as fh:
        fh.writelines(json.dumps(d, sort_keys=True) + "\n" for d in consent_deliveries(rng, lines))
    print(f"{len(ids)} accounts, {len(lines)} account-site lines → {args.out}")


if __name__ == "__main__":
    main()
