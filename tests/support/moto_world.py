"""The pieces of a moto "world" the handler tests share: fake credentials, moto with the cached clients
emptied, a manual clock, a function's handler loaded from its file, its Powertools log redirected, and
the parts of Lambda's context object the handlers read.

moto is imported here, at the top: it must patch botocore before any boto3 client is created, and
the test modules import this module before they create one.
"""

from __future__ import annotations

import importlib.util
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

from moto import mock_aws

from gdpr_core import clock
from gdpr_core.adapters import aws
from gdpr_sandbox import moto_patches

if TYPE_CHECKING:
    import pytest

ACCOUNT_ID = "123456789012"
moto_patches.apply()  # as the sandbox does: moto's listings otherwise copy (and keep) the whole bucket


def fake_aws_env(monkeypatch: pytest.MonkeyPatch, region: str) -> None:
    """Credentials moto accepts, a region, and no endpoint override or profile from the caller's shell."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_DEFAULT_REGION", region),
        ("AWS_REGION", region),
    ):
        monkeypatch.setenv(name, value)


@contextmanager
def mocked_aws() -> Iterator[None]:
    """moto for every client created inside, with the caches emptied on the way in and out: the clients
    gdpr_core.adapters.aws (and pynamodb through it) keeps, and Powertools' parameter and secret cache."""
    from aws_lambda_powertools.utilities import parameters

    with mock_aws():
        aws.reset()
        parameters.clear_caches()
        try:
            yield
        finally:
            aws.reset()
            parameters.clear_caches()


@contextmanager
def manual_clock(now: datetime) -> Iterator[clock.ManualClock]:
    """The product's clock stands at `now` (the test moves it); the system clock again afterwards."""
    manual = clock.ManualClock(now)
    clock.install(manual)
    try:
        yield manual
    finally:
        clock.install(clock.SystemClock())


def load_handler(path: Path, name: str | None = None) -> ModuleType:
    """A function's app.py loaded by path, as the Lambda runtime (and the sandbox) does, under the
    environment set now; by default under a new name each time, so each world gets a fresh module."""
    spec = importlib.util.spec_from_file_location(name or f"{path.parent.name}_app_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def redirect_logs(logger: Any, stream: IO[str], restore: IO[str] | None = None) -> Iterator[IO[str]]:
    """Points the stream handlers of a Powertools logger (found by its service) at `stream`.

    Powertools loggers outlive the module that made them and keep their handlers' streams, so the
    handlers are put back afterwards: at the streams they had, or at `restore` when given (the stream
    they had may be a capture pytest has closed since)."""
    handlers = [h for h in logging.getLogger(logger.service).handlers if isinstance(h, logging.StreamHandler)]
    saved = [h.setStream(stream) for h in handlers]
    try:
        yield stream
    finally:
        for handler, previous in zip(handlers, saved, strict=True):
            handler.setStream(restore if restore is not None else previous)


class LambdaContext:
    """The parts of Lambda's context object the handlers read. Subclass it with a function's values
    (class attributes), or give them as keywords."""

    function_name = "test-function"
    function_version = "$LATEST"
    region = "us-east-1"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    remaining_ms = 120_000

    def __init__(self, **attributes: Any):
        for name, value in attributes.items():
            setattr(self, name, value)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
