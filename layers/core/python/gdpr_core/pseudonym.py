"""Keyed hashes that stand in for personal data in keys, audit records and logs.

HMAC-SHA256 with a secret key: whoever holds the key and an account id (or email) can find its
records; nobody else can reverse or enumerate them. A purpose prefix keeps the hash of an email
and of an account id from ever colliding or being linkable.
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymizer:
    def __init__(self, key: bytes | str):
        if isinstance(key, str):
            key = key.encode()
        if len(key) < 16:
            raise ValueError("pseudonym key must be at least 16 bytes")
        self._key = key

    def _hash(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def account(self, account_id: str) -> str:
        return self._hash("account", account_id)

    def email(self, email: str) -> str:
        return self._hash("email", normalise_email(email))

    def site(self, site: str) -> str:
        """Sites name customer organisations, yet a personal site can name a person: hash them too."""
        return self._hash("site", site)  # verbatim: stores match site ids exactly


def normalise_email(email: str) -> str:
    """Emails compare case-insensitively after trimming (spec/consent.md)."""
    return email.strip().lower()

