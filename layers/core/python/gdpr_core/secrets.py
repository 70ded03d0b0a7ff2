"""Secrets from Secrets Manager, cached by Powertools Parameters (max_age) across invocations."""

from __future__ import annotations

import json
from typing import Any

from .pseudonym import Pseudonymizer

SECRET_MAX_AGE_SECONDS = 300


def get_secret_text(arn: str, force_fetch: bool = False) -> str:
    # Imported here: keeps Powertools' boto3 session off the import path of pure-domain callers.
    from aws_lambda_powertools.utilities import parameters

    # force_fetch re-reads now (and refreshes the cache), e.g. after a rotation made the cache stale.
    value = parameters.get_secret(arn, max_age=SECRET_MAX_AGE_SECONDS, force_fetch=force_fetch)
    if isinstance(value, bytes):
        value = value.decode()
    return value


def get_secret_json(arn: str, force_fetch: bool = False) -> dict[str, Any]:
    try:
        value = json.loads(get_secret_text(arn, force_fetch))
    except json.JSONDecodeError:
        raise ValueError("secret is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError("secret JSON must be an object")
    return value


def load_pseudonymizer(arn: str) -> Pseudonymizer:
    return Pseudonymizer(get_secret_text(arn))
