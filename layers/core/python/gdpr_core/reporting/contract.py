"""Atlassian's personal data reporting API: the only module that knows its wire format.

`ReportClient.report()` sends one request of at most 90 accounts and turns every answer into a plain
outcome value (never an exception for an HTTP answer), so the run decides what to do with each kind.
Nothing here logs or echoes account ids: Atlassian's error messages may contain them, so only
`errorType` is kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from .. import clock
from ..ids import validate_account_id

MAX_ACCOUNTS_PER_REQUEST = 90
REPORT_PATH_3LO = "/app/report-accounts/"
REPORT_PATH_CONNECT = "/rest/atlassian-connect/latest/report-accounts"
DEFAULT_RETRY_AFTER_SECONDS = 60
CONNECT_JWT_LIFETIME_SECONDS = 180
ACTION_STATUSES = frozenset({"closed", "updated"})
# A Cycle-Period beyond a year is more likely a garbled header than a policy; ignore it.
MAX_CYCLE_PERIOD = timedelta(days=366)


# ------------------------------------------------------------------ outcomes
@dataclass(frozen=True)
class Answered:
    """200 (some accounts need action) or 204 (none does)."""

    status_code: int
    actions: tuple[tuple[str, str], ...] = ()  # (accountId, "closed" | "updated")
    unknown_status: int = 0  # entries with a status we do not know (e.g. a future "active")
    unrequested: int = 0  # entries for accounts we did not send
    cycle_period: timedelta | None = None


@dataclass(frozen=True)
class BadRequest:
    status_code: int
    error_type: str
    cycle_period: timedelta | None = None


@dataclass(frozen=True)
class CredentialRejected:
    status_code: int
    cycle_period: timedelta | None = None


@dataclass(frozen=True)
class RateLimited:
    retry_after_seconds: float
    cycle_period: timedelta | None = None


@dataclass(frozen=True)
class Unavailable:
    reason: str  # "http_503", "timeout", "connection", "bad_response"
    status_code: int | None = None
    cycle_period: timedelta | None = None


ReportOutcome = Answered | BadRequest | CredentialRejected | RateLimited | Unavailable


# ------------------------------------------------------------------ header parsing
_PLAIN_DAYS = re.compile(r"\s*(\d{1,5})\s*(?:d|days?)?\s*", re.IGNORECASE)
_ISO_DURATION = re.compile(
    r"\s*P(?:(?P<w>\d{1,4})W)?(?:(?P<d>\d{1,5})D)?(?:T(?:(?P<h>\d{1,6})H)?(?:(?P<m>\d{1,8})M)?"
    r"(?:(?P<s>\d{1,10})S)?)?\s*",
    re.IGNORECASE,
)


def parse_cycle_period(value: object) -> timedelta | None:
    """`7`, `7 days`, `20 Days`, `1 day`, `P7D`, `P2W`, `P1DT12H` → timedelta; None if unusable."""
    if not isinstance(value, str) or not value.strip():
        return None
    period: timedelta | None = None
    if m := _PLAIN_DAYS.fullmatch(value):
        period = timedelta(days=int(m.group(1)))
    elif (m := _ISO_DURATION.fullmatch(value)) and any(m.groupdict().values()):
        if value.strip().upper().endswith("T"):
            return None  # "P1DT" has a time designator with nothing after it
        parts = {k: int(v) if v else 0 for k, v in m.groupdict().items()}
        period = timedelta(
            weeks=parts["w"], days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"]
        )
    if period is None or period <= timedelta(0) or period > MAX_CYCLE_PERIOD:
        return None
    return period


def parse_retry_after(value: object, now: datetime | None = None) -> float:
    """Seconds from `Retry-After` (delta-seconds or HTTP-date); 60 when missing or garbage."""
    if not isinstance(value, str) or not value.strip():
        return float(DEFAULT_RETRY_AFTER_SECONDS)
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return float(DEFAULT_RETRY_AFTER_SECONDS)
    if when is None:
        return float(DEFAULT_RETRY_AFTER_SECONDS)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or clock.now()
    return max(0.0, (when - now).total_seconds())


# ------------------------------------------------------------------ Connect JWT
def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def connect_qsh(method: str = "POST", path: str = REPORT_PATH_CONNECT, query: str = "") -> str:
    """Atlassian's query string hash: method, path (no context path) and sorted query, '&'-joined."""
    canonical = f"{method.upper()}&{path}&{query}"
    return hashlib.sha256(canonical.encode()).hexdigest()


