"""ConsentHub's REST client (spec/consent.md): `consent-hub/consent` and `consent-hub/consent-config/get`.

HTTP Basic with `email:API token` from the ConsentHubApiSecret. Failures are classified so the push
function can decide: a 4xx other than 429 will not get better by retrying (PushRejected), anything
else may (PushUnavailable). Exceptions carry a status or a fixed word, never a body or an email.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CONSENT_PATH = "/consent-hub/consent"
CONFIG_PATH = "/consent-hub/consent-config/get"
MAX_RETRY_AFTER_SECONDS = 12 * 3600


class PushError(Exception):
    """`reason` is `http_<status>`, `timeout`, `connection` or `bad_response`: safe to log."""

    def __init__(self, reason: str, status: int | None = None, retry_after: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class PushRejected(PushError):
    """ConsentHub refused the request itself (4xx other than 429): retrying sends the same refusal."""


class PushUnavailable(PushError):
    """429, 5xx, a timeout or a broken connection: worth retrying later."""


@dataclass(frozen=True)
class Credentials:
    email: str
    api_token: str

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any]) -> Credentials:
        email, token = secret.get("email"), secret.get("apiToken")
        if not isinstance(email, str) or not email or not isinstance(token, str) or not token:
            # A deployment that has not filled the secret in yet: a configuration error, not data.
            raise ValueError("ConsentHub API secret needs non-empty email and apiToken")
        return cls(email, token)

    def __repr__(self) -> str:  # never print the token
        return "Credentials(***)"


def _retry_after(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return min(int(value.strip()), MAX_RETRY_AFTER_SECONDS)


@dataclass
class ConsentHubClient:
    base_url: str
    credentials: Credentials
    session: Any = None
    timeout: float | tuple[float, float] = (5.0, 10.0)
    _requests: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        import requests  # lazily: importing the domain stays cheap at cold start

        self._requests = requests
        self.base_url = self.base_url.rstrip("/")
        if self.session is None:
            self.session = requests.Session()

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        requests = self._requests
        try:
            return self.session.post(
                self.base_url + path,
                data=json.dumps(body, separators=(",", ":")).encode(),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                auth=(self.credentials.email, self.credentials.api_token),
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise PushUnavailable("timeout") from None
        except requests.RequestException:
            raise PushUnavailable("connection") from None

    @staticmethod
    def _raise_for(response: Any) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            raise PushUnavailable(f"http_{status}", status, _retry_after(response.headers.get("Retry-After")))
        raise PushRejected(f"http_{status}", status)

    def push(
        self,
        email: str,
        locale: str,
        consents: Sequence[Mapping[str, Any]],
        form_url: str | None = None,
        provider_id: str | None = None,
    ) -> int:
        """Sends one person's consent; returns 202 (accepted, applied asynchronously) or raises."""
        body: dict[str, Any] = {
            "email": email,
            "locale": locale,
            "consents": [
                {k: c[k] for k in ("key", "granted", "displayedText") if c.get(k) is not None} for c in consents
            ],
        }
        if form_url:
            body["formUrl"] = form_url
        if provider_id:
            body["providerId"] = provider_id
        response = self._post(CONSENT_PATH, body)
        if response.status_code == 202:
            return 202
        if 200 <= response.status_code < 300:
            # The contract says 202; another 2xx is not proof of acceptance, so try again later.
            raise PushUnavailable("bad_response", response.status_code)
        self._raise_for(response)
        raise AssertionError("unreachable")  # _raise_for always raises

    def config_get(self, email: str | None = None, user_ip: str | None = None) -> dict[str, Any]:
        """The locale and the user's choice as ConsentHub knows them, by email and/or IP address."""
        if not email and not user_ip:
            raise ValueError("consent-config/get needs an email or a user IP")
        body = {k: v for k, v in (("email", email), ("userIp", user_ip)) if v}
        response = self._post(CONFIG_PATH, body)
        if response.status_code != 200:
            self._raise_for(response)
        try:
            answer = response.json()
        except ValueError:
            raise PushUnavailable("bad_response", 200) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("locale"), str):
            raise PushUnavailable("bad_response", 200)
        return answer
