"""The sample app's side of the demo: it caches profiles, stores comments and avatars (the personal
data the service must erase) and registers each retrieval with the registry, as a real app would
through gdpr_core.registry."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdpr_core.clock import parse_rfc3339
from gdpr_core.ids import validate_account_id
from gdpr_core.pseudonym import Pseudonymizer
from gdpr_core.registry import AccountErased, Registry

AVATAR_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                           "1f15c4890000000d4944415478da63f8ffff3f0005fe02fea7d6a4ae0000000049454e44ae426082")


@dataclass
class SeedResult:
    lines: int = 0
    accounts: set[str] = field(default_factory=set)
    sites: set[str] = field(default_factory=set)
    comments: int = 0
    avatars: int = 0
    refused: int = 0  # lines of accounts already erased as closed: the app must not store them again


def read_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    with open(path, encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                raise ValueError(f"{path.name}:{number}: not valid JSON") from None
            for key in ("accountId", "site", "updatedAt", "profile"):
                if key not in line:
                    raise ValueError(f"{path.name}:{number}: missing '{key}'")
            for key in ("displayName", "email", "avatarUrl"):
                if not isinstance(line["profile"], dict) or not isinstance(line["profile"].get(key), str):
                    raise ValueError(f"{path.name}:{number}: profile needs a string '{key}'")
            try:
                validate_account_id(line["accountId"])
                parse_rfc3339(line["updatedAt"])
            except ValueError as exc:
                raise ValueError(f"{path.name}:{number}: {exc}") from None
            lines.append(line)
    return lines


def seed(session: Any, env: dict[str, str], lines: Iterable[dict[str, Any]],
         pseudonymizer: Pseudonymizer) -> SeedResult:
    """Writes the sample app's stores and registers every (account, site) retrieval."""
    ddb = session.client("dynamodb")
    s3 = session.client("s3")
    registry = Registry(env["REGISTRY_TABLE"], pseudonymizer, client=ddb)
    profiles: dict[str, dict[str, Any]] = {}
    comments: list[dict[str, Any]] = []
    result = SeedResult()
    for line in lines:
        account_id, site = line["accountId"], line["site"]
        retrieved = parse_rfc3339(line["updatedAt"])
        try:
            registry.record(account_id, site, retrieved)
        except AccountErased:
            result.refused += 1
            continue
        result.lines += 1
        result.accounts.add(account_id)
        result.sites.add(site)
        profile = profiles.setdefault(account_id, {
            "accountId": {"S": account_id},
            "displayName": {"S": line["profile"]["displayName"]},
            "email": {"S": line["profile"]["email"]},
            "avatarUrl": {"S": line["profile"]["avatarUrl"]},
            "fetchedAt": {"S": line["updatedAt"]},
            "sites": {"SS": []},
        })
        profile["sites"]["SS"].append(site)
        profile["fetchedAt"]["S"] = min(profile["fetchedAt"]["S"], line["updatedAt"])
        for c in line.get("comments", []):
            comments.append({"commentId": {"S": c["commentId"]}, "authorAccountId": {"S": account_id},
                             "authorName": {"S": line["profile"]["displayName"]}, "body": {"S": c["body"]},
                             "site": {"S": site}, "createdAt": {"S": c["createdAt"]}})
        s3.put_object(Bucket=env["AVATAR_BUCKET"], Key=f"avatars/{account_id}/{site}.png", Body=AVATAR_PNG,
                      ContentType="image/png")
        result.avatars += 1
    _batch_put(ddb, env["PROFILE_CACHE_TABLE"], list(profiles.values()))
    _batch_put(ddb, env["COMMENTS_TABLE"], comments)
    result.comments = len(comments)
    return result


def _batch_put(ddb: Any, table: str, items: list[dict[str, Any]]) -> None:
    for i in range(0, len(items), 25):
        request = {table: [{"PutRequest": {"Item": item}} for item in items[i:i + 25]]}
        while request:
            request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or None
