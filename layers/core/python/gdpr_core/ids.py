"""Atlassian account ids: what may be stored and reported."""

from __future__ import annotations

import re

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9:-]{1,128}")
# Atlassian's published test accounts (spec/personal-data-reporting.md).
TEST_ACCOUNT_ACTIVE = "5be24ad8b1653240376955d2"
TEST_ACCOUNT_CLOSED = "5be24ba3f91c106033269289"


class InvalidAccountId(ValueError):
    """Raised for an id Atlassian would reject; the message never repeats the id."""


def validate_account_id(account_id: object) -> str:
    if not isinstance(account_id, str):
        raise InvalidAccountId("accountId must be a string")
    if account_id == "unknown":
        raise InvalidAccountId("accountId 'unknown' must never be stored or reported")
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise InvalidAccountId("accountId must be 1-128 letters, digits, '-' or ':'")
    return account_id


def is_valid_account_id(account_id: object) -> bool:
    try:
        validate_account_id(account_id)
    except InvalidAccountId:
        return False
    return True


# Site ids go into S3 keys and conditions: no slashes, spaces or control characters.
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,254}")


def validate_site(site: object) -> str:
    """A site id as the app registers it and uninstalls name it; the message never echoes the value."""
    if not isinstance(site, str) or not _SITE.fullmatch(site):
        raise ValueError("site must be a site id like example.atlassian.net (letters, digits, . _ : -)")
    return site
