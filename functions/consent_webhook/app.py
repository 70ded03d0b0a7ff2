"""ConsentHub webhooks and consent lookups (spec/consent.md); the rules live in gdpr_core.consent."""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from gdpr_core.config import Settings
from gdpr_core.consent import signature
from gdpr_core.consent.model import ValidationError, parse_event, validate_email
from gdpr_core.consent.store import ConsentStore
from gdpr_core.secrets import get_secret_json, load_pseudonymizer

MAX_BODY_BYTES = 64 * 1024
# After a rotation the cached secrets (300 s) would refuse the new one: on a bad signature the
# secret is re-read once, but at most this often per container, so a flood of forgeries costs one
# Secrets Manager call per interval, not one each.
SECRET_REFRESH_INTERVAL_SECONDS = 30
logger = Logger()
metrics = Metrics()
app = APIGatewayHttpResolver()


def _answer(status: int, payload: dict) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(payload))


def _reject(status: int, reason: str) -> Response:
    with single_metric(name="rejected", unit=MetricUnit.Count, value=1) as metric:
        metric.add_dimension(name="reason", value=reason)  # fixed vocabulary, never request data
    logger.info("request rejected", extra={"status": status, "reason": reason})
    return _answer(status, {"error": reason})


def _body() -> bytes | None:
    """The raw bytes the sender signed; None when too large (checked before decoding anything big)."""
    raw = app.current_event.body or ""
    if len(raw) > MAX_BODY_BYTES * 4 // 3 + 4:
        return None
    body = base64.b64decode(raw, validate=True) if app.current_event.is_base64_encoded else raw.encode()
    return None if len(body) > MAX_BODY_BYTES else body


class _SecretRefresh:
    def __init__(self, interval: float, monotonic=time.monotonic):
        self.interval = interval
        self.monotonic = monotonic
        self._last: float | None = None
        self._lock = threading.Lock()

    def allowed(self) -> bool:
        with self._lock:
            now = self.monotonic()
            if self._last is not None and now - self._last < self.interval:
                return False
            self._last = now
            return True

    def reset(self) -> None:
        with self._lock:
            self._last = None


secret_refresh = _SecretRefresh(SECRET_REFRESH_INTERVAL_SECONDS)


def _verify(headers, body: bytes) -> str:
    arn = Settings.from_env().signing_secret_arn
    secrets = get_secret_json(arn)  # cached: a forgery costs at most the throttled re-read below
    try:
        return signature.verify_headers([secrets.get("current"), secrets.get("previous")], headers, body)
    except signature.SignatureError as error:
        if error.reason != "bad_signature" or not secret_refresh.allowed():
            raise
    secrets = get_secret_json(arn, force_fetch=True)  # perhaps rotated since we cached it
    return signature.verify_headers([secrets.get("current"), secrets.get("previous")], headers, body)


def _store() -> ConsentStore:
    settings = Settings.from_env()
    return ConsentStore(settings.consent_table, load_pseudonymizer(settings.pseudonym_key_secret_arn))


@app.post("/consenthub/events")
def consenthub_event():
    body = _body()
    if body is None:
        return _reject(413, "body_too_large")
    media_type = (app.current_event.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return _reject(415, "unsupported_media_type")
    try:
        webhook_id = _verify(app.current_event.headers, body)
        event = parse_event(body, webhook_id)
    except signature.SignatureError as error:
        return _reject(401, error.reason)
    except ValidationError as error:
        return _reject(400, error.reason)
    outcome = _store().apply(event)
    metrics.add_metric(name=outcome, unit=MetricUnit.Count, value=1)
    logger.info("consent delivery stored", extra={"outcome": outcome, "type": event.type})
    return _answer(200, {"outcome": outcome})


@app.post("/consent/lookup")
def consent_lookup():
    body = _body()
    if body is None:
        return _reject(413, "body_too_large")
    try:
        email = validate_email(json.loads(body).get("email"), "email")
    except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, or no plausible email
        return _reject(400, "schema:email")
    return _answer(200, {"consents": _store().lookup(email)})


@app.exception_handler(binascii.Error)
def bad_encoding(_error: Exception):
    return _reject(400, "invalid_encoding")


@app.exception_handler(Exception)
def storage_failure(error: Exception):
    # 5xx so the sender retries; only the exception type is logged, its message could quote data.
    logger.error("request failed", extra={"error": type(error).__name__})
    return _answer(500, {"error": "unavailable"})


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    return app.resolve(event, context)
