"""Settings from the environment that CloudFormation resolved for each function.

Read at call time (not import time) so one process can host several functions, as the sandbox does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class ConfigurationError(RuntimeError):
    pass


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, default)
    if value is None or value == "":
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


@dataclass(frozen=True)
class Settings:
    env: Mapping[str, str]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return cls(dict(os.environ if env is None else env))

    # Tables and queues
    @property
    def registry_table(self) -> str:
        return _get(self.env, "REGISTRY_TABLE")

    @property
    def consent_table(self) -> str:
        return _get(self.env, "CONSENT_TABLE")

    @property
    def audit_table(self) -> str:
        return _get(self.env, "AUDIT_TABLE")

    @property
    def state_table(self) -> str:
        return _get(self.env, "STATE_TABLE")

    @property
    def idempotency_table(self) -> str:
        return _get(self.env, "IDEMPOTENCY_TABLE")

    @property
    def actions_queue_url(self) -> str:
        return _get(self.env, "ACTIONS_QUEUE_URL")

    # Secrets
    @property
    def pseudonym_key_secret_arn(self) -> str:
        return _get(self.env, "PSEUDONYM_KEY_SECRET_ARN")

    @property
    def atlassian_credentials_secret_arn(self) -> str:
        return _get(self.env, "ATLASSIAN_CREDENTIALS_SECRET_ARN")

    @property
    def signing_secret_arn(self) -> str:
        return _get(self.env, "CONSENTHUB_SIGNING_SECRET_ARN")

    # External services and policy
    @property
    def atlassian_api_url(self) -> str:
        return _get(self.env, "ATLASSIAN_API_URL", "https://api.atlassian.com").rstrip("/")

    @property
    def consenthub_api_url(self) -> str:
        return _get(self.env, "CONSENTHUB_API_URL", "https://api.atlassian.com").rstrip("/")

    @property
    def default_cycle_days(self) -> int:
        raw = _get(self.env, "DEFAULT_CYCLE_DAYS", "7")
        try:
            days = int(raw)
        except ValueError:
            raise ConfigurationError("DEFAULT_CYCLE_DAYS must be a whole number of days") from None
        if days < 1:
            raise ConfigurationError("DEFAULT_CYCLE_DAYS must be at least 1")
        return days

    def optional(self, name: str) -> str | None:
        return self.env.get(name) or None
