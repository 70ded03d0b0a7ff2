"""boto3 clients created once per process, with retries suited to Lambda."""

from __future__ import annotations

import functools

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=20)


@functools.cache
def client(service: str):
    return boto3.session.Session().client(service, config=_CONFIG)


def reset() -> None:
    """Forget cached clients (tests switch endpoints between moto instances)."""
    client.cache_clear()
