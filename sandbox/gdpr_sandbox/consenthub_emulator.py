"""A local stand-in for ConsentHub's REST API (spec/consent.md): `POST /consent-hub/consent` and
`POST /consent-hub/consent-config/get`.

A real HTTP server on 127.0.0.1 so the push function's HTTP client runs exactly as in production:
HTTP Basic `email:API token`, the body shape, 202 for an accepted consent, 400/401/429/5xx answers.
Accepted consent is kept per normalised email, so consent-config/get answers what was pushed.

Control endpoints (emulator only): `GET /_emulator/log` (each request: path, status, whether the
Basic auth matched, its user, the JSON body) and `POST /_emulator/config` with JSON keys
`credentials` ({"email", "apiToken"}), `failures` ({"status", "count", "retryAfter"?}: the next
`count` API calls answer `status`), `clearLog` (bool).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from gdpr_core import clock
from gdpr_core.consent.model import requires_opt_in
from gdpr_core.pseudonym import normalise_email

from . import emulator_http
from .emulator_http import LOG_PATH as LOG_PATH  # re-exported, as before
from .emulator_http import MAX_BODY_BYTES as MAX_BODY_BYTES
from .emulator_http import EmulatorHandler, EmulatorServer, parse_failures

CONSENT_PATH = "/consent-hub/consent"
CONFIG_PATH = "/consent-hub/consent-config/get"
CONTROL_PATH = emulator_http.CONFIG_PATH  # the emulator's own /_emulator/config (CONFIG_PATH is ConsentHub's)
MARKETING_KEY = "generalMarketingOptIn"


class _Handler(EmulatorHandler):
    server_version = "ConsentHubEmulator/1"
    default_content_type = "application/json"

    def _serve_api(self, path: str, raw: bytes) -> None:
        if path not in (CONSENT_PATH, CONFIG_PATH):
            self._not_found()
            return
        self._send(*self.emulator.handle(path, self.headers, raw))


class ConsentHubEmulator(EmulatorServer):
    handler_class = _Handler
    thread_name = "consenthub-emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, email: str = "sandbox@example.invalid",
                 api_token: str = "consenthub-emulator-token"):  # noqa: S107 - a local emulator's token
        super().__init__(host, port)
        self._credentials = (email, api_token)
        self._state: dict[str, dict[str, Any]] = {}  # normalised email -> {"locale", "consents"}

    # ---------------------------------------------------------------- configuration
    def configure(self, config: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(config) - {"credentials", "failures", "clearLog"}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        with self._lock:
            if "credentials" in config:
                creds = config["credentials"]
                if not isinstance(creds, Mapping) or not all(
                        isinstance(creds.get(k), str) and creds.get(k) for k in ("email", "apiToken")):
                    raise ValueError("credentials need email and apiToken")
                self._credentials = (creds["email"], creds["apiToken"])
            if "failures" in config:
                self._failures = parse_failures(config["failures"])
            if config.get("clearLog"):
                self._log.clear()
            return {"failures": dict(self._failures), "logged": len(self._log), "people": len(self._state)}

    # ---------------------------------------------------------------- the API
    def _authorised(self, header: str | None) -> tuple[bool, str | None]:
        if not header or not header.startswith("Basic "):
            return False, None
        try:
            user, _, token = base64.b64decode(header[len("Basic "):], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        with self._lock:
            expected = self._credentials
        return (user, token) == expected, user

    def handle(self, path: str, headers: Mapping[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        ok, user = self._authorised(headers.get("Authorization"))
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = None
        status, answer_headers, answer = self._answer(path, ok, headers, body)
        self.record({"time": clock.format_rfc3339(clock.now()), "path": path, "status": status,
                     "authOk": ok, "user": user, "body": body})
        return status, answer_headers, answer

    def _answer(self, path: str, ok: bool, headers: Mapping[str, str], body: Any) -> tuple[int, dict, bytes]:
        if not ok:
            return 401, {}, b'{"message":"Unauthorized"}'
        failure = self._take_failure()
        if failure is not None:
            status, retry_after = failure
            extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return status, extra, b'{"message":"injected failure"}'
        if (headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            return 415, {}, b'{"message":"Unsupported Media Type"}'
        if path == CONSENT_PATH:
            error = _consent_error(body)
            if error:
                return 400, {}, json.dumps({"message": error}).encode()
            with self._lock:
                person = self._state.setdefault(normalise_email(body["email"]), {"locale": None, "consents": {}})
                person["locale"] = body["locale"].upper()
                for consent in body["consents"]:
                    person["consents"][consent["key"]] = consent["granted"]
            return 202, {}, b""
        if not isinstance(body, dict) or not any(isinstance(body.get(k), str) for k in ("email", "userIp")):
            return 400, {}, b'{"message":"email or userIp required"}'
        with self._lock:
            person = self._state.get(normalise_email(body["email"])) if isinstance(body.get("email"), str) else None
            person = dict(person) if person else {"locale": None, "consents": {}}
        locale = person["locale"] or "UNKNOWN"
        choice = person["consents"].get(MARKETING_KEY)
        answer = {"locale": locale, "localeRequiresMarketingCommunicationOptIn": requires_opt_in(locale),
                  "hasUserMadeChoiceOnMarketingCommunicationOptIn": choice is not None,
                  "usersChoiceOnMarketingCommunicationOptIn": choice}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()


def _consent_error(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("email"), str) or "@" not in body["email"]:
        return "email is required"
    if not isinstance(body.get("locale"), str) or not body["locale"]:
        return "locale is required"
    consents = body.get("consents")
    if not isinstance(consents, list) or not consents:
        return "consents must be a non-empty list"
    for consent in consents:
        if not isinstance(consent, dict) or not isinstance(consent.get("key"), str) \
                or not isinstance(consent.get("granted"), bool):
            return "each consent needs key and granted"
        if "displayedText" in consent and not isinstance(consent["displayedText"], str):
            return "displayedText must be a string"
    for name in ("formUrl", "providerId"):
        if name in body and not isinstance(body[name], str):
            return f"{name} must be a string"
    return None
