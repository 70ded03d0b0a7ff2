"""A local stand-in for Atlassian's personal data reporting API (spec/personal-data-reporting.md).

A real HTTP server on 127.0.0.1 so the reporter's HTTP client is exercised exactly as in production:
Bearer auth, the body shape, the 90-account limit, 200/204/400/401/429/503 answers, `Cycle-Period`
and `Retry-After`. The published closed test account is always answered `closed`.

Control endpoints (emulator only): `GET /_emulator/log` and `POST /_emulator/config` with JSON keys
`closed` (ids), `updated` (ids, or {id: RFC 3339 change time}: answered only while the reported
updatedAt is older), `tokens`, `cyclePeriod` (string or null), `rateLimit` ({"requests", "windowSeconds",
"retryAfter"} or null), `failures` ({"status", "count", "retryAfter"?}), `refused` (ids: a request
holding one is answered 400 `InvalidAccountId`, as Atlassian may refuse an account), `oddAnswers` (ids
answered `closed` in every 200/204 that did not ask about them), `clearLog` (bool).
`GET /_emulator/log?since=N` returns the entries from the N-th on, and `total`.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from gdpr_core import clock

from .emulator_http import CONFIG_PATH as CONFIG_PATH  # re-exported, as before
from .emulator_http import LOG_PATH as LOG_PATH
from .emulator_http import MAX_BODY_BYTES as MAX_BODY_BYTES
from .emulator_http import EmulatorHandler, EmulatorServer, parse_failures

REPORT_PATH = "/app/report-accounts/"
MAX_ACCOUNTS = 90
CLOSED_TEST_ACCOUNT = "5be24ba3f91c106033269289"
DEFAULT_TOKEN = "emulator-token"  # noqa: S105 - a fixed test token for a local emulator

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9:-]{1,128}")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def _now_text() -> str:
    # The shared clock, so an accelerated sandbox cycle logs the same time the reporter sees.
    return clock.format_rfc3339(clock.now())


def _parse_time(value: str) -> datetime | None:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None


class _BadRequest(Exception):
    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class _Handler(EmulatorHandler):
    server_version = "AtlassianEmulator/1"

    def _error(self, status: int, message: str, error_type: str) -> None:
        self._json(status, {"errorType": error_type, "errorMessage": message})

    def _serve_log(self, query: str) -> None:
        since = parse_qs(query).get("since", ["0"])[0]
        if not since.isdigit():
            self._error(400, "since must be a count", "InvalidQuery")
            return
        entries, total = self.emulator.requests_since(int(since))
        self._json(200, {"requests": entries, "total": total})

    def _serve_api(self, path: str, raw: bytes) -> None:
        if path != REPORT_PATH:
            self._not_found()
            return
        status, headers, body, ids = self.emulator.handle_report(self.headers, raw)
        self.emulator.record(
            {
                "time": _now_text(),
                "method": "POST",
                "path": path,
                "status": status,
                "accounts": len(ids),
                "accountIds": ids,
            }
        )
        self._send(status, headers, body)


class AtlassianEmulator(EmulatorServer):
    handler_class = _Handler
    thread_name = "atlassian-emulator"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Iterable[str] = (DEFAULT_TOKEN,),
        closed: Iterable[str] = (),
        updated: Iterable[str] | Mapping[str, str] = (),
        cycle_period: str | None = None,
        rate_limit: Mapping[str, float] | None = None,
    ):
        super().__init__(host, port)
        self._recent: deque[float] = deque()  # monotonic times of recent report requests
        self.tokens: set[str] = set()
        self.closed: set[str] = set()
        self.updated: dict[str, datetime | None] = {}
        self.cycle_period: str | None = None
        self.rate_limit: dict[str, float] | None = None
        self.refused: set[str] = set()
        self.odd_answers: list[str] = []
        self.configure(
            {
                "tokens": list(tokens),
                "closed": list(closed),
                "updated": dict(updated) if isinstance(updated, Mapping) else list(updated),
                "cyclePeriod": cycle_period,
                "rateLimit": dict(rate_limit) if rate_limit else None,
            }
        )

    # ---------------------------------------------------------------- the request log
    def requests_since(self, start: int) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            return [dict(entry) for entry in self._log[max(0, start) :]], len(self._log)

    # ---------------------------------------------------------------- configuration
    def configure(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Applies the keys present in `config`; ValueError on a bad value (nothing is applied then)."""
        known = {"tokens", "closed", "updated", "cyclePeriod", "rateLimit", "failures", "clearLog", "refused",
                 "oddAnswers"}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        changes: dict[str, Any] = {}
        if "tokens" in config:
            changes["tokens"] = set(_strings(config["tokens"], "tokens"))
        if "closed" in config:
            changes["closed"] = set(_strings(config["closed"], "closed"))
        if "refused" in config:
            changes["refused"] = set(_strings(config["refused"], "refused"))
        if "oddAnswers" in config:
            changes["odd_answers"] = _strings(config["oddAnswers"], "oddAnswers")
        if "updated" in config:
            value = config["updated"]
            if isinstance(value, Mapping):
                parsed = {}
                for key, when in value.items():
                    moment = _parse_time(when)
                    if not isinstance(key, str) or moment is None:
                        raise ValueError("updated must map account ids to RFC 3339 times")
                    parsed[key] = moment
                changes["updated"] = parsed
            else:
                changes["updated"] = dict.fromkeys(_strings(value, "updated"))
        if "cyclePeriod" in config:
            value = config["cyclePeriod"]
            if value is not None and not isinstance(value, str | int):
                raise ValueError("cyclePeriod must be a string or null")
            changes["cycle_period"] = None if value is None else str(value)
        if "rateLimit" in config:
            value = config["rateLimit"]
            if value is None:
                changes["rate_limit"] = None
            else:
                if not isinstance(value, Mapping) or int(value.get("requests", 0)) < 1:
                    raise ValueError("rateLimit needs requests >= 1")
                changes["rate_limit"] = {
                    "requests": int(value["requests"]),
                    "windowSeconds": float(value.get("windowSeconds", 1.0)),
                    "retryAfter": value.get("retryAfter", 1),
                }
        if "failures" in config:
            changes["failures"] = parse_failures(config["failures"])
        with self._lock:
            for key in ("tokens", "closed", "updated", "cycle_period", "rate_limit", "refused", "odd_answers"):
                if key in changes:
                    setattr(self, key, changes[key])
            if "failures" in changes:
                self._failures = changes["failures"]
            if config.get("clearLog"):
                self._log.clear()
                self._recent.clear()
            return self._config_view()

    def _config_view(self) -> dict[str, Any]:
        return {
            "tokens": len(self.tokens),  # never echo secrets back
            "closed": sorted(self.closed | {CLOSED_TEST_ACCOUNT}),
            "updated": {k: (v.isoformat() if v else None) for k, v in sorted(self.updated.items())},
            "cyclePeriod": self.cycle_period,
            "rateLimit": self.rate_limit,
            "failures": dict(self._failures),
            "refused": sorted(self.refused),
            "oddAnswers": list(self.odd_answers),
            "logged": len(self._log),
        }

    # ---------------------------------------------------------------- the API
    def handle_report(
        self, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes, list]:
        """Returns (status, headers, body, reported account ids) for one report request."""
        answer_headers: dict[str, str] = {}
        with self._lock:
            cycle_period = self.cycle_period
            tokens = set(self.tokens)
        if cycle_period:
            answer_headers["Cycle-Period"] = cycle_period
        ids = _ids_for_log(raw)
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or auth[len("Bearer ") :] not in tokens:
            return 401, answer_headers, b'{"message":"Unauthorized"}', ids
        limited = self._rate_limited()
        if limited is not None:
            answer_headers["Retry-After"] = str(limited)
            return 429, answer_headers, b'{"message":"Too Many Requests"}', ids
        failure = self._take_failure()
        if failure is not None:
            status, retry_after = failure
            if retry_after is not None:
                answer_headers["Retry-After"] = str(retry_after)
            body = json.dumps({"errorType": "injected", "errorMessage": "injected failure"}).encode()
            return status, answer_headers, body, ids
        try:
            accounts = _validate(headers, raw)
        except _BadRequest as bad:
            body = json.dumps({"errorType": bad.error_type, "errorMessage": bad.message}).encode()
            return 400, answer_headers, body, ids
        actions = []
        with self._lock:
            closed = self.closed | {CLOSED_TEST_ACCOUNT}
            updated = dict(self.updated)
            refused = self.refused & {a for a, _ in accounts}
            odd = list(self.odd_answers)
        if refused:
            body = json.dumps({"errorType": "InvalidAccountId", "errorMessage": "account id refused"}).encode()
            return 400, answer_headers, body, ids
        for account_id, updated_at in accounts:
            if account_id in closed:
                actions.append({"accountId": account_id, "status": "closed"})
            elif account_id in updated and (updated[account_id] is None or updated_at < updated[account_id]):
                actions.append({"accountId": account_id, "status": "updated"})
        asked = {a for a, _ in accounts}
        actions += [{"accountId": a, "status": "closed"} for a in odd if a not in asked]
        if not actions:
            return 204, answer_headers, b"", ids
        answer_headers["Content-Type"] = "application/json"
        return 200, answer_headers, json.dumps({"accounts": actions}).encode(), ids

    def _rate_limited(self) -> int | None:
        with self._lock:
            limit = self.rate_limit
            now = time.monotonic()
            if limit is None:
                self._recent.append(now)
                return None
            while self._recent and now - self._recent[0] >= limit["windowSeconds"]:
                self._recent.popleft()
            if len(self._recent) >= limit["requests"]:
                return limit["retryAfter"]
            self._recent.append(now)
            return None


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list | tuple | set) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings")
    return list(value)


