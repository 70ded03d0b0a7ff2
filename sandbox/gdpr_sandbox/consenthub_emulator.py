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
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gdpr_core import clock
from gdpr_core.consent.model import requires_opt_in
from gdpr_core.pseudonym import normalise_email

CONSENT_PATH = "/consent-hub/consent"
CONFIG_PATH = "/consent-hub/consent-config/get"
LOG_PATH = "/_emulator/log"
CONTROL_PATH = "/_emulator/config"
MARKETING_KEY = "generalMarketingOptIn"
MAX_BODY_BYTES = 1_000_000


class ConsentHubEmulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, email: str = "sandbox@example.invalid",
                 api_token: str = "consenthub-emulator-token"):  # noqa: S107 - a local emulator's token
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._credentials = (email, api_token)
        self._failures: dict[str, Any] = {"status": 503, "count": 0, "retryAfter": None}
        self._log: list[dict[str, Any]] = []
        self._state: dict[str, dict[str, Any]] = {}  # normalised email -> {"locale", "consents"}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> ConsentHubEmulator:
        if self._server is None:
            self._server = ThreadingHTTPServer((self.host, self._port), _make_handler(self))
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, name="consenthub-emulator",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator is not running")
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._log]

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
                value = config["failures"]
                if not isinstance(value, Mapping) or not 400 <= int(value.get("status", 503)) <= 599:
                    raise ValueError("failures needs a 4xx/5xx status and a count")
                self._failures = {"status": int(value.get("status", 503)), "count": max(0, int(value.get("count", 1))),
                                  "retryAfter": value.get("retryAfter")}
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

    def _take_failure(self) -> tuple[int, Any] | None:
        with self._lock:
            if self._failures["count"] <= 0:
                return None
            self._failures["count"] -= 1
            return self._failures["status"], self._failures["retryAfter"]

    def handle(self, path: str, headers: Mapping[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        ok, user = self._authorised(headers.get("Authorization"))
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = None
        status, answer_headers, answer = self._answer(path, ok, headers, body)
        with self._lock:
            self._log.append({"time": clock.format_rfc3339(clock.now()), "path": path, "status": status,
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


def _make_handler(emulator: ConsentHubEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ConsentHubEmulator/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass  # the request log is the record

        def _send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if body and "Content-Type" not in headers:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if self.path.split("?")[0] == LOG_PATH:
                self._send(200, {}, json.dumps({"requests": emulator.requests}).encode())
            else:
                self._send(404, {}, b'{"message":"Not Found"}')

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            path = self.path.split("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                return self._send(413, {}, b'{"message":"body too large"}')
            raw = self.rfile.read(length) if length else b""
            if path == CONTROL_PATH:
                try:
                    config = json.loads(raw or b"{}")
                    if not isinstance(config, dict):
                        raise ValueError("config must be a JSON object")
                    return self._send(200, {}, json.dumps(emulator.configure(config)).encode())
                except (ValueError, TypeError) as error:
                    return self._send(400, {}, json.dumps({"message": str(error)}).encode())
            if path not in (CONSENT_PATH, CONFIG_PATH):
                return self._send(404, {}, b'{"message":"Not Found"}')
            self._send(*emulator.handle(path, self.headers, raw))

    return Handler
