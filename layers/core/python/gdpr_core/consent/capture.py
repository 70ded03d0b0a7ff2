"""Consent the vendor captures in its own forms, queued for ConsentHub (spec/consent.md, push).

The vendor's app calls `enqueue(...)`; ConsentPushFunction posts each message to ConsentHub with
retries and a DLQ. Input is validated here with the webhook model's rules, so a bad capture fails in
the caller's hands with a machine-readable reason instead of dying in the DLQ days later.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import clock
from .model import MAX_TEXT_LENGTH, ValidationError, _consents, _locale, _optional_str, make_version, validate_email

QUEUE_URL_ENV = "CONSENT_PUSH_QUEUE_URL"
MESSAGE_SCHEMA = 1
_PUSH_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class PushRequest:
    push_id: str
    email: str
    locale: str
    consents: tuple[dict[str, Any], ...]  # {"key", "granted", "displayedText"}
    captured_at: datetime
    form_url: str | None = None
    provider_id: str | None = None

    @property
    def version(self) -> str:
        """Sorts with webhook deliveries, so an erasure strips captures older than itself too."""
        return make_version(self.captured_at, "push#" + self.push_id)

    def to_message(self) -> str:
        return json.dumps({
            "schema": MESSAGE_SCHEMA,
            "pushId": self.push_id,
            "capturedAt": clock.format_rfc3339(self.captured_at),
            "email": self.email,
            "locale": self.locale,
            "consents": list(self.consents),
            "formUrl": self.form_url,
            "providerId": self.provider_id,
        }, separators=(",", ":"))


def build(
    email: str,
    locale: str,
    consents: Sequence[Mapping[str, Any]],
    form_url: str | None = None,
    provider_id: str | None = None,
    push_id: str | None = None,
    captured_at: datetime | None = None,
) -> PushRequest:
    """Validates one capture; raises model.ValidationError (`schema:<field>`) without echoing values."""
    email = validate_email(email, "email")
    parsed = _field(_consents, list(consents) if isinstance(consents, list | tuple) else consents)
    for consent in parsed:
        # The text shown is the proof of what the person agreed to: a capture without it is useless.
        if not consent.displayed_text or not consent.displayed_text.strip():
            raise ValidationError("schema:consents.displayedText")
    fields = {"formUrl": form_url, "providerId": provider_id}
    form_url = _optional_str(fields, "formUrl", "formUrl", 2048)
    provider_id = _optional_str(fields, "providerId", "providerId", 256)
    push_id = push_id or uuid.uuid4().hex
    if not isinstance(push_id, str) or not _PUSH_ID.fullmatch(push_id):
        raise ValidationError("schema:pushId")
    when = captured_at or clock.now()
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValidationError("schema:capturedAt")
    return PushRequest(
        push_id=push_id,
        email=email,
        locale=_field(_locale, locale),
        consents=tuple(
            {"key": c.key, "granted": c.granted, "displayedText": c.displayed_text} for c in parsed
        ),
        captured_at=when,
        form_url=form_url or None,
        provider_id=provider_id or None,
    )


def _field(parse: Any, value: object) -> Any:
    """The model's parsers name webhook fields (`data.locale`); a capture has them at the top level."""
    try:
        return parse(value)
    except ValidationError as error:
        raise ValidationError(error.reason.replace("schema:data.", "schema:")) from None


def parse_message(body: str) -> PushRequest:
    """The queue message back into a request; ValidationError when it is not one of ours."""
    try:
        doc = json.loads(body)
    except (ValueError, TypeError, RecursionError):
        raise ValidationError("invalid_json") from None
    if not isinstance(doc, dict) or doc.get("schema") != MESSAGE_SCHEMA:
        raise ValidationError("schema:message")
    try:
        captured_at = clock.parse_rfc3339(doc.get("capturedAt"))  # type: ignore[arg-type]
    except ValueError:
        raise ValidationError("schema:capturedAt") from None
    consents = doc.get("consents")
    if not isinstance(consents, list) or len(consents) > 64:
        raise ValidationError("schema:consents")
    return build(doc.get("email"), doc.get("locale"), consents, doc.get("formUrl"), doc.get("providerId"),
                 push_id=doc.get("pushId"), captured_at=captured_at)


def enqueue(
    email: str,
    locale: str,
    consents: Sequence[Mapping[str, Any]],
    form_url: str | None = None,
    provider_id: str | None = None,
    *,
    queue_url: str | None = None,
    sqs: Any = None,
    push_id: str | None = None,
) -> str:
    """Queues one captured consent for ConsentHub; returns its push id (for the caller's records).

    `consents` are `{"key", "granted", "displayedText"}` with the text exactly as shown. The queue
    URL defaults to $CONSENT_PUSH_QUEUE_URL (the stack's ConsentPushQueueUrl output).
    """
    request = build(email, locale, consents, form_url, provider_id, push_id=push_id)
    if len(request.to_message()) > MAX_TEXT_LENGTH * 8:
        raise ValidationError("schema:size")
    url = queue_url or os.environ.get(QUEUE_URL_ENV)
    if not url:
        raise ValueError(f"no queue URL: pass queue_url or set {QUEUE_URL_ENV}")
    if sqs is None:
        from ..adapters import aws

        sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=url, MessageBody=request.to_message())
    return request.push_id
