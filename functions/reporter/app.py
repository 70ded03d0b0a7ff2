"""Reporter: one tick of Atlassian personal data reporting (see gdpr_core.reporting.run)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from gdpr_core import clock, secrets
from gdpr_core.config import Settings
from gdpr_core.registry import Registry
from gdpr_core.reporting.contract import ReportClient
from gdpr_core.reporting.run import DynamoStateStore, ReportingRun, SqsActionSender

logger = Logger()
metrics = Metrics()
tracer = Tracer()

# Stop starting requests this long before Lambda's deadline, to leave time for the last checkpoint.
SAFETY_MARGIN_SECONDS = 20.0


def _tick_time(event: Any) -> datetime | None:
    """The injected "now" (operators, the sandbox), or None for real time; ValueError on other shapes."""
    if isinstance(event, dict) and event.get("source") == "gdpr.scheduler" and event.get("action") == "tick":
        return clock.parse_rfc3339(event["now"]) if event.get("now") is not None else None
    if (
        isinstance(event, dict)
        and event.get("source") == "aws.events"
        and event.get("detail-type") == "Scheduled Event"
    ):
        return None
    raise ValueError(
        'unsupported event: expected a scheduled event or {"source": "gdpr.scheduler", "action": "tick"}'
    )


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: Any) -> dict:
    injected = _tick_time(event)
    # An injected "now" holds for the whole tick, so the operator's or sandbox's time is exactly what counts.
    now = clock.now if injected is None else (lambda: injected)
    settings = Settings.from_env()
    credentials = secrets.get_secret_json(settings.atlassian_credentials_secret_arn).get("credentials") or []
    summary = ReportingRun(
        registry=Registry(
            settings.registry_table, secrets.load_pseudonymizer(settings.pseudonym_key_secret_arn)
        ),
        state_store=DynamoStateStore(settings.state_table),
        sender=SqsActionSender(settings.actions_queue_url),
        client=ReportClient(settings.atlassian_api_url),
        credentials=credentials,
        now=now,
        sleep=time.sleep,
        remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000 - SAFETY_MARGIN_SECONDS,
        default_cycle_length=timedelta(days=settings.default_cycle_days),
        log=logger,
    ).run()
    for name, key in (
        ("AccountsReported", "accountsReported"),
        ("ReportRequests", "requests"),
        ("AccountsClosed", "closed"),
        ("AccountsUpdated", "updated"),
        ("RateLimited", "rateLimited"),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=summary[key])
    return summary