def _ids_for_log(raw: bytes) -> list[str]:
    try:
        body = json.loads(raw)
        return [a["accountId"] for a in body["accounts"] if isinstance(a.get("accountId"), str)]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


def _validate(headers: Mapping[str, str], raw: bytes) -> list[tuple[str, datetime]]:
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise _BadRequest("InvalidContentType", "Content-Type must be application/json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _BadRequest("InvalidJson", "request body is not JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest("InvalidRequest", "request body must be an object")
    extra = set(body) - {"accounts"}
    if extra:
        raise _BadRequest("InvalidRequest", f"unexpected fields: {sorted(extra)}")
    accounts = body.get("accounts")
    if not isinstance(accounts, list) or not accounts:
        raise _BadRequest("InvalidRequest", "accounts must be a non-empty list")
    if len(accounts) > MAX_ACCOUNTS:
        raise _BadRequest("TooManyAccounts", f"at most {MAX_ACCOUNTS} accounts per request")
    parsed = []
    for index, account in enumerate(accounts):
        if not isinstance(account, dict) or set(account) != {"accountId", "updatedAt"}:
            raise _BadRequest(
                "InvalidAccount", f"accounts[{index}] must have exactly accountId and updatedAt"
            )
        account_id = account["accountId"]
        if (
            not isinstance(account_id, str)
            or account_id == "unknown"
            or not _ACCOUNT_ID.fullmatch(account_id)
        ):
            raise _BadRequest("InvalidAccountId", f"accounts[{index}].accountId is not a valid account id")
        when = _parse_time(account["updatedAt"])
        if when is None:
            raise _BadRequest("InvalidTimestamp", f"accounts[{index}].updatedAt is not RFC 3339")
        parsed.append((account_id, when))
    return parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local Atlassian personal data reporting API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", action="append", dest="tokens", help="accepted Bearer token (repeatable)")
    parser.add_argument("--closed", action="append", default=[], help="account id answered closed")
    parser.add_argument("--updated", action="append", default=[], help="account id answered updated")
    parser.add_argument("--cycle-period", default=None, help="Cycle-Period header value to send")
    args = parser.parse_args(argv)
    emulator = AtlassianEmulator(
        args.host,
        args.port,
        tokens=args.tokens or (DEFAULT_TOKEN,),
        closed=args.closed,
        updated=args.updated,
        cycle_period=args.cycle_period,
    ).start()
    print(json.dumps({"url": emulator.url}), flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
