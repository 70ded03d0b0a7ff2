"""boto3 clients created once per process, with retries suited to Lambda."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def client(service: str):
    # boto3 is imported on first use so that domain modules holding a `lazy_client` stay boto3-free
    # at import (see gdpr_core/__init__.py).
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=20)
    return boto3.session.Session().client(service, config=config)


def reset() -> None:
    """Forget cached clients (tests switch endpoints between moto instances)."""
    client.cache_clear()


def lazy_client(service: str) -> property:
    """A read-only `client` property: the client injected as `self._client`, else the shared one.

    The shared client is made on first use, not in the constructor, so building an adapter stays
    free of boto3 and tests can inject their own client.
    """

    def get(self: Any) -> Any:
        if self._client is None:
            self._client = client(service)
        return self._client

    return property(get)
