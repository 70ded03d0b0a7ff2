"""ConsentHub webhook bodies (spec/consent.md) parsed into typed events, plus ordering and locale rules.

Plain Python, no AWS. Validation errors carry a short machine-readable reason and never echo a value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .. import clock
from ..ids import InvalidAccountId, validate_account_id

UPDATED = "consent.updated"
ERASED = "consent.erased"
EVENT_TYPES = frozenset({UPDATED, ERASED})
UNKNOWN_LOCALE = "UNKNOWN"

# Plausible, not RFC 5322: one "@", no spaces, a dot in the domain, within SMTP's 254 limit.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_LOCALE = re.compile(r"[A-Za-z]{2}")
# The webhook id ends up in a sort key and in the version: visible ASCII, bounded.
_WEBHOOK_ID = re.compile(r"[\x21-\x7e]{1,256}")
MAX_KEY_LENGTH = 128
MAX_TEXT_LENGTH = 16 * 1024

# Locales where marketing needs an explicit opt-in: the EU-27, the other EEA states (IS, LI, NO),
# the United Kingdom (UK GDPR / PECR) and Switzerland (revFADP). ISO 3166-1 alpha-2, plus "UK",
# which some senders use for GB. UNKNOWN also requires opt-in (spec: treat it as GDPR).
OPT_IN_LOCALES = frozenset(
    {
        # EU member states
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
        # EEA outside the EU
        "IS", "LI", "NO",
        # United Kingdom and Switzerland
        "GB", "UK", "CH",
    }
)  # fmt: skip


class ValidationError(ValueError):
    """A body to be answered 400; `reason` is `invalid_json`, `unknown_type` or `schema:<field>`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Consent:
    key: str
    granted: bool
    displayed_text: str | None = None


@dataclass(frozen=True)
class ConsentEvent:
    webhook_id: str
    type: str
    occurred_at: datetime
    email: str
    account_id: str | None = None
    locale: str | None = None
    consents: tuple[Consent, ...] = ()
    form_url: str | None = None

    @property
    def version(self) -> str:
        return make_version(self.occurred_at, self.webhook_id)


def format_version_time(when: datetime) -> str:
    """Fixed-width UTC with microseconds, so string order is time order."""
    when = when.astimezone(UTC)
    return f"{when.year:04d}-" + when.strftime("%m-%dT%H:%M:%S.%fZ")


def make_version(occurred_at: datetime, webhook_id: str) -> str:
    """The spec's order as a plain string: newer occurredAt wins, ties go to the greater webhook id."""
    return format_version_time(occurred_at) + "|" + webhook_id


def requires_opt_in(locale: str | None) -> bool:
    if not locale:
        return True
    locale = locale.upper()
    return locale == UNKNOWN_LOCALE or locale in OPT_IN_LOCALES


def validate_email(value: object, field: str = "data.email") -> str:
    if not isinstance(value, str):
        raise ValidationError(f"schema:{field}")
    value = value.strip()
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValidationError(f"schema:{field}")
    return value


def _optional_str(data: dict, name: str, field: str, max_length: int = MAX_TEXT_LENGTH) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise ValidationError(f"schema:{field}")
    return value


def _locale(value: object) -> str:
    if isinstance(value, str):
        if value.upper() == UNKNOWN_LOCALE:
            return UNKNOWN_LOCALE
        if _LOCALE.fullmatch(value):
            return value.upper()
    raise ValidationError("schema:data.locale")


def _consents(value: object) -> tuple[Consent, ...]:
    if not isinstance(value, list) or not value:
        raise ValidationError("schema:data.consents")
    consents: list[Consent] = []
    for entry in value:
        if not isinstance(entry, dict):
            raise ValidationError("schema:data.consents")
        key = entry.get("key")
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
            raise ValidationError("schema:data.consents.key")
        granted = entry.get("granted")
        if not isinstance(granted, bool):
            raise ValidationError("schema:data.consents.granted")
        text = _optional_str(entry, "displayedText", "data.consents.displayedText")
        consents.append(Consent(key=key, granted=granted, displayed_text=text))
    if len({c.key for c in consents}) != len(consents):
        # Two answers for one key in one event have no defined order.
        raise ValidationError("schema:data.consents.key")
    return tuple(consents)


def parse_event(body: bytes | str, webhook_id: str) -> ConsentEvent:
    if not isinstance(webhook_id, str) or not _WEBHOOK_ID.fullmatch(webhook_id):
        raise ValidationError("schema:webhook-id")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting fits in 64 KiB too
        raise ValidationError("invalid_json") from None
    if not isinstance(doc, dict):
        raise ValidationError("schema:body")
    event_type = doc.get("type")
    if not isinstance(event_type, str):
        raise ValidationError("schema:type")
    if event_type not in EVENT_TYPES:
        raise ValidationError("unknown_type")
    try:
        occurred_at = clock.parse_rfc3339(doc.get("occurredAt"))  # type: ignore[arg-type]
    except ValueError:
        raise ValidationError("schema:occurredAt") from None
    data = doc.get("data")
    if not isinstance(data, dict):
        raise ValidationError("schema:data")
    email = validate_email(data.get("email"))
    account_id = data.get("accountId")
    if account_id is not None:
        try:
            validate_account_id(account_id)
        except InvalidAccountId:
            raise ValidationError("schema:data.accountId") from None
    if event_type == ERASED:
        return ConsentEvent(webhook_id, event_type, occurred_at, email, account_id=account_id)
    return ConsentEvent(
        webhook_id,
        event_type,
        occurred_at,
        email,
        account_id=account_id,
        locale=_locale(data.get("locale")),
        consents=_consents(data.get("consents")),
        form_url=_optional_str(data, "formUrl", "data.formUrl", 2048),
    )