def connect_jwt(app_key: str, shared_secret: str, now: datetime | None = None) -> str:
    """HS256 JWT as Connect expects for an app-to-Atlassian call; stdlib only (no PyJWT in the layer)."""
    issued = int((now or clock.now()).timestamp())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "iss": app_key,
        "iat": issued,
        "exp": issued + CONNECT_JWT_LIFETIME_SECONDS,
        "qsh": connect_qsh(),
    }
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(shared_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


# ------------------------------------------------------------------ the client
@dataclass
class ReportClient:
    base_url: str
    session: Any = None
    timeout: float | tuple[float, float] = (5.0, 20.0)
    _requests: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # requests is imported lazily so that importing the domain stays cheap at cold start.
        import requests

        self._requests = requests
        self.base_url = self.base_url.rstrip("/")
        if self.session is None:
            self.session = requests.Session()

    def build_request(
        self, accounts: Sequence[tuple[str, datetime]], credential: Mapping[str, Any]
    ) -> tuple[str, dict[str, str], bytes]:
        """URL, headers and body for one report; ValueError (without ids) if Atlassian would refuse it."""
        if not accounts:
            raise ValueError("a report needs at least one account")
        if len(accounts) > MAX_ACCOUNTS_PER_REQUEST:
            raise ValueError(f"a report holds at most {MAX_ACCOUNTS_PER_REQUEST} accounts")
        body_accounts = []
        for account_id, updated_at in accounts:
            validate_account_id(account_id)
            if not isinstance(updated_at, datetime) or updated_at.tzinfo is None:
                raise ValueError("updatedAt must be a timezone-aware datetime")
            body_accounts.append({"accountId": account_id, "updatedAt": clock.format_rfc3339(updated_at)})
        body = json.dumps({"accounts": body_accounts}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        kind = credential.get("type")
        if kind == "oauth3lo":
            token = credential.get("token")
            if not isinstance(token, str) or not token:
                raise ValueError("oauth3lo credential without a token")
            url = self.base_url + REPORT_PATH_3LO
            headers["Authorization"] = f"Bearer {token}"
        elif kind == "connect":
            site = credential.get("baseUrl")
            app_key = credential.get("appKey")
            secret = credential.get("sharedSecret")
            if not (isinstance(site, str) and site and isinstance(app_key, str) and isinstance(secret, str)):
                raise ValueError("connect credential needs baseUrl, appKey and sharedSecret")
            url = site.rstrip("/") + REPORT_PATH_CONNECT
            headers["Authorization"] = f"JWT {connect_jwt(app_key, secret)}"
        else:
            raise ValueError("unknown credential type")
        return url, headers, body

    def report(
        self, accounts: Sequence[tuple[str, datetime]], credential: Mapping[str, Any]
    ) -> ReportOutcome:
        url, headers, body = self.build_request(accounts, credential)
        requests = self._requests
        try:
            response = self.session.post(url, data=body, headers=headers, timeout=self.timeout)
        except requests.Timeout:
            return Unavailable("timeout")
        except requests.RequestException:
            return Unavailable("connection")
        return interpret_response(
            response.status_code, response.headers, response.content, {a for a, _ in accounts}
        )


def interpret_response(
    status: int, headers: Mapping[str, str], content: bytes, requested: set[str]
) -> ReportOutcome:
    """Maps one HTTP answer to an outcome; every kind carries the Cycle-Period header if valid."""
    cycle_period = parse_cycle_period(_header(headers, "Cycle-Period"))
    if status == 204:
        # 204 has no body by definition: never parse one.
        return Answered(204, cycle_period=cycle_period)
    if status == 200:
        return _parse_actions(content, requested, cycle_period)
    if status in (401, 403):
        return CredentialRejected(status, cycle_period=cycle_period)
    if status == 429:
        return RateLimited(parse_retry_after(_header(headers, "Retry-After")), cycle_period=cycle_period)
    if status == 400:
        return BadRequest(400, _error_type(content), cycle_period=cycle_period)
    if 400 <= status < 500:
        return BadRequest(status, f"http_{status}", cycle_period=cycle_period)
    return Unavailable(f"http_{status}", status, cycle_period=cycle_period)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # requests' headers are case-insensitive already; plain dicts (tests, fakes) may not be.
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _parse_actions(content: bytes, requested: set[str], cycle_period: timedelta | None) -> ReportOutcome:
    try:
        payload = json.loads(content or b"")
    except (ValueError, UnicodeDecodeError):
        return Unavailable("bad_response", 200, cycle_period=cycle_period)
    entries = payload.get("accounts") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        return Unavailable("bad_response", 200, cycle_period=cycle_period)
    actions: dict[str, str] = {}
    unknown = unrequested = 0
    for entry in entries:
        if not isinstance(entry, dict):
            unknown += 1
            continue
        account_id, status = entry.get("accountId"), entry.get("status")
        if account_id not in requested:
            unrequested += 1
        elif status not in ACTION_STATUSES:
            unknown += 1
        elif actions.get(account_id) != "closed":  # closed outranks updated if both appear
            actions[account_id] = status
    return Answered(200, tuple(actions.items()), unknown, unrequested, cycle_period)


_SAFE_ERROR_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _error_type(content: bytes) -> str:
    try:
        payload = json.loads(content or b"")
    except (ValueError, UnicodeDecodeError):
        return "unparseable"
    value = payload.get("errorType") if isinstance(payload, dict) else None
    if isinstance(value, str) and _SAFE_ERROR_TYPE.fullmatch(value):
        return value
    return "unknown"
