"""Standard Webhooks signatures (spec/consent.md): HMAC-SHA256 over "{id}.{timestamp}.{raw body}".

Plain Python, no AWS: the handler verifies before it touches anything else, so a forged request
costs no AWS call. Error reasons are short fixed strings; nothing from the request is echoed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from .. import clock

TOLERANCE_SECONDS = 5 * 60
_SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class SignatureError(Exception):
    """A delivery that must be answered 401; `reason` is machine-readable and holds no request data."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def secret_key(secret: str) -> bytes:
    """`whsec_<base64>` gives the decoded key; anything else is the raw UTF-8 bytes of the secret.

    The raw fallback exists because CloudFormation's GenerateSecretString produces a plain string.
    A `whsec_` secret that is not valid base64 is a configuration error (ValueError), not a 401.
    """
    if secret.startswith(_SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(_SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("signing secret has the whsec_ prefix but is not valid base64") from None
    return secret.encode()


def _digest(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, webhook_id: str, timestamp: int | str, body: bytes | str) -> str:
    """The `webhook-signature` header value a sender would produce (senders, tests, the sandbox)."""
    if isinstance(body, str):
        body = body.encode()
    digest = _digest(secret_key(secret), webhook_id, str(timestamp), body)
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secrets: Iterable[str],
    webhook_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: datetime | None = None,
    tolerance_seconds: int = TOLERANCE_SECONDS,
) -> None:
    """Raises SignatureError unless one `v1` entry matches one of the secrets (rotation)."""
    if not webhook_id or not timestamp or not signature:
        raise SignatureError("missing_headers")
    timestamp = timestamp.strip()
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("bad_timestamp")
    current = (now or clock.now()).timestamp()
    if abs(current - int(timestamp)) > tolerance_seconds:
        raise SignatureError("timestamp_out_of_tolerance")

    candidates: list[bytes] = []
    for entry in signature.split():
        version, _, value = entry.partition(",")
        if version != "v1" or not value:
            continue  # other schemes (e.g. v1a asymmetric) are not ours to check
        try:
            candidates.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    keys = [secret_key(s) for s in secrets if s]
    matched = False
    # No early exit: every comparison runs, so timing says nothing about which entry was close.
    for key in keys:
        expected = _digest(key, webhook_id, timestamp, body)
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("bad_signature")


def verify_headers(
    secrets: Iterable[str],
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | None = None,
) -> str:
    """Verifies from a header mapping of any case; returns the webhook id."""
    lowered = {str(k).lower(): v for k, v in (headers or {}).items()}
    webhook_id = lowered.get(ID_HEADER)
    verify(secrets, webhook_id, lowered.get(TIMESTAMP_HEADER), lowered.get(SIGNATURE_HEADER), body, now)
    return webhook_id  # type: ignore[return-value]  # verify() rejects a missing id
